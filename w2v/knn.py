"""Exact cosine top-k: hand-written Numba kernels and thin NumPy wrappers.

Scores
------
For a query vector ``q`` and item rows ``v_i`` (float32 ``[V, D]``)::

    score_i = (q . v_i) * inv_norms[i] * (1 / ||q||)

``inv_norms[i] = 1 / ||v_i||`` is accumulated in float64 and stored as float32; a zero row has
``inv_norms = 0`` and therefore scores exactly ``0`` (never NaN). A zero query scores ``0``
against every row. Rows whose score is NaN or ``-inf`` (only possible with non-finite vectors)
are never returned.

The one total order
-------------------
Every result in the project is ordered by **score descending, then row ascending**. The heap
keeps the ``K`` best entries seen so far under that order; its root is the *worst* kept entry.
Scans visit the rows of each heap in ascending row order, so a candidate that ties the root's
score always has a larger row and is worse: the scan tests ``s > root_score`` before any heap
work, and that single comparison is exact with respect to the total order.

Heaps are two parallel arrays ``(scores float32[K], ids int64[K])`` pre-filled with the
sentinel ``(-inf, -1)``; sentinels sort after every real entry and become the ``-1``/``-inf``
padding of short results.

Dots
----
The single-query scan's dot (``_dot``) is the only code compiled with relaxed floating point
(``fastmath={"reassoc", "contract"}``: the sum over ``D`` may be reordered into SIMD lanes and
fused multiply-adds; no assumption about NaN/inf is made) and computes
``(q . v) * inv_v * inv_q``. The batched tiles use a 4 x 16 outer-product micro-kernel written
in LLVM IR (``_outer4x16``) that dots the unit query with the unit row in sequential order with
fused multiply-adds. Each kernel computes every pair with one code path (no edge variants), so
a given (query, row) pair gets a bit-identical score whatever the tile sizes or thread split;
the scan and the tiles may differ from each other in the last bits (about 1e-7 relative).

Threads
-------
Every kernel is ``nogil``; multi-threading is done with Python threads that each run a kernel on
a disjoint range (rows for one query, query blocks for batches), so concurrent callers (server
threads) never contend for a Numba threading layer.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "inverse_norms", "normalize_rows", "topk", "topk_batch", "build_neighbor_table",
    "session_vector", "quantize_rows", "topk_reduced", "heap_push", "heap_replace_root",
    "heap_sort", "default_threads", "topk_exact_int8",
]

_DOT_MATH = {"reassoc", "contract"}
# a single query is split across threads only in ranges of at least this many rows
MIN_ROWS_PER_THREAD = 4096


# --------------------------------------------------------------------------------------------
# Norms
# --------------------------------------------------------------------------------------------

# inv[i] = 1 / sqrt(sum_d vectors[i, d]^2), accumulated in float64; 0.0 when the sum is 0.
# vectors: float32 [V, D] C-contiguous (may be read-only); inv: float32 [V] output.
# Degenerate: V = 0 or D = 0 (all rows zero -> 0.0).
@njit(cache=True, nogil=True)
def _inv_norms_kernel(vectors, inv):
    V, D = vectors.shape
    for i in range(V):
        acc = 0.0
        for d in range(D):
            x = np.float64(vectors[i, d])
            acc += x * x
        inv[i] = np.float32(1.0 / np.sqrt(acc)) if acc > 0.0 else np.float32(0.0)


# out[i, d] = vectors[i, d] * inv[i] (float32 multiply); zero rows stay zero.
# vectors: float32 [V, D] C-contiguous; inv: float32 [V]; out: float32 [V, D] C-contiguous.
@njit(cache=True, nogil=True)
def _scale_rows_kernel(vectors, inv, out):
    V, D = vectors.shape
    for i in range(V):
        s = inv[i]
        for d in range(D):
            out[i, d] = vectors[i, d] * s


# --------------------------------------------------------------------------------------------
# Heap: two parallel arrays, root = worst entry under (score desc, id asc)
# --------------------------------------------------------------------------------------------

# True when entry a = (sa, ia) comes after entry b = (sb, ib) in the total order
# (lower score, or equal score and larger id).
@njit(cache=True, nogil=True)
def _worse(sa, ia, sb, ib):
    return sa < sb or (sa == sb and ia > ib)


# Restore the heap property below `pos` in hs[:size]/hid[:size] (parent never better than a
# child, so hs[0] is the worst entry). hs: float32 [K], hid: int64 [K], 0 <= pos < size <= K.
@njit(cache=True, nogil=True)
def _sift_down(hs, hid, pos, size):
    s = hs[pos]
    i = hid[pos]
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and _worse(hs[c + 1], hid[c + 1], hs[c], hid[c]):
            c += 1
        if _worse(hs[c], hid[c], s, i):
            hs[pos] = hs[c]
            hid[pos] = hid[c]
            pos = c
        else:
            break
    hs[pos] = s
    hid[pos] = i


@njit(cache=True, nogil=True)
def heap_push(hs, hid, size, s, i):
    """Insert (s, i) into the heap hs[:size]/hid[:size] (size < len(hs)); return the new size.

    hs: float32 [K], hid: int64 [K] (C-contiguous, writable)."""
    pos = size
    while pos > 0:
        parent = (pos - 1) >> 1
        if _worse(s, i, hs[parent], hid[parent]):
            hs[pos] = hs[parent]
            hid[pos] = hid[parent]
            pos = parent
        else:
            break
    hs[pos] = s
    hid[pos] = i
    return size + 1


@njit(cache=True, nogil=True)
def heap_replace_root(hs, hid, s, i):
    """Replace the worst entry of a full heap (hs[0], hid[0]) by (s, i) and restore the heap.

    The caller has checked that (s, i) is better than the root. hs: float32 [K], hid: int64 [K]."""
    hs[0] = s
    hid[0] = i
    _sift_down(hs, hid, 0, hs.shape[0])


@njit(cache=True, nogil=True)
def heap_sort(hs, hid, size):
    """Sort a heap hs[:size]/hid[:size] in place into the total order, best entry first."""
    for end in range(size - 1, 0, -1):
        s = hs[0]
        i = hid[0]
        hs[0] = hs[end]
        hid[0] = hid[end]
        hs[end] = s
        hid[end] = i
        _sift_down(hs, hid, 0, end)


# --------------------------------------------------------------------------------------------
# Dot micro-kernels (the only relaxed-math code)
# --------------------------------------------------------------------------------------------

# One dot: q . v[j], float32 accumulation (vectorised over D).
# q: float32 [D]; v: [V, D] float32 or int8 (converted to float32 per element), C-contiguous.
@njit(cache=True, nogil=True, fastmath=_DOT_MATH)
def _dot(q, v, j):
    acc = np.float32(0.0)
    for d in range(q.shape[0]):
        acc += q[d] * np.float32(v[j, d])
    return acc


# --------------------------------------------------------------------------------------------
# Single-query scan
# --------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def scan_score(q, vectors, row_scale, q_scale, j):
    """The score of row ``j`` exactly as :func:`topk` computes it (bit for bit, in any kernel that
    calls this): ``(q . v_j) * row_scale[j] * q_scale`` in float32 (``_dot``)."""
    return _dot(q, vectors, j) * row_scale[j] * q_scale


# One pass over rows lo..hi-1 (ascending) of `vectors`, keeping the K best in (hs, hid), then
# sorting them best first.
#   s_j = (q . v_j) * row_scale[j] * q_scale
# vectors: [V, D] float32 (row_scale = inverse norms) or int8 codes (row_scale = code scales),
# C-contiguous, may be a read-only memory map; row_scale: float32 [V]; q: float32 [D];
# q_scale: float32 (1/||q||, 0 for a zero query); hs/hid: float32/int64 [K] pre-filled with
# (-inf, -1). One row at a time (measured faster than 4- or 8-row blockings here: the scan is
# bound by memory, not arithmetic); the root score is kept in a local and re-read only after a
# replacement. Degenerate: lo == hi leaves the sentinels.
@njit(cache=True, nogil=True)
def _scan_kernel(vectors, row_scale, q, q_scale, lo, hi, hs, hid):
    t = hs[0]
    for j in range(lo, hi):
        s = scan_score(q, vectors, row_scale, q_scale, j)
        if s > t:
            heap_replace_root(hs, hid, s, j)
            t = hs[0]
    heap_sort(hs, hid, hs.shape[0])


# Scores of the given rows with the same code as _scan_kernel (bit-identical scores):
# out[t] = (q . v[rows[t]]) * row_scale[rows[t]] * q_scale.
# vectors: float32 [V, D]; row_scale: float32 [V]; q: float32 [D]; rows: int64 [n] in range;
# out: float32 [n]. Degenerate: n = 0.
@njit(cache=True, nogil=True)
def _score_rows_kernel(vectors, row_scale, q, q_scale, rows, out):
    for t in range(rows.shape[0]):
        r = rows[t]
        out[t] = scan_score(q, vectors, row_scale, q_scale, r)


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


# --------------------------------------------------------------------------------------------
# Batched tiles
# --------------------------------------------------------------------------------------------

# Micro-kernel of the batched tiles, written in LLVM IR: a 4 x 16 block of dots
#   out[r, l] = sum_d qt[i + r, d] * vp[p, d, l]      (r < 4, l < 16)
# as 4 vector accumulators of 16 float32 lanes: for each d, one 16-lane load of the item panel,
# a broadcast of each of the 4 query elements and 4 fused multiply-adds (llvm.fma.v16f32; LLVM
# splits the vectors to the machine's width). No horizontal reductions, and the sum over d is in
# plain sequential order, so the value of a pair never depends on the tiling.
# qt: float32 [Q4, D] C-contiguous with i + 4 <= Q4; vp: float32 [P, D, 16] C-contiguous (16
# item rows interleaved per panel), p < P; out: float32 [4, 16] C-contiguous. D = 0 gives zeros.
# (Numba cannot express register accumulators across lanes; per-pair dot loops cost one
# horizontal reduction per pair and reached about half this speed.)
@intrinsic
def _outer4x16(typingctx, qt, i, vp, p, out):
    f32 = types.float32
    if not (isinstance(qt, types.Array) and qt.dtype == f32 and qt.ndim == 2 and qt.layout == "C"
            and isinstance(vp, types.Array) and vp.dtype == f32 and vp.ndim == 3 and vp.layout == "C"
            and isinstance(out, types.Array) and out.dtype == f32 and out.ndim == 2 and out.layout == "C"):
        return None
    sig = types.void(qt, i, vp, p, out)

    def codegen(context, builder, signature, args):
        qt_v, i_v, vp_v, p_v, out_v = args
        qt_a = context.make_array(signature.args[0])(context, builder, qt_v)
        vp_a = context.make_array(signature.args[2])(context, builder, vp_v)
        out_a = context.make_array(signature.args[4])(context, builder, out_v)
        i_v = context.cast(builder, i_v, signature.args[1], types.int64)
        p_v = context.cast(builder, p_v, signature.args[3], types.int64)
        fl = ir.FloatType()
        vec = ir.VectorType(fl, 16)
        vptr = vec.as_pointer()
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        D = builder.extract_value(qt_a.shape, 1)
        rows = [builder.gep(qt_a.data, [builder.mul(builder.add(i_v, ir.Constant(i64, r)), D)], source_etype=fl)
                for r in range(4)]
        panel = builder.gep(vp_a.data, [builder.mul(builder.mul(p_v, D), ir.Constant(i64, 16))], source_etype=fl)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                             "llvm.fma.v16f32")
        zero = ir.Constant(vec, [0.0] * 16)
        undef = ir.Constant(vec, ir.Undefined)
        splat = ir.Constant(ir.VectorType(i32, 16), [0] * 16)
        entry = builder.basic_block
        loop = builder.append_basic_block("outer4x16.loop")
        done = builder.append_basic_block("outer4x16.done")
        builder.cbranch(builder.icmp_signed(">", D, ir.Constant(i64, 0)), loop, done)
        builder.position_at_end(loop)
        d = builder.phi(i64)
        acc = [builder.phi(vec) for _ in range(4)]
        d.add_incoming(ir.Constant(i64, 0), entry)
        for a in acc:
            a.add_incoming(zero, entry)
        w = builder.load(builder.bitcast(builder.gep(panel, [builder.mul(d, ir.Constant(i64, 16))], source_etype=fl),
                                         vptr), align=4)
        nxt = []
        for r in range(4):
            x = builder.load(builder.gep(rows[r], [d], source_etype=fl), typ=fl)
            xb = builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(i32, 0)), undef, splat)
            nxt.append(builder.call(fma, [xb, w, acc[r]]))
        d_next = builder.add(d, ir.Constant(i64, 1))
        tail = builder.basic_block
        d.add_incoming(d_next, tail)
        for a, n in zip(acc, nxt):
            a.add_incoming(n, tail)
        builder.cbranch(builder.icmp_signed("<", d_next, D), loop, done)
        builder.position_at_end(done)
        res = []
        for r in range(4):
            ph = builder.phi(vec)
            ph.add_incoming(zero, entry)
            ph.add_incoming(nxt[r], tail)
            res.append(ph)
        for r in range(4):
            dst = builder.gep(out_a.data, [ir.Constant(i64, 16 * r)], source_etype=fl)
            builder.store(res[r], builder.bitcast(dst, vptr), align=4)
        return context.get_dummy_value()

    return sig, codegen


# Scaled copy of query rows lo..hi-1: dst[r - lo, d] = src[r, d] * scale[r]; the following rows
# up to round_up(hi - lo, 4) are zeroed (they are computed by the 4-row micro-kernel but never
# offered). src: float32 [N, D]; scale: float32 [N]; dst: float32 [M, D], M >= round_up(hi-lo, 4).
@njit(cache=True, nogil=True)
def _copy_scaled(src, scale, lo, hi, dst):
    D = src.shape[1]
    n = hi - lo
    for r in range(n):
        c = scale[lo + r]
        for d in range(D):
            dst[r, d] = src[lo + r, d] * c
    for r in range(n, min((n + 3) // 4 * 4, dst.shape[0])):
        for d in range(D):
            dst[r, d] = 0.0


# Scaled, panel-interleaved copy of item rows lo..hi-1: row lo + 16 p + l goes to dst[p, :, l],
# multiplied by scale; lanes past hi in the last panel are zeroed (computed, never offered).
# Written in destination order (p, d, l), so writes are sequential and the 16 source rows of a
# panel stay in L1 while they are read column by column.
# src: float32 [N, D]; scale: float32 [N]; dst: float32 [P, D, 16], P >= ceil((hi - lo) / 16).
@njit(cache=True, nogil=True)
def _pack_panels(src, scale, lo, hi, dst):
    D = src.shape[1]
    n = hi - lo
    for p in range((n + 15) // 16):
        r0 = lo + 16 * p
        lanes = min(16, hi - r0)
        for d in range(D):
            for l in range(lanes):
                dst[p, d, l] = src[r0 + l, d] * scale[r0 + l]
            for l in range(lanes, 16):
                dst[p, d, l] = 0.0


# Top-K of queries q_lo..q_hi-1 over all rows, in tiles of q_block queries x i_block rows:
#   s_qj = (queries[q] * q_scale[q]) . (vectors[j] * row_scale[j])
# i.e. the unit query dotted with the unit row (the single-query scan's cosine, rounded in
# another order). Item blocks are the outer loop: each is scaled and packed once into panels of
# 16 interleaved rows (vp); then, for each query block, the queries are copied scaled (qt, a
# cache-resident tile) and, for each panel (ascending) and each group of 4 queries, the
# micro-kernel _outer4x16 computes 64 scores, each tested against its query's heap root (kept in
# a local, re-read only after a replacement) before any heap work. Rows reach every heap in
# ascending order (item blocks, panels and lanes ascend), as the heap test requires. Packing
# costs about 1/(2 (q_hi - q_lo)) of the arithmetic and the query copies 1/(2 i_block). At the
# end the heaps are sorted best first.
# vectors: float32 [V, D] C-contiguous (read-only allowed); row_scale: float32 [V];
# queries: float32 [Q, D]; q_scale: float32 [Q]; 0 <= q_lo <= q_hi <= Q; q_block, i_block >= 1;
# hs/hid: float32/int64 [Q, K] pre-filled with (-inf, -1). Degenerate: V = 0 leaves sentinels;
# D = 0 scores every pair 0.
@njit(cache=True, nogil=True)
def _tiles_kernel(vectors, row_scale, queries, q_scale, q_lo, q_hi, q_block, i_block, hs, hid):
    V, D = vectors.shape
    K = hs.shape[1]
    qt = np.zeros(((min(q_block, max(q_hi - q_lo, 1)) + 3) // 4 * 4, D), np.float32)
    vp = np.zeros(((min(i_block, max(V, 1)) + 15) // 16, D, 16), np.float32)
    acc = np.zeros((4, 16), np.float32)
    for ib0 in range(0, V, i_block):
        ib1 = min(ib0 + i_block, V)
        _pack_panels(vectors, row_scale, ib0, ib1, vp)
        for qb0 in range(q_lo, q_hi, q_block):
            qb1 = min(qb0 + q_block, q_hi)
            nq = qb1 - qb0
            _copy_scaled(queries, q_scale, qb0, qb1, qt)
            for p in range((ib1 - ib0 + 15) // 16):
                j0 = ib0 + 16 * p
                lanes = min(16, ib1 - j0)
                for ii in range(0, nq, 4):
                    _outer4x16(qt, ii, vp, p, acc)
                    for r in range(min(4, nq - ii)):
                        qi = qb0 + ii + r
                        t = hs[qi, 0]
                        for l in range(lanes):
                            s = acc[r, l]
                            if s > t:
                                heap_replace_root(hs[qi], hid[qi], s, j0 + l)
                                t = hs[qi, 0]
    for qi in range(q_lo, q_hi):
        heap_sort(hs[qi], hid[qi], K)


# Copy the first k entries of each sorted heap row that are not the query's own row
# (skip[q] < 0: nothing skipped) into out_s/out_i; pad with (-inf, -1).
# hs/hid: float32/int64 [Q, K] sorted best first; skip: int64 [Q]; out_s/out_i: [Q, k].
@njit(cache=True, nogil=True)
def _trim_kernel(hs, hid, skip, out_s, out_i):
    Q, K = hs.shape
    k = out_s.shape[1]
    for q in range(Q):
        n = 0
        for t in range(K):
            if n == k:
                break
            if hid[q, t] == skip[q] and skip[q] >= 0:
                continue
            out_s[q, n] = hs[q, t]
            out_i[q, n] = hid[q, t]
            n += 1
        for t in range(n, k):
            out_s[q, t] = -np.inf
            out_i[q, t] = -1


# --------------------------------------------------------------------------------------------
# Session vector and quantisation
# --------------------------------------------------------------------------------------------

# out = sum_t weights[t] * vectors[rows[t]] * inv_norms[rows[t]] (float64 accumulation).
# vectors: float32 [V, D]; inv_norms: float32 [V]; rows: int64 [n] in range; weights: float64 [n];
# out: float64 [D] zeroed. Degenerate: n = 0 gives the zero vector.
@njit(cache=True, nogil=True)
def _session_kernel(vectors, inv_norms, rows, weights, out):
    D = vectors.shape[1]
    for t in range(rows.shape[0]):
        r = rows[t]
        w = weights[t] * np.float64(inv_norms[r])
        if w == 0.0:
            continue
        for d in range(D):
            out[d] += w * np.float64(vectors[r, d])


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

def default_threads() -> int:
    """Number of CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(8, 2 * default_threads()), thread_name_prefix="knn")
        return _POOL


