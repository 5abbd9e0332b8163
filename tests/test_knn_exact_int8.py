"""topk_exact_int8: bounded int8 pre-scan + exact re-score must equal topk bit for bit."""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from w2v import knn
from w2v import knn_int8
from w2v.knn_int8 import Int8Stats


def _both(v, query, k, exclude, n_threads, **kw):
    inv = knn.inverse_norms(v)
    codes, scales = knn_int8.quantize_rows(v, inv)
    want = knn.topk(v, inv, query, k, exclude=exclude, n_threads=n_threads)
    stats = Int8Stats()
    got = knn_int8.topk_exact_int8(v, inv, codes, scales, query, k, exclude=exclude,
                              n_threads=n_threads, stats=stats, **kw)
    return want, got, stats


def _assert_same(want, got):
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64
    assert np.array_equal(want[1], got[1]), (want, got)
    assert np.array_equal(want[0], got[0]), (want, got)


@st.composite
def cases(draw):
    V = draw(st.integers(0, 40))
    D = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["grid", "normal", "scaled"]))
    if kind == "grid":  # few distinct values: duplicates, ties, zero rows
        vals = draw(st.lists(st.sampled_from([-2.0, -1.0, 0.0, 0.0, 0.5, 1.0, 3.0]),
                             min_size=V * D, max_size=V * D))
        v = np.array(vals, np.float32).reshape(V, D)
    else:
        seed = draw(st.integers(0, 2**32 - 1))
        v = np.random.default_rng(seed).standard_normal((V, D)).astype(np.float32)
        if kind == "scaled":  # rows of very different magnitude
            v *= np.float32(10.0) ** np.random.default_rng(seed + 1).integers(-30, 30, (V, 1)).astype(np.float32)
    if V:
        dup = draw(st.lists(st.integers(0, V - 1), max_size=4))
        for i, r in enumerate(dup):  # duplicate rows and zero rows
            v[r] = v[dup[0]] if i % 2 else 0.0
    if V and draw(st.booleans()):
        query = v[draw(st.integers(0, V - 1))].copy()
    else:
        query = np.array(draw(st.lists(st.sampled_from([-1.0, 0.0, 0.5, 2.0]), min_size=D, max_size=D)),
                         np.float32)
    k = draw(st.integers(0, V + 3))
    exclude = draw(st.lists(st.integers(0, V - 1), max_size=5)) if V else []
    n_threads = draw(st.sampled_from([1, 2]))
    return v, query, k, exclude, n_threads


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_equals_topk(case):
    v, query, k, exclude, n_threads = case
    # small ranges so that two threads really split the rows of these small matrices
    with mock.patch.object(knn, "MIN_ROWS_PER_THREAD", 4):
        want, got, stats = _both(v, query, k, exclude, n_threads)
    _assert_same(want, got)


def test_prunes_and_matches_on_random_matrix():
    rng = np.random.default_rng(7)
    v = rng.standard_normal((20000, 32)).astype(np.float32)
    v[5] = 0.0
    v[9] = v[3]
    for qi, t in [(3, 1), (11, 2), (5, 1)]:
        want, got, stats = _both(v, v[qi], 15, [qi], t)
        _assert_same(want, got)
        if qi != 5:  # a real query: the int8 bound must leave far fewer rows than V
            assert stats.fallbacks == 0 and stats.queries == 1
            assert 15 <= stats.last_candidates == stats.candidates < 2000
        else:  # zero query: exact fallback
            assert stats.query == 1 and stats.last_candidates == -1


def test_candidate_overflow_falls_back_exactly():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((3000, 8)).astype(np.float32)
    want, got, stats = _both(v, v[0], 10, None, 1, max_candidates=10)
    _assert_same(want, got)
    assert (stats.overflow, stats.query, stats.candidates, stats.last_candidates) == (1, 0, 0, -1)


def test_all_ties_keep_row_order():
    v = np.ones((50, 4), np.float32)
    v[::7] = 0.0
    want, got, stats = _both(v, np.ones(4, np.float32), 12, [1, 2], 1)
    _assert_same(want, got)
    assert got[1].tolist() == [3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 15, 16]


