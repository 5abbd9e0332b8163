"""w2v.knn: exact cosine top-k kernels against a float64 NumPy reference and gensim."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from w2v import knn
from w2v import knn_int8

ATOL = 2e-6  # cosines are in [-1, 1]: float32 dots of <= 16 terms stay far inside this


# ---------------------------------------------------------------------------------------------
# reference and checks
# ---------------------------------------------------------------------------------------------

def ref_scores(vectors, query):
    """float64 cosines; zero rows / zero query score 0."""
    v = np.asarray(vectors, np.float64)
    q = np.asarray(query, np.float64)
    n = np.linalg.norm(v, axis=1)
    qn = np.linalg.norm(q)
    dots = v @ q
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(n > 0, dots / np.where(n > 0, n, 1.0), 0.0)
    return s / qn if qn > 0 else np.zeros_like(s)


def check_topk(scores, rows, ref, eligible, k, vectors=None):
    """Tie-aware comparison of a top-k result with the float64 reference scores ``ref``.

    eligible: bool mask of rows that may be returned. Checks length, uniqueness, eligibility,
    scores, the total order on the returned values, and set membership up to ties (rows clearly
    better than the k-th reference score must be present; none clearly worse may be). With
    ``vectors``: of two identical eligible rows, the smaller one is preferred (exact tie order).
    """
    kk = min(k, int(eligible.sum()))
    assert scores.dtype == np.float32 and rows.dtype == np.int64
    assert rows.shape == (kk,) and scores.shape == (kk,)
    assert len(set(rows.tolist())) == kk
    assert eligible[rows].all()
    np.testing.assert_allclose(scores, ref[rows], atol=ATOL, rtol=0)
    for t in range(kk - 1):  # total order on what was returned
        assert scores[t] > scores[t + 1] or (scores[t] == scores[t + 1] and rows[t] < rows[t + 1])
    if kk == 0:
        return
    tau = np.sort(ref[eligible])[::-1][kk - 1]
    must = np.flatnonzero(eligible & (ref > tau + 2 * ATOL))
    assert set(must.tolist()) <= set(rows.tolist())
    assert (ref[rows] >= tau - 2 * ATOL).all()
    if vectors is not None:
        chosen = set(rows.tolist())
        for r in rows:
            same = np.flatnonzero(eligible & (vectors == vectors[r]).all(axis=1))
            smaller = same[same < r]
            assert set(smaller.tolist()) <= chosen, (r, smaller)


@st.composite
def matrices(draw, max_rows=40, max_dim=8):
    V = draw(st.integers(1, max_rows))
    D = draw(st.integers(1, max_dim))
    kind = draw(st.sampled_from(["int", "float"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "int":  # small integers: exact ties, zero rows, parallel rows
        v = rng.integers(-2, 3, size=(V, D)).astype(np.float32)
    else:
        v = rng.standard_normal((V, D)).astype(np.float32)
    n_zero = draw(st.integers(0, max(0, V // 4)))
    v[rng.choice(V, n_zero, replace=False)] = 0.0
    n_dup = draw(st.integers(0, V // 3))
    for _ in range(n_dup):
        a, b = rng.integers(0, V, 2)
        v[b] = v[a]
    return v, rng


# ---------------------------------------------------------------------------------------------
# norms, heap
# ---------------------------------------------------------------------------------------------

def test_inverse_norms_and_normalize_zero_rows():
    v = np.array([[3, 4], [0, 0], [1e-20, 0], [-2, 0]], np.float32)
    inv = knn.inverse_norms(v)
    assert inv.dtype == np.float32
    np.testing.assert_allclose(inv, [0.2, 0.0, 1e20, 0.5], rtol=1e-6)
    u = knn.normalize_rows(v)
    assert u.flags.c_contiguous and u.dtype == np.float32
    assert not np.isnan(u).any()
    np.testing.assert_allclose(u, [[0.6, 0.8], [0, 0], [1, 0], [-1, 0]], rtol=1e-6)
    assert knn.inverse_norms(np.zeros((0, 3), np.float32)).shape == (0,)


def test_inverse_norms_float64_accumulation():
    # 1e20^2 overflows float32; the float64 accumulator does not
    v = np.array([[1e20, 1e20]], np.float32)
    np.testing.assert_allclose(knn.inverse_norms(v), [1 / (np.sqrt(2) * 1e20)], rtol=1e-6)


@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 20)), min_size=1, max_size=40),
       st.integers(1, 8))
@settings(max_examples=60, deadline=None)
def test_heap_keeps_best_in_total_order(entries, K):
    hs = np.full(K, -np.inf, np.float32)
    hid = np.full(K, -1, np.int64)
    size = 0
    for s, i in entries:
        s = np.float32(s)
        if size < K:
            size = knn.heap_push(hs, hid, size, s, i)
        elif s > hs[0] or (s == hs[0] and i < hid[0]):
            knn.heap_replace_root(hs, hid, s, i)
    knn.heap_sort(hs, hid, size)
    expected = sorted(entries, key=lambda e: (-e[0], e[1]))[:K]
    assert list(zip(hs[:size].tolist(), hid[:size].tolist())) == [(float(s), i) for s, i in expected]


# ---------------------------------------------------------------------------------------------
# single query
# ---------------------------------------------------------------------------------------------

@given(matrices(), st.integers(0, 45), st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_topk_matches_reference(mat, k, data):
    v, rng = mat
    V, D = v.shape
    inv = knn.inverse_norms(v)
    if data.draw(st.booleans()):
        q = v[rng.integers(0, V)].copy()  # a row: exact self-similarity ties with duplicates
    else:
        q = rng.integers(-2, 3, size=D).astype(np.float32)
    ex = rng.choice(V, rng.integers(0, V + 1), replace=True) if data.draw(st.booleans()) else None
    scores, rows = knn.topk(v, inv, q, k, exclude=ex)
    eligible = np.ones(V, bool)
    if ex is not None:
        eligible[ex] = False
    check_topk(scores, rows, ref_scores(v, q), eligible, k, vectors=v)


def test_topk_degenerate_cases():
    v = np.array([[1, 0], [0, 0], [1, 0], [0, 1]], np.float32)
    inv = knn.inverse_norms(v)
    s, r = knn.topk(v, inv, np.array([1, 0], np.float32), 10)
    assert r.tolist() == [0, 2, 1, 3] and s.tolist() == [1, 1, 0, 0]
    s, r = knn.topk(v, inv, np.zeros(2, np.float32), 3)  # zero query: all 0, row order
    assert r.tolist() == [0, 1, 2] and s.tolist() == [0, 0, 0] and not np.isnan(s).any()
    s, r = knn.topk(v, inv, np.array([1, 0], np.float32), 0)
    assert r.shape == (0,) and s.shape == (0,)
    s, r = knn.topk(v, inv, np.array([1, 0], np.float32), 3, exclude=np.array([0, 1, 2, 3]))
    assert r.shape == (0,)
    s, r = knn.topk(v[:1], inv[:1], np.array([0, 5], np.float32), 4)  # V = 1
    assert r.tolist() == [0] and s.tolist() == [0]
    with pytest.raises(ValueError, match="exclude"):
        knn.topk(v, inv, np.array([1, 0], np.float32), 2, exclude=[4])
    with pytest.raises(ValueError, match="query"):
        knn.topk(v, inv, np.zeros(3, np.float32), 2)
    with pytest.raises(ValueError, match="k"):
        knn.topk(v, inv, np.zeros(2, np.float32), -1)


def test_zero_dimensional_vectors_score_zero():
    v = np.zeros((6, 0), np.float32)
    inv = knn.inverse_norms(v)
    s, r = knn.topk(v, inv, np.zeros(0, np.float32), 3, exclude=[1])
    assert r.tolist() == [0, 2, 3] and s.tolist() == [0, 0, 0]
    nb, sc = knn.build_neighbor_table(v, 2, q_block=4, i_block=3)
    assert nb[:3].tolist() == [[1, 2], [0, 2], [0, 1]] and (sc == 0).all()
    s, r = knn.topk_batch(np.zeros((0, 3), np.float32), np.zeros(0, np.float32), np.ones((2, 3), np.float32), 2)
    assert r.tolist() == [[-1, -1], [-1, -1]] and np.isneginf(s).all()  # V = 0


def test_topk_reads_memmap_without_copy(tmp_path):
    rng = np.random.default_rng(3)
    v = rng.standard_normal((500, 12)).astype(np.float32)
    np.save(tmp_path / "v.npy", v)
    mm = np.load(tmp_path / "v.npy", mmap_mode="r", allow_pickle=False)
    inv = knn.inverse_norms(mm)
    s1, r1 = knn.topk(mm, inv, v[7], 9)
    s2, r2 = knn.topk(v, inv, v[7], 9)
    assert r1.tolist() == r2.tolist() and s1.tolist() == s2.tolist()
    assert knn._as_matrix(mm).base is not None  # a view of the map, not a copy
    assert np.shares_memory(knn._as_matrix(mm), mm)


@pytest.mark.parametrize("n_threads", [2, 3, 7])
def test_topk_threads_equal_single_thread(monkeypatch, n_threads):
    monkeypatch.setattr(knn, "MIN_ROWS_PER_THREAD", 1)
    rng = np.random.default_rng(n_threads)
    v = rng.integers(-1, 2, size=(301, 5)).astype(np.float32)  # many exact ties across ranges
    inv = knn.inverse_norms(v)
    for qi in range(0, 301, 50):
        ex = rng.choice(301, 7)
        s1, r1 = knn.topk(v, inv, v[qi], 25, exclude=ex, n_threads=1)
        s2, r2 = knn.topk(v, inv, v[qi], 25, exclude=ex, n_threads=n_threads)
        assert r1.tolist() == r2.tolist() and s1.tolist() == s2.tolist()


def test_concurrent_callers_get_their_own_results():
    rng = np.random.default_rng(5)
    v = rng.standard_normal((2000, 16)).astype(np.float32)
    inv = knn.inverse_norms(v)
    expected = {q: knn.topk(v, inv, v[q], 10)[1].tolist() for q in range(16)}
    got, errors = {}, []

    def call(q):
        try:
            got[q] = knn.topk(v, inv, v[q], 10, n_threads=2)[1].tolist()
        except Exception as exc:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(q,)) for q in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == expected


# ---------------------------------------------------------------------------------------------
# batches, tiles, table
# ---------------------------------------------------------------------------------------------

@given(matrices(max_rows=30), st.integers(0, 34), st.booleans())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_topk_batch_matches_reference(mat, k, self_ex):
    v, rng = mat
    V, D = v.shape
    inv = knn.inverse_norms(v)
    Q = int(rng.integers(0, 9))
    qrows = rng.integers(0, V, Q)
    queries = v[qrows]
    skip = qrows.astype(np.int64) if self_ex else None
    s, r = knn.topk_batch(v, inv, queries, k, exclude_self=skip, q_block=3, i_block=5, n_threads=2)
    assert s.shape == (Q, k) and r.shape == (Q, k)
    for q in range(Q):
        eligible = np.ones(V, bool)
        if self_ex:
            eligible[qrows[q]] = False
        kk = min(k, int(eligible.sum()))
        assert (r[q, kk:] == -1).all() and np.isneginf(s[q, kk:]).all()
        check_topk(s[q, :kk], r[q, :kk], ref_scores(v, queries[q]), eligible, k, vectors=v)


@pytest.mark.parametrize("D", [1, 7, 64])
def test_tiny_tiles_equal_large_tiles(D):
    rng = np.random.default_rng(D)
    v = rng.standard_normal((53, D)).astype(np.float32)
    v[::5] = np.round(v[::5])  # some exact ties
    v[10] = 0
    v[11] = v[12]
    inv = knn.inverse_norms(v)
    queries = np.concatenate([v[:9], np.zeros((1, D), np.float32)])
    ref_s, ref_r = knn.topk_batch(v, inv, queries, 12, q_block=64, i_block=4096, n_threads=1)
    for qb in (1, 2, 3):
        for ib in range(1, 8):
            s, r = knn.topk_batch(v, inv, queries, 12, q_block=qb, i_block=ib, n_threads=1)
            assert r.tolist() == ref_r.tolist(), (qb, ib)
            assert s.tolist() == ref_s.tolist(), (qb, ib)


def test_batch_threads_equal_single_thread_and_progress():
    rng = np.random.default_rng(11)
    v = rng.integers(-2, 3, size=(400, 6)).astype(np.float32)
    inv = knn.inverse_norms(v)
    skip = np.arange(400)
    s1, r1 = knn.topk_batch(v, inv, v, 15, exclude_self=skip, q_block=8, i_block=64, n_threads=1)
    calls = []
    s3, r3 = knn.topk_batch(v, inv, v, 15, exclude_self=skip, q_block=8, i_block=64, n_threads=3,
                            progress=lambda d, t: calls.append((d, t)))
    assert r1.tolist() == r3.tolist() and s1.tolist() == s3.tolist()
    assert calls and calls[-1] == (400, 400) and all(t == 400 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_neighbor_table_equals_exact_kernel_row_by_row():
    rng = np.random.default_rng(2)
    v = rng.standard_normal((120, 10)).astype(np.float32)
    v[3] = 0
    v[5] = v[6]
    v[7] = 2 * v[8]  # parallel rows: an exact cosine tie
    inv = knn.inverse_norms(v)
    nb, sc = knn.build_neighbor_table(v, 8, q_block=5, i_block=17, n_threads=2)
    assert nb.dtype == np.int32 and sc.dtype == np.float32 and nb.shape == (120, 8)
    for i in range(120):
        s, r = knn.topk(v, inv, v[i], 8, exclude=[i])
        eligible = np.ones(120, bool)
        eligible[i] = False
        check_topk(sc[i], nb[i].astype(np.int64), ref_scores(v, v[i]), eligible, 8)
        np.testing.assert_allclose(sc[i], s, atol=ATOL, rtol=0)
    assert 5 not in nb[5] and 6 in nb[5][:1]
    sub_nb, sub_sc = knn.build_neighbor_table(v, 8, rows=np.array([7, 0]), q_block=2, i_block=3)
    assert sub_nb.tolist() == nb[[7, 0]].tolist() and sub_sc.tolist() == sc[[7, 0]].tolist()


def test_neighbor_table_padding_when_k_exceeds_rows():
    v = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    nb, sc = knn.build_neighbor_table(v, 4)
    assert nb.tolist() == [[2, 1, -1, -1], [2, 0, -1, -1], [0, 1, -1, -1]]
    assert np.isneginf(sc[:, 2:]).all()
    nb, sc = knn.build_neighbor_table(v[:1], 2)  # V = 1: nothing but padding
    assert nb.tolist() == [[-1, -1]]
    nb, sc = knn.build_neighbor_table(v, 0)
    assert nb.shape == (3, 0)


def test_batch_argument_errors():
    v = np.ones((4, 2), np.float32)
    inv = knn.inverse_norms(v)
    with pytest.raises(ValueError, match="queries"):
        knn.topk_batch(v, inv, np.ones((2, 3), np.float32), 2)
    with pytest.raises(ValueError, match="exclude_self"):
        knn.topk_batch(v, inv, v, 2, exclude_self=np.array([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="q_block"):
        knn.topk_batch(v, inv, v, 2, q_block=0)
    with pytest.raises(ValueError, match="inv_norms"):
        knn.topk_batch(v, inv[:3], v, 2)


# ---------------------------------------------------------------------------------------------
# session vector, reduced precision
# ---------------------------------------------------------------------------------------------

@njit(cache=False)
def _tile(qt, vp, out, thr, with_hits):
    if with_hits:
        return knn._outer4x16_hits(qt, 0, vp, 0, out, thr)
    knn._outer4x16(qt, 0, vp, 0, out)
    return -1


@settings(max_examples=60, deadline=None)
@given(D=st.integers(0, 70), seed=st.integers(0, 2**32 - 1),
       special=st.lists(st.sampled_from([0, 1, 2, 3, 4]), min_size=4, max_size=4))
def test_outer4x16_hits_flags_exactly_the_rows_with_a_lane_at_or_over_the_threshold(D, seed, special):
    """The pre-test micro-kernel: the same 64 values as _outer4x16 (bit for bit, each the float32
    fused multiply-add chain over d in order), and bit r of its mask set iff some lane of row r
    is >= thr[r] (ordered: +inf never, -inf always for finite values, NaN never)."""
    rng = np.random.default_rng(seed)
    qt = rng.integers(-3, 4, (4, D)).astype(np.float32) / 4   # small values: exact ties occur
    vp = rng.integers(-3, 4, (1, D, 16)).astype(np.float32) / 4
    plain = np.zeros((4, 16), np.float32)
    _tile(qt, vp, plain, np.zeros(4, np.float32), False)
    ref = np.zeros((4, 16), np.float32)
    for d in range(D):   # exact: products and partial sums of quarters are float32-exact here
        ref += qt[:, d:d + 1] * vp[0, d][None, :]
    np.testing.assert_array_equal(plain, ref)
    thr = np.empty(4, np.float32)
    for r, kind in enumerate(special):
        lane = rng.integers(0, 16)
        thr[r] = [ref[r, lane], np.nextafter(ref[r].max(), np.float32(np.inf)), np.inf, -np.inf,
                  np.nan][kind]
    out = np.zeros((4, 16), np.float32)
    mask = _tile(qt, vp, out, thr, True)
    np.testing.assert_array_equal(out, plain)
    want = sum(1 << r for r in range(4) if (ref[r] >= thr[r]).any())
    assert mask == want
    assert [(mask >> r) & 1 for r in range(4)] == [int(k in (0, 3)) for k in special]


def test_session_vector_is_weighted_sum_of_unit_vectors():
    v = np.array([[3, 4], [0, 0], [0, 2]], np.float32)
    inv = knn.inverse_norms(v)
    out = knn.session_vector(v, inv, np.array([0, 1, 2, 2]), np.array([1.0, 5.0, 0.5, 0.5]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.6, 1.8], rtol=1e-6)
    assert knn.session_vector(v, inv, np.array([], np.int64), np.array([])).tolist() == [0, 0]
    with pytest.raises(ValueError, match="row 3"):
        knn.session_vector(v, inv, np.array([3]), np.array([1.0]))


def test_reduced_precision_reranks_exactly():
    rng = np.random.default_rng(9)
    v = rng.standard_normal((3000, 24)).astype(np.float32)
    v[0] = 0
    inv = knn.inverse_norms(v)
    codes, scales = knn_int8.quantize_rows(v, inv)
    assert codes.dtype == np.int8 and np.abs(codes).max() == 127 and scales[0] == 0
    unit = knn.normalize_rows(v)
    assert np.abs(codes * scales[:, None] - unit).max() <= scales.max() / 2 + 1e-7
    hits = 0
    for qi in range(1, 40):
        es, er = knn.topk(v, inv, v[qi], 10, exclude=[qi])
        rs, rr = knn_int8.topk_reduced(v, inv, codes, scales, v[qi], 10, exclude=[qi], rerank=50)
        assert rr.shape == (10,) and qi not in rr
        # re-ranked scores are the exact kernel's scores for those rows (bit-identical)
        full_s, full_r = knn.topk(v, inv, v[qi], 3000)
        exact_of = dict(zip(full_r.tolist(), full_s.tolist()))
        assert rs.tolist() == [exact_of[r] for r in rr.tolist()]
        hits += len(set(rr.tolist()) & set(er.tolist()))
    assert hits / (39 * 10) > 0.97