def _run_threads(fn, args_list) -> None:
    """Run fn(*args) for every args tuple: all but the first on the shared pool, the first here."""
    futures = [_pool().submit(fn, *a) for a in args_list[1:]]
    try:
        if args_list:
            fn(*args_list[0])
    finally:
        for f in futures:
            f.result()


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only plain-ndarray view (one Numba specialisation for writable and mapped input)."""
    v = np.asarray(a).view(np.ndarray)
    v.flags.writeable = False
    return v


def _as_matrix(vectors, name="vectors") -> np.ndarray:
    a = np.asarray(vectors)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-d [V, D] array, got shape {a.shape}")
    return _readonly(np.ascontiguousarray(a, dtype=np.float32))


def _check_inv(inv_norms, V) -> np.ndarray:
    inv = np.asarray(inv_norms)
    if inv.shape != (V,):
        raise ValueError(f"inv_norms: shape {inv.shape} does not match the {V} rows of vectors")
    return _readonly(np.ascontiguousarray(inv, dtype=np.float32))


def _check_k(k) -> int:
    k = int(k)
    if k < 0:
        raise ValueError(f"k: must be >= 0 (got {k})")
    return k


def _threads(n_threads) -> int:
    if n_threads is None:
        return default_threads()
    n = int(n_threads)
    if n < 1:
        raise ValueError(f"n_threads: must be >= 1 (got {n})")
    return n


def inverse_norms(vectors) -> np.ndarray:
    """``float32 [V]``: ``1/||row||`` accumulated in float64; ``0.0`` for zero rows."""
    v = _as_matrix(vectors)
    out = np.empty(v.shape[0], np.float32)
    _inv_norms_kernel(v, out)
    return out


def normalize_rows(vectors) -> np.ndarray:
    """``float32 [V, D]`` C-contiguous copy with unit rows; zero rows stay zero (never NaN)."""
    v = _as_matrix(vectors)
    inv = np.empty(v.shape[0], np.float32)
    _inv_norms_kernel(v, inv)
    out = np.empty(v.shape, np.float32)
    _scale_rows_kernel(v, _readonly(inv), out)
    return out


def _query(query, D) -> tuple[np.ndarray, np.float32]:
    q = np.asarray(query)
    if q.shape != (D,):
        raise ValueError(f"query: shape {q.shape} does not match vector size {D}")
    q = _readonly(np.ascontiguousarray(q, dtype=np.float32))
    inv = np.empty(1, np.float32)
    _inv_norms_kernel(q.reshape(1, D), inv)
    return q, inv[0]


def _exclude_rows(exclude, V) -> np.ndarray:
    if exclude is None:
        return np.empty(0, np.int64)
    ex = np.asarray(exclude)
    if ex.size == 0:
        return np.empty(0, np.int64)
    if ex.dtype.kind not in "iu":
        raise ValueError(f"exclude: expected integer row ids, got dtype {ex.dtype}")
    ex = np.unique(ex.astype(np.int64).ravel())
    if ex[0] < 0 or ex[-1] >= V:
        bad = ex[0] if ex[0] < 0 else ex[-1]
        raise ValueError(f"exclude: row {int(bad)} is out of range [0, {V})")
    return ex


def _scan(vectors, row_scale, q, q_scale, K, n_threads) -> tuple[np.ndarray, np.ndarray]:
    """Best K rows of a one-pass scan, split over n_threads row ranges; sorted best first."""
    V = vectors.shape[0]
    n = max(1, min(n_threads, V // MIN_ROWS_PER_THREAD))
    hs = np.full((n, K), -np.inf, np.float32)
    hid = np.full((n, K), -1, np.int64)
    bounds = np.linspace(0, V, n + 1).astype(np.int64)
    args = [(vectors, row_scale, q, q_scale, int(bounds[t]), int(bounds[t + 1]), hs[t], hid[t])
            for t in range(n)]
    _run_threads(_scan_kernel, args)
    if n == 1:
        return hs[0], hid[0]
    s, i = hs.ravel(), hid.ravel()
    order = np.lexsort((i, -s))[:K]
    return s[order], i[order]


def _finish(s, i, ex, k) -> tuple[np.ndarray, np.ndarray]:
    keep = i >= 0
    if ex.size:
        keep &= ~np.isin(i, ex)
    s, i = s[keep][:k], i[keep][:k]
    return np.ascontiguousarray(s, np.float32), np.ascontiguousarray(i, np.int64)


def topk(vectors, inv_norms, query, k, exclude=None, n_threads=1) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k of one query: ``(scores float32[k'], rows int64[k'])``.

    One pass over ``vectors`` (float32 ``[V, D]``, C-contiguous; a read-only memory map is used as
    is, never copied or normalised; other dtypes or layouts are converted, which copies). ``score_i = (q . v_i) * inv_norms[i] / ||q||``; a zero query scores 0
    everywhere. ``exclude``: row ids to skip (duplicates allowed; out of range -> ValueError).
    ``k' = min(k, eligible rows)``; order: score descending, then row ascending. With
    ``n_threads > 1`` the rows are split into contiguous ranges scanned by separate threads and
    the heaps merged: the result equals the one-thread result exactly.
    """
    v = _as_matrix(vectors)
    V, D = v.shape
    inv = _check_inv(inv_norms, V)
    k = _check_k(k)
    q, q_scale = _query(query, D)
    ex = _exclude_rows(exclude, V)
    kk = min(k, V - ex.size)
    if kk <= 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    s, i = _scan(v, inv, q, q_scale, kk + ex.size, _threads(n_threads))
    return _finish(s, i, ex, kk)


