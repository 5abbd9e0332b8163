"""eval.covisit kernels (radix sort, linear merge, top-N) against NumPy, and build_covisit's
independence of threads and chunking on a generated dataset, against a brute-force reference."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from eval import covisit as C
from eval.covisit import KEY_SHIFT, build_covisit
from test_eval_recommenders import H, ds_from, reference_covisit


def pair_keys(rng, n, A):
    return rng.integers(0, A, n).astype(np.int64) * KEY_SHIFT + rng.integers(0, A, n)


def check_radix(keys, ws, A):
    nbits = (A - 1).bit_length()
    order = np.argsort(keys, kind="stable")
    sk, sw = C._radix_sort_kernel(keys.copy(), ws.copy(), nbits)
    np.testing.assert_array_equal(sk, keys[order])
    np.testing.assert_array_equal(sw, ws[order])   # stable: equal keys keep their input order


@pytest.mark.parametrize("A", [1, 2, 3, 2047, 2048, 2049, 1_814_050, 1 << 31])
def test_radix_sort_is_a_stable_sort(A):
    rng = np.random.default_rng(A)
    for n in (0, 1, 2, 1000, 30_000):
        keys = pair_keys(rng, n, A)
        check_radix(keys, np.arange(n, dtype=np.float32), A)
    # few distinct keys (long runs of equal keys), all keys equal, the largest aid in both halves
    check_radix(pair_keys(rng, 5000, min(A, 3)), rng.random(5000).astype(np.float32), A)
    check_radix(np.full(100, pair_keys(rng, 1, A)[0]), np.arange(100, dtype=np.float32), A)
    top = np.int64(A - 1) * KEY_SHIFT + (A - 1)
    check_radix(np.array([top, 0, top, A - 1, (A - 1) * KEY_SHIFT], np.int64), np.arange(5, dtype=np.float32), A)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 300), st.integers(0, 2**32 - 1))
def test_radix_sort_property(A, n, seed):
    rng = np.random.default_rng(seed)
    check_radix(pair_keys(rng, n, A), rng.random(n).astype(np.float32), A)


def resort_reference(runs):
    """What the merge replaces: sort the concatenation (stable) and sum equal keys in float64."""
    k = np.concatenate([r[0] for r in runs])
    w = np.concatenate([r[1] for r in runs])
    o = np.argsort(k, kind="stable")
    return C._sum_sorted_kernel(k[o], w[o])


run_st = st.lists(st.tuples(st.integers(0, 60), st.floats(0, 1e6, width=32)), max_size=40)


def as_run(pairs):
    d = dict(pairs)  # unique keys
    k = np.array(sorted(d), np.int64)
    return k, np.array([d[x] for x in k.tolist()], np.float32)


@settings(max_examples=150, deadline=None)
@given(run_st, run_st)
def test_merge_equals_resort_and_sum(a, b):
    a, b = as_run(a), as_run(b)
    k, w = C._merge(a, b)
    rk, rw = resort_reference([a, b])
    assert k.dtype == np.int64 and w.dtype == np.float32
    np.testing.assert_array_equal(k, rk)
    np.testing.assert_array_equal(w, rw)   # two addends: float32(float64 + float64) either way
    k64, w64 = C._merge(a, b, np.float64)
    np.testing.assert_array_equal(k64, rk)
    exp = {}
    for kk, ww in zip(np.concatenate([a[0], b[0]]).tolist(), np.concatenate([a[1], b[1]]).astype(np.float64).tolist()):
        exp[kk] = exp.get(kk, 0.0) + ww
    assert w64.dtype == np.float64 and w64.tolist() == [exp[x] for x in k64.tolist()]


def topn_reference(keys, ws, top_n):
    rows, counts, nbr, w, dropped = [], [], [], [], 0
    x = keys // KEY_SHIFT
    for r in np.unique(x):
        sel = np.flatnonzero(x == r)
        o = sel[np.argsort(-ws[sel], kind="mergesort")][:top_n]
        rows.append(r)
        counts.append(o.size)
        nbr += (keys[o] % KEY_SHIFT).tolist()
        w += ws[o].tolist()
        dropped += sel.size - o.size
    return rows, counts, nbr, w, dropped


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 30), st.sampled_from([0.0, 1.0, 2.0, 2.5, np.nan])),
                max_size=120), st.integers(1, 8))
def test_topn_selection_equals_a_stable_sort(cells, top_n):
    d = {x * KEY_SHIFT + y: v for x, y, v in cells}
    keys = np.array(sorted(d), np.int64)
    ws = np.array([d[k] for k in keys.tolist()], np.float32)
    rows, counts, nbr, w, dropped = C._topn_kernel(keys, ws, top_n)
    er, ec, en, ew, ed = topn_reference(keys, ws, top_n)
    assert rows.tolist() == er and counts.tolist() == ec and nbr.tolist() == en and dropped == ed
    np.testing.assert_array_equal(w, np.array(ew, np.float32))  # NaN last, as NumPy sorts them
    for t in (2, 3):
        got = C._topn(keys, ws, top_n, t)
        assert [a.tolist() for a in got[:3]] == [rows.tolist(), counts.tolist(), nbr.tolist()] and got[4] == dropped
        np.testing.assert_array_equal(got[3], w)


def generated_sessions(seed, S=1500, A=400):
    """Sessions of 1-40 events; popular aids (Zipf-like), all types, gaps of minutes to days."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, A + 1)
    p /= p.sum()
    out = []
    t0 = 0
    for n in rng.integers(1, 41, S):
        ts = t0 + np.cumsum(rng.exponential(2 * H, n)).astype(np.int64)
        t0 += int(rng.integers(0, 3 * H))
        out.append([(int(a), int(t), int(ty)) for a, t, ty in
                    zip(rng.choice(A, n, p=p), ts, rng.choice(3, n, p=[0.8, 0.15, 0.05]))])
    return out


