"""Reduced-precision cosine top-k over int8 codes of the unit rows (benchmarked, not served).

Two scans that read a quarter of the float32 bytes (``bench/bench_topk.py`` times them against
``w2v.knn.topk``, gensim, NumPy and FAISS):

* :func:`topk_reduced` -- approximate: the best ``rerank`` rows by their int8 score, re-scored
  exactly; the benchmark reports its recall;
* :func:`topk_exact_int8` -- exact: an int8 pass with a proven error bound per row keeps every
  row that could be in the top k, and only those are re-scored; it returns what ``knn.topk``
  returns, bit for bit.

Both take the codes of :func:`quantize_rows`. Neither is used by the service or ``otto-eval``
(they call ``w2v.knn``); exact-scan fallbacks are reported through an :class:`Int8Stats` object
the caller passes, not through module state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from data_prep.parallel import run_tasks, split_ranges

from .knn import (MIN_ROWS_PER_THREAD, _as_matrix, _check_inv, _dot, _finish, _readonly, _scan, _score_rows_kernel,
                  _single_query, _threads, heap_replace_root, inverse_norms)

__all__ = ["quantize_rows", "topk_reduced", "topk_exact_int8", "Int8Stats"]


@dataclass
class Int8Stats:
    """What :func:`topk_exact_int8` did, summed over the calls it was passed to: ``queries``,
    ``candidates`` (rows re-scored), and exact-scan fallbacks by reason (``overflow``: a thread's
    candidate buffer filled up; ``query``: the query is zero, non-finite or too large for the bound).
    ``last_candidates``: rows re-scored by the last call (-1 after a fallback)."""

    queries: int = 0
    candidates: int = 0
    overflow: int = 0
    query: int = 0
    last_candidates: int = -1

    @property
    def fallbacks(self) -> int:
        return self.overflow + self.query


# Phase 1 of topk_exact_int8: one pass over rows lo..hi-1 (ascending) of the int8 codes giving,
# per row, an interval [a_j - e_j, a_j + e_j] that provably holds the exact score s_j of
# _scan_kernel (see topk_exact_int8 for the proof):
#   a_j = (q . codes_j) * scales[j] * q_scale     (float32, the _scan_kernel arithmetic on codes)
#   e_j = scales[j] * q_scale * ||q||_1 * cbound + (D + 4) 2^-147 q_scale (inv[j] + scales[j])
#         + 2^-140 + 1e-9 |a_j|                   (float64; underflow and rounding slack)
# e_j = +inf when ||q|| > 1e36 * inv[j] (the float32 dot could overflow). A row with inv[j] = 0 is
# a zero row (exact score 0) or a non-finite row (score NaN, never returned): its interval is
# (-inf, 0]. hl/hid (float64/int64 [K], pre-filled with (-inf, -1)) keep the K best lower bounds;
# t = hl[0] is the K-th best lower bound seen so far (only grows). Row j is appended to cand
# (int64 [cap]) when a_j + e_j >= t at the time it is seen (before its own lower bound enters the
# heap). codes: int8 [V, D] C-contiguous; scales, inv: float32 [V]; q: float32 [D]; q_scale:
# float32 (finite, > 0); l1 = sum_d |q_d| and qnorm = ||q|| (float64). Returns the number of
# candidates, or -1 when more than cap rows qualified (the caller then scans exactly).
# Degenerate: lo == hi returns 0.
# Float32 pre-test (most rows stop there): with F = float32(1.001 qs l1 cbound), a row with
# ivlo <= inv[j] <= ivcap (no overflow guard, small underflow term) and
#   a_j + scales[j] * F + 1e-6 |a_j| < t32,   t32 = float32(t - 1e-6 |t| - ABS) <= t - ABS / 2,
# ABS = 2 (1e-20 + under) + 2^-138, has a_j + e_j < t: the 0.1% on F and the 1e-6 |a_j| cover
# float32 rounding (relative 2^-24 per operation) and the 1e-9 |a_j| slack; ABS covers the
# absolute terms of e_j (under * (inv[j] + scales[j]) <= 1e-20 + under, with scales <= 1) and
# float32 underflow. Such a row is neither a candidate nor a lower bound above t.
@njit(cache=True, nogil=True)
def _bound_scan_kernel(codes, scales, inv, q, q_scale, l1, qnorm, cbound, lo, hi, hl, hid, cand):
    D = codes.shape[1]
    qs = np.float64(q_scale)
    under = (D + 4) * 2.0 ** -147 * qs
    F = np.float32(1.001 * qs * l1 * cbound)
    ivcap = np.float32(min(1e-20 / under, 3e38))
    ivlo = np.float32(min(qnorm * 1e-36 * (1.0 + 1e-6), 3e38))
    ABS = 2.0 * (1e-20 + under) + 2.0 ** -138
    t = hl[0]
    t32 = np.float32(t - 1e-6 * abs(t) - ABS) if t > -np.inf else np.float32(-np.inf)
    cap = cand.shape[0]
    n = 0
    for j in range(lo, hi):
        a32 = _dot(q, codes, j) * scales[j] * q_scale
        if a32 + scales[j] * F + np.float32(1e-6) * abs(a32) < t32 and ivlo <= inv[j] <= ivcap:
            continue
        ivj = np.float64(inv[j])
        if ivj == 0.0:
            upper = 0.0
            lower = -np.inf
        else:
            sc = np.float64(scales[j])
            a = np.float64(a32)
            if qnorm > 1e36 * ivj:
                e = np.inf
            else:
                e = sc * qs * l1 * cbound + under * (ivj + sc) + 2.0 ** -140 + 1e-9 * abs(a)
            upper = a + e
            lower = a - e
        if upper >= t:
            if n >= cap:
                return -1
            cand[n] = j
            n += 1
        if lower > t:
            heap_replace_root(hl, hid, lower, j)
            t = hl[0]
            if t > -np.inf:
                t32 = np.float32(t - 1e-6 * abs(t) - ABS)
    return n



# Symmetric int8 codes of the unit rows: u = v * inv[i]; scale[i] = max_d |u_d| / 127;
# codes[i, d] = round(u_d / scale[i]) in [-127, 127]; a zero row gets scale 0 and zero codes.
# vectors: float32 [V, D]; inv: float32 [V]; codes: int8 [V, D]; scales: float32 [V].
@njit(cache=True, nogil=True)
def _quantize_kernel(vectors, inv, codes, scales):
    V, D = vectors.shape
    for i in range(V):
        m = 0.0
        for d in range(D):
            m = max(m, abs(np.float64(vectors[i, d]) * inv[i]))
        if m == 0.0:
            scales[i] = 0.0
            for d in range(D):
                codes[i, d] = 0
            continue
        step = m / 127.0
        scales[i] = step
        for d in range(D):
            c = np.rint(np.float64(vectors[i, d]) * inv[i] / step)
            codes[i, d] = np.int8(min(127.0, max(-127.0, c)))



# --------------------------------------------------------------------------------------------
# Wrappers
# --------------------------------------------------------------------------------------------

def quantize_rows(vectors, inv_norms=None) -> tuple[np.ndarray, np.ndarray]:
    """Reduced-precision copy for :func:`topk_reduced`: ``(codes int8[V, D], scales float32[V])``.

    ``codes[i] * scales[i]`` approximates the unit row ``v_i / ||v_i||`` (symmetric per-row int8,
    max error ``scales[i] / 2`` per element); a quarter of the float32 bytes to scan.
    """
    v = _as_matrix(vectors)
    V, D = v.shape
    inv = inverse_norms(v) if inv_norms is None else _check_inv(inv_norms, V)
    codes = np.empty((V, D), np.int8)
    scales = np.empty(V, np.float32)
    _quantize_kernel(v, _readonly(inv), codes, scales)
    return codes, scales


def _check_codes(codes, scales, V, D) -> tuple[np.ndarray, np.ndarray]:
    """Validated read-only int8 ``codes [V, D]`` and float32 ``scales [V]`` (from quantize_rows)."""
    c = np.asarray(codes)
    if c.shape != (V, D) or c.dtype != np.int8:
        raise ValueError(f"codes: expected int8 {(V, D)}, got {c.dtype} {c.shape}")
    sc = np.asarray(scales)
    if sc.shape != (V,):
        raise ValueError(f"scales: shape {sc.shape} does not match the {V} rows")
    return _readonly(np.ascontiguousarray(c)), _readonly(np.ascontiguousarray(sc, np.float32))


def _rescore(v, inv, q, q_scale, rows) -> tuple[np.ndarray, np.ndarray]:
    """Exact float32 scores of candidate ``rows`` (topk's own arithmetic), best first:
    score descending, then row ascending; rows scoring -inf or NaN are dropped, as _scan does."""
    rows = np.ascontiguousarray(rows, np.int64)
    s = np.empty(rows.shape[0], np.float32)
    _score_rows_kernel(v, inv, q, q_scale, _readonly(rows), s)
    ok = s > -np.inf
    s, rows = s[ok], rows[ok]
    order = np.lexsort((rows, -s))
    return s[order], rows[order]


def topk_reduced(vectors, inv_norms, codes, scales, query, k, exclude=None, rerank=None,
                 n_threads=1) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k: scan int8 ``codes`` (see :func:`quantize_rows`), keep the best
    ``rerank`` candidates (default ``max(4k, k + 32)``), re-score them exactly in float32 from
    ``vectors`` (the same scores :func:`topk` gives) and return the best k in the total order.

    Exact whenever every true top-k row is among the candidates; the benchmark reports recall.
    """
    v, inv, q, q_scale, ex, kk = _single_query(vectors, inv_norms, query, k, exclude)
    V, D = v.shape
    c, sc = _check_codes(codes, scales, V, D)
    if kk <= 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    rr = max(4 * kk, kk + 32) if rerank is None else max(int(rerank), kk)
    _, cand = _scan(c, sc, q, q_scale, min(V, rr + ex.size), _threads(n_threads))
    s, rows = _rescore(v, inv, q, q_scale, cand[cand >= 0])
    return _finish(s, rows, ex, kk)


def topk_exact_int8(vectors, inv_norms, codes, scales, query, k, exclude=None, n_threads=1,
                    max_candidates=None, stats=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k that scans int8 codes first: returns exactly what :func:`topk` returns.

    ``codes, scales`` must be ``quantize_rows(vectors, inv_norms)`` (same vectors and same
    ``inv_norms``); the guarantee rests on that. Two phases:

    1. One pass over the int8 ``codes`` (a quarter of the float32 bytes) gives every row an
       interval ``a_j +- e_j`` holding its exact :func:`topk` score ``s_j``. Each thread keeps the
       K best lower bounds ``a_j - e_j`` of its row range in a heap (``K = k'`` + distinct excluded
       rows, as in :func:`topk`); ``T`` = the K-th best (``-inf`` until K are seen; it only grows). A row is
       a candidate when its upper bound ``a_j + e_j >= T`` when it is seen. Most rows are
       dismissed by a cheaper float32 test that over-estimates ``a_j + e_j`` (see
       ``_bound_scan_kernel``).
    2. The candidates are re-scored from ``vectors`` with :func:`topk`'s own float32 code (so the
       scores are bit-identical), ordered by score descending then row ascending, and the
       exclusions applied as in :func:`topk`.

    Why the candidates hold the result: a non-candidate j had ``s_j <= a_j + e_j < T`` while K
    other rows had ``s_i >= a_i - e_i >= T``, i.e. K rows strictly better; at least
    ``K - len(exclude) = k`` of them are eligible, so j is not in the top k (ties are kept: the
    test is ``>=``).

    The bound (``u = 2^-24``; ``w_j = v_j * inv_norms[j]`` as reals; ``sc = scales[j]``,
    ``qs = 1/||q||`` as stored in float32): :func:`quantize_rows` rounds ``w_jd / step`` to the
    nearest integer with ``step = max_d |w_jd| / 127`` (float64), stored as ``sc = step (1 + eta)``,
    ``|eta| <= u``; so ``|w_jd - sc * codes_jd| <= sc (1/2 + 128 u)`` and
    ``|q . w_j - sc (q . codes_j)| <= sc ||q||_1 (1/2 + 128 u)``. Both float32 dots (any summation
    order, fused or not) are within ``gamma_D = D u / (1 - D u)`` of ``sum_d |q_d| |x_d|`` and the two
    float32 products add ``2u`` relative each; every such magnitude is at most
    ``127.6 sc ||q||_1 [qs]``. Altogether, with ``B_j = sc * qs * ||q||_1``:
    ``|s_j - a_j| <= B_j (1/2 + 260 (D + 4) u)`` (the ``cbound`` used, about 0.502 at D = 100),
    plus an absolute ``(D + 4) 2^-147 qs (inv_norms[j] + sc) + 2^-140`` for float32 underflow and
    ``1e-9 |a_j|`` for the float64 evaluation of the bound itself. Rows with ``inv_norms = 0``
    (zero rows score exactly 0; non-finite rows score NaN, which is never returned) get
    ``(-inf, 0]``; rows where the float32 dot could overflow (``||q|| > 1e36 * inv_norms[j]``)
    get an infinite interval.

    Limits: each thread keeps at most ``max_candidates`` rows (default ``max(4096, 64 K)``); if
    its buffer overflows, or the query is zero, non-finite or has ``||q|| > 1e30``, the call
    falls back to :func:`topk`'s exact scan (same result, full float32 read). ``stats`` (an
    :class:`Int8Stats`, optional) counts the call, its candidates and its fallback.
    """
    v, inv, q, q_scale, ex, kk = _single_query(vectors, inv_norms, query, k, exclude)
    V, D = v.shape
    c, sc = _check_codes(codes, scales, V, D)
    nt = _threads(n_threads)
    if kk <= 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    K = kk + ex.size
    cap = max(4096, 64 * K) if max_candidates is None else int(max_candidates)
    if cap < 1:
        raise ValueError(f"max_candidates: must be >= 1 (got {cap})")
    q64 = q.astype(np.float64)
    l1 = float(np.abs(q64).sum())
    qnorm = float(np.sqrt((q64 * q64).sum()))
    info = {"candidates": -1, "fallback": None}
    if not (np.isfinite(q_scale) and q_scale > 0 and np.isfinite(l1) and qnorm <= 1e30):
        info["fallback"] = "query"
    else:
        cbound = 0.5 + 260.0 * (D + 4) * 2.0 ** -24
        ranges = split_ranges(V, nt, MIN_ROWS_PER_THREAD)
        n = len(ranges)
        hl = np.full((n, K), -np.inf, np.float64)
        hid = np.full((n, K), -1, np.int64)
        cand = np.empty((n, cap), np.int64)
        counts = np.zeros(n, np.int64)

        def part(t):
            counts[t] = _bound_scan_kernel(c, sc, inv, q, q_scale, l1, qnorm, cbound,
                                           ranges[t][0], ranges[t][1], hl[t], hid[t], cand[t])

        run_tasks(part, [(t,) for t in range(n)])
        if (counts < 0).any():
            info["fallback"] = "overflow"
        else:
            rows = np.concatenate([cand[t, :counts[t]] for t in range(n)])
            info["candidates"] = int(rows.shape[0])
    if stats is not None:
        stats.queries += 1
        stats.last_candidates = info["candidates"]
        if info["fallback"] is None:
            stats.candidates += info["candidates"]
        else:
            setattr(stats, info["fallback"], getattr(stats, info["fallback"]) + 1)
    if info["fallback"] is not None:
        s, i = _scan(v, inv, q, q_scale, K, nt)
        return _finish(s, i, ex, kk)
    s, rows = _rescore(v, inv, q, q_scale, rows)
    return _finish(s[:K], rows[:K], ex, kk)