def topk_batch(vectors, inv_norms, queries, k, exclude_self=None, q_block=64, i_block=4096,
               n_threads=None, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k of many queries: ``(scores float32[Q, k], rows int64[Q, k])``.

    ``score = (q / ||q||) . (v_i * inv_norms[i])``: the cosine of :func:`topk`, summed in another
    order (equal to ~1e-7; zero rows and zero queries score 0). Order: score descending, then row
    ascending. Tiles of ``q_block`` queries x ``i_block`` rows; ``exclude_self``: int64 ``[Q]``, a row to
    skip per query (``-1``: none) or None. Slots beyond the eligible rows hold row ``-1`` and
    score ``-inf``. Query blocks are shared among ``n_threads`` threads (None: all CPUs);
    results do not depend on block sizes or threads. ``progress(done_queries, total)`` is
    called after each chunk of queries (from the worker threads, serialised by a lock).
    """
    v = _as_matrix(vectors)
    V, D = v.shape
    inv = _check_inv(inv_norms, V)
    k = _check_k(k)
    qs = np.asarray(queries)
    if qs.ndim != 2 or qs.shape[1] != D:
        raise ValueError(f"queries: shape {qs.shape} does not match [Q, {D}]")
    qs = _readonly(np.ascontiguousarray(qs, dtype=np.float32))
    Q = qs.shape[0]
    q_block, i_block = int(q_block), int(i_block)
    if q_block < 1 or i_block < 1:
        raise ValueError(f"q_block/i_block: must be >= 1 (got {q_block}/{i_block})")
    if exclude_self is None:
        skip = np.full(Q, -1, np.int64)
        K = k
    else:
        skip = np.asarray(exclude_self)
        if skip.shape != (Q,) or skip.dtype.kind not in "iu":
            raise ValueError(f"exclude_self: expected integer array of shape ({Q},), got {skip.dtype} {skip.shape}")
        skip = np.ascontiguousarray(skip, np.int64)
        if Q and skip.max() >= V:
            raise ValueError(f"exclude_self: row {int(skip.max())} is out of range [0, {V})")
        K = k + 1
    out_s = np.full((Q, k), -np.inf, np.float32)
    out_i = np.full((Q, k), -1, np.int64)
    if k == 0 or Q == 0:
        return out_s, out_i
    q_scale = np.empty(Q, np.float32)
    _inv_norms_kernel(qs, q_scale)
    q_scale = _readonly(q_scale)
    skip = _readonly(skip)

    n = _threads(n_threads)
    # chunks of whole query blocks. Every chunk packs all rows once, so chunks are large (at
    # least ~512 queries when there are enough), yet at least one per thread and up to 64 for
    # load balance and progress reports.
    n_chunks = max(1, min(Q, max(n, min(64, Q // 512))))
    per = q_block * max(1, -(-Q // (n_chunks * q_block)))
    chunks = [(lo, min(lo + per, Q)) for lo in range(0, Q, per)]
    lock = threading.Lock()
    state = {"next": 0, "done": 0}

    def worker():
        while True:
            with lock:
                c = state["next"]
                state["next"] += 1
            if c >= len(chunks):
                return
            lo, hi = chunks[c]
            hs = np.full((hi - lo, K), -np.inf, np.float32)
            hid = np.full((hi - lo, K), -1, np.int64)
            _tiles_kernel(v, inv, qs[lo:hi], q_scale[lo:hi], 0, hi - lo, q_block, i_block, hs, hid)
            _trim_kernel(hs, hid, skip[lo:hi], out_s[lo:hi], out_i[lo:hi])
            if progress is not None:
                with lock:
                    state["done"] += hi - lo
                    progress(state["done"], Q)

    _run_threads(worker, [()] * min(n, len(chunks)))
    return out_s, out_i


def build_neighbor_table(vectors, k, *, q_block=64, i_block=4096, n_threads=None, progress=None,
                         rows=None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's top-k rows by cosine, excluding itself: ``(neighbors int32[V, k], scores float32[V, k])``.

    Padding ``-1``/``-inf`` when fewer than k other rows exist. ``rows`` (optional int64 array)
    restricts the table to those query rows (``[len(rows), k]``), e.g. to time a build on a
    subset. ``progress(done, total)`` as in :func:`topk_batch`.
    """
    v = _as_matrix(vectors)
    V = v.shape[0]
    inv = np.empty(V, np.float32)
    _inv_norms_kernel(v, inv)
    if rows is None:
        queries, skip = v, np.arange(V, dtype=np.int64)
    else:
        skip = np.asarray(rows, dtype=np.int64)
        if skip.size and (skip.min() < 0 or skip.max() >= V):
            raise ValueError(f"rows: ids must be in [0, {V})")
        queries = v[skip]
    if V >= 2**31:
        raise ValueError(f"vectors: {V} rows do not fit the int32 neighbour table")
    s, i = topk_batch(v, inv, queries, k, exclude_self=skip, q_block=q_block, i_block=i_block,
                      n_threads=n_threads, progress=progress)
    return i.astype(np.int32), s


def session_vector(vectors, inv_norms, rows, weights) -> np.ndarray:
    """``float32 [D]``: ``sum_i weights[i] * vectors[rows[i]] * inv_norms[rows[i]]``.

    A weighted sum of unit vectors (zero rows contribute nothing); float64 accumulation. Empty
    ``rows`` give the zero vector.
    """
    v = _as_matrix(vectors)
    V, D = v.shape
    inv = _check_inv(inv_norms, V)
    r = np.asarray(rows)
    w = np.asarray(weights, dtype=np.float64)
    if r.ndim != 1 or w.shape != r.shape:
        raise ValueError(f"rows/weights: shapes {r.shape}/{w.shape} must be equal 1-d")
    if r.size and r.dtype.kind not in "iu":
        raise ValueError(f"rows: expected integer row ids, got dtype {r.dtype}")
    r = np.ascontiguousarray(r, np.int64)
    if r.size and (r.min() < 0 or r.max() >= V):
        bad = r.min() if r.min() < 0 else r.max()
        raise ValueError(f"rows: row {int(bad)} is out of range [0, {V})")
    out = np.zeros(D, np.float64)
    _session_kernel(v, inv, _readonly(r), _readonly(np.ascontiguousarray(w)), out)
    return out.astype(np.float32)


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
    v = _as_matrix(vectors)
    V, D = v.shape
    inv = _check_inv(inv_norms, V)
    c, sc = _check_codes(codes, scales, V, D)
    k = _check_k(k)
    q, q_scale = _query(query, D)
    ex = _exclude_rows(exclude, V)
    kk = min(k, V - ex.size)
    if kk <= 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    rr = max(4 * kk, kk + 32) if rerank is None else max(int(rerank), kk)
    _, cand = _scan(c, sc, q, q_scale, min(V, rr + ex.size), _threads(n_threads))
    s, rows = _rescore(v, inv, q, q_scale, cand[cand >= 0])
    return _finish(s, rows, ex, kk)


# exact-scan fallbacks of topk_exact_int8 since import (candidate buffer overflow or a query
# outside the bound's safe range); read by tests and benchmarks
EXACT_INT8_FALLBACKS = {"overflow": 0, "query": 0}


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
    falls back to :func:`topk`'s exact scan (same result, full float32 read). Fallbacks are
    counted in ``EXACT_INT8_FALLBACKS``; ``stats`` (a dict, optional) receives ``candidates``
    (rows re-scored, or -1) and ``fallback`` (None, ``"overflow"`` or ``"query"``).
    """
    v = _as_matrix(vectors)
    V, D = v.shape
    inv = _check_inv(inv_norms, V)
    c, sc = _check_codes(codes, scales, V, D)
    k = _check_k(k)
    q, q_scale = _query(query, D)
    ex = _exclude_rows(exclude, V)
    nt = _threads(n_threads)
    kk = min(k, V - ex.size)
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
        n = max(1, min(nt, V // MIN_ROWS_PER_THREAD))
        bounds = np.linspace(0, V, n + 1).astype(np.int64)
        hl = np.full((n, K), -np.inf, np.float64)
        hid = np.full((n, K), -1, np.int64)
        cand = np.empty((n, cap), np.int64)
        counts = np.zeros(n, np.int64)

        def part(t):
            counts[t] = _bound_scan_kernel(c, sc, inv, q, q_scale, l1, qnorm, cbound,
                                           int(bounds[t]), int(bounds[t + 1]), hl[t], hid[t], cand[t])

        _run_threads(part, [(t,) for t in range(n)])
        if (counts < 0).any():
            info["fallback"] = "overflow"
        else:
            rows = np.concatenate([cand[t, :counts[t]] for t in range(n)])
            info["candidates"] = int(rows.shape[0])
    if info["fallback"] is not None:
        with _POOL_LOCK:
            EXACT_INT8_FALLBACKS[info["fallback"]] += 1
        if stats is not None:
            stats.update(info)
        s, i = _scan(v, inv, q, q_scale, K, nt)
        return _finish(s, i, ex, kk)
    if stats is not None:
        stats.update(info)
    s, rows = _rescore(v, inv, q, q_scale, rows)
    return _finish(s[:K], rows[:K], ex, kk)