def same_graph(a, b):
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.nbr, b.nbr)
    np.testing.assert_array_equal(a.w, b.w)
    assert a.stats == b.stats


@pytest.mark.parametrize("mode", ["time", "type", "unit"])
def test_threads_and_chunking(mode):
    ds = ds_from(generated_sessions(1))
    kw = dict(mode=mode, top_n=15, window_ms=6 * H)
    big = build_covisit(ds, chunk_pairs=10**9, n_threads=1, **kw)
    small = {t: build_covisit(ds, chunk_pairs=700, n_threads=t, **kw) for t in (1, 2, 3)}  # ~300 chunks
    same_graph(small[1], small[2])           # merged in chunk order: bit-identical for any thread count
    same_graph(small[1], small[3])
    assert big.stats["pairs"] > 10_000 and big.stats["neighbors_beyond_top_n"] > 0
    if mode != "time":
        same_graph(big, small[1])            # integer weights: every partial sum is exact
    else:
        # other chunks round other partial sums to float32: a relative 2**-24 per rounding, at
        # most ~log2(300) + 2 of them per weight -> rtol 1e-6; lists then agree up to near-ties
        np.testing.assert_array_equal(big.indptr, small[1].indptr)
        np.testing.assert_allclose(small[1].w, big.w, rtol=1e-6)
        assert np.mean(small[1].nbr == big.nbr) > 0.99


@pytest.mark.parametrize("mode", ["time", "type", "unit"])
def test_matches_brute_force_reference(mode):
    sessions = generated_sessions(2, S=400, A=120)
    top_n, max_events = 12, 25
    ref = reference_covisit(sessions, (0, 1, 2), mode, 6 * H, max_events, 10**9)  # whole rows
    g = build_covisit(ds_from(sessions), mode=mode, window_ms=6 * H, max_events=max_events, top_n=top_n,
                      chunk_pairs=2000, n_parts=2, n_threads=2)
    # time weights: float32 partial sums of few terms vs Python float64 -> rtol 1e-6. The order is
    # checked tie-aware: each kept neighbour has its reference weight, the weights are the
    # reference's top_n, and a neighbour is left out only for one of (near-)equal weight.
    n_rows = 0
    for x in range(120):
        nb, w = g.neighbors(x)
        full = ref.get(x, [])
        exp_w = [v for _, v in full[:top_n]]
        np.testing.assert_allclose(w, exp_w, rtol=1e-6)
        total = dict(full)
        np.testing.assert_allclose(w, [total[y] for y in nb.tolist()], rtol=1e-6)
        assert len(set(nb.tolist())) == len(nb)
        n_rows += bool(full)
    assert n_rows > 100


def test_n_threads_is_validated():
    ds = ds_from([[(1, 0, 0), (2, 1, 0)]])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_threads"):
            build_covisit(ds, n_threads=bad)