def test_argument_errors():
    v = np.ones((4, 3), np.float32)
    inv = knn.inverse_norms(v)
    codes, scales = knn_int8.quantize_rows(v, inv)
    with pytest.raises(ValueError, match="codes"):
        knn_int8.topk_exact_int8(v, inv, codes[:, :2], scales, v[0], 2)
    with pytest.raises(ValueError, match="max_candidates"):
        knn_int8.topk_exact_int8(v, inv, codes, scales, v[0], 2, max_candidates=0)
    with pytest.raises(ValueError, match="exclude"):
        knn_int8.topk_exact_int8(v, inv, codes, scales, v[0], 2, exclude=[4])


@pytest.mark.parametrize("D", [2, 3, 8])
def test_many_queries_low_dim(D):
    # low dimension: quantisation errors are large relative to the gaps between scores, so a
    # bound that is too tight drops true neighbours here
    rng = np.random.default_rng(D)
    v = rng.standard_normal((6000, D)).astype(np.float32)
    inv = knn.inverse_norms(v)
    codes, scales = knn_int8.quantize_rows(v, inv)
    queries = rng.standard_normal((60, D)).astype(np.float32)
    with mock.patch.object(knn, "MIN_ROWS_PER_THREAD", 1000):
        for i, q in enumerate(queries):
            t = 1 + i % 2
            _assert_same(knn.topk(v, inv, q, 3, n_threads=t),
                         knn_int8.topk_exact_int8(v, inv, codes, scales, q, 3, n_threads=t))


def test_interval_holds_at_worst_case_quantisation_error():
    # rows whose every element but the largest sits 0.499 steps from its int8 code, and queries
    # aligned with (or against) the errors: |s_j - a_j| reaches ~0.499 * scale * ||q||_1 / ||q||,
    # so each row's interval [a_j - e_j, a_j + e_j] from the phase-1 kernel must hold s_j there.
    rng = np.random.default_rng(3)
    V, D = 64, 24
    c = rng.integers(-120, 121, (V, D)).astype(np.float64)
    c[:, 0] = 127.0
    sign = rng.choice([-1.0, 1.0], (V, D))
    sign[:, 0] = 0.0
    v = (c + 0.499 * sign).astype(np.float32) * np.float32(0.37)
    inv = knn.inverse_norms(v)
    codes, scales = knn_int8.quantize_rows(v, inv)
    assert np.array_equal(codes.astype(np.float64), c)
    cbound = 0.5 + 260.0 * (D + 4) * 2.0 ** -24
    cand = np.empty(1, np.int64)
    worst = 0.0
    for j in range(V):
        for direction in (1.0, -1.0):
            q = (direction * sign[j] * rng.uniform(0.5, 2.0, D)).astype(np.float32)
            q_scale = knn.inverse_norms(q[None])[0]
            l1 = float(np.abs(q.astype(np.float64)).sum())
            qn = float(np.sqrt((q.astype(np.float64) ** 2).sum()))
            s = np.empty(1, np.float32)
            knn._score_rows_kernel(v, inv, q, q_scale, np.array([j]), s)
            hl, hid = np.full(1, -np.inf), np.full(1, -1, np.int64)
            knn_int8._bound_scan_kernel(codes, scales, inv, q, q_scale, l1, qn, cbound, j, j + 1, hl, hid, cand)
            lower = hl[0]
            assert lower <= s[0]
            hl, hid = np.full(1, np.float64(s[0])), np.full(1, -1, np.int64)
            n = knn_int8._bound_scan_kernel(codes, scales, inv, q, q_scale, l1, qn, cbound, j, j + 1, hl, hid, cand)
            assert n == 1  # upper bound >= s_j
            a = (codes[j].astype(np.float64) @ q) * scales[j] * q_scale
            worst = max(worst, abs(s[0] - a) / (scales[j] * q_scale * l1))
    assert worst > 0.49  # the fixture really reaches the worst case the bound is built for
