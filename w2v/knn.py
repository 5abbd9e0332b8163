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
threads) never contend for a Numba threading layer (`data_prep.parallel`). The reduced-precision
int8 scans that the benchmark compares are in `w2v.knn_int8`.
"""
from __future__ import annotations


import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from data_prep.parallel import check_threads, default_threads, run_chunks, run_tasks, split_ranges

__all__ = [
    "inverse_norms", "normalize_rows", "topk", "topk_batch", "build_neighbor_table",
    "session_vector", "scan_score", "heap_push", "heap_replace_root", "heap_sort", "default_threads",
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
def _outer4x16_codegen(context, builder, signature, args, with_hits):
    qt_v, i_v, vp_v, p_v, out_v = args[:5]
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
    if not with_hits:
        return context.get_dummy_value()
    thr_a = context.make_array(signature.args[5])(context, builder, args[5])
    i16 = ir.IntType(16)
    mask = ir.Constant(i64, 0)
    for r in range(4):
        t = builder.load(builder.gep(thr_a.data, [ir.Constant(i64, r)], source_etype=fl), typ=fl)
        tb = builder.shuffle_vector(builder.insert_element(undef, t, ir.Constant(i32, 0)), undef, splat)
        lanes = builder.bitcast(builder.fcmp_ordered(">=", res[r], tb), i16)
        hit = builder.zext(builder.icmp_unsigned("!=", lanes, ir.Constant(i16, 0)), i64)
        mask = builder.or_(mask, builder.shl(hit, ir.Constant(i64, r)))
    return mask


def _outer4x16_types(qt, vp, out):
    f32 = types.float32
    return (isinstance(qt, types.Array) and qt.dtype == f32 and qt.ndim == 2 and qt.layout == "C"
            and isinstance(vp, types.Array) and vp.dtype == f32 and vp.ndim == 3 and vp.layout == "C"
            and isinstance(out, types.Array) and out.dtype == f32 and out.ndim == 2 and out.layout == "C")


@intrinsic
def _outer4x16(typingctx, qt, i, vp, p, out):
    if not _outer4x16_types(qt, vp, out):
        return None
    return types.void(qt, i, vp, p, out), lambda c, b, s, a: _outer4x16_codegen(c, b, s, a, False)


# _outer4x16 followed by the heap pre-test of the scans: also returns a bit mask (int64) whose
# bit r is set when some lane l < 16 has out[r, l] >= thr[r] (an ordered comparison: NaN never
# sets a bit; thr[r] = +inf never does, -inf does for any finite score). The callers pass each
# query's heap-root score, so a clear bit means no lane of that query can enter its heap under
# the total order, and the 64 scalar tests are skipped; lanes of a set bit (including padding
# lanes, which hold 0) are then tested one by one as before. thr: float32 [4] C-contiguous.
@intrinsic
def _outer4x16_hits(typingctx, qt, i, vp, p, out, thr):
    f32 = types.float32
    if not (_outer4x16_types(qt, vp, out) and isinstance(thr, types.Array) and thr.dtype == f32
            and thr.ndim == 1 and thr.layout == "C"):
        return None
    return types.int64(qt, i, vp, p, out, thr), lambda c, b, s, a: _outer4x16_codegen(c, b, s, a, True)


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
# micro-kernel _outer4x16_hits computes 64 scores and flags the queries with a lane >= their heap
# root; only their lanes are tested against the root (kept in a local, re-read only after a
# replacement) before any heap work. Rows reach every heap in
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
    thr = np.empty(4, np.float32)
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
                    nr = min(4, nq - ii)
                    for r in range(4):
                        thr[r] = hs[qb0 + ii + r, 0] if r < nr else np.inf
                    if _outer4x16_hits(qt, ii, vp, p, acc, thr) == 0:
                        continue
                    for r in range(nr):
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
# Session vector
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


# --------------------------------------------------------------------------------------------
# Wrappers
# --------------------------------------------------------------------------------------------

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
    return check_threads(n_threads, "n_threads")


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


def _single_query(vectors, inv_norms, query, k, exclude):
    """Validated inputs of one query: ``(v, inv, q, q_scale, excluded rows, k' = min(k, eligible rows))``."""
    v = _as_matrix(vectors)
    V, D = v.shape
    inv = _check_inv(inv_norms, V)
    k = _check_k(k)
    q, q_scale = _query(query, D)
    ex = _exclude_rows(exclude, V)
    return v, inv, q, q_scale, ex, min(k, V - ex.size)


def _scan(vectors, row_scale, q, q_scale, K, n_threads) -> tuple[np.ndarray, np.ndarray]:
    """Best K rows of a one-pass scan, split over n_threads row ranges; sorted best first."""
    ranges = split_ranges(vectors.shape[0], n_threads, MIN_ROWS_PER_THREAD)
    n = len(ranges)
    hs = np.full((n, K), -np.inf, np.float32)
    hid = np.full((n, K), -1, np.int64)
    run_tasks(_scan_kernel, [(vectors, row_scale, q, q_scale, lo, hi, hs[t], hid[t])
                             for t, (lo, hi) in enumerate(ranges)])
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
    v, inv, q, q_scale, ex, kk = _single_query(vectors, inv_norms, query, k, exclude)
    if kk <= 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    s, i = _scan(v, inv, q, q_scale, kk + ex.size, _threads(n_threads))
    return _finish(s, i, ex, kk)


def batch_queries(queries, D: int, V: int, k: int, exclude_self) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked inputs of a batched top-k over ``V`` rows of dimension ``D``: ``(queries`` float32
    ``[Q, D]`` read-only C-contiguous, ``skip`` int64 ``[Q]`` (the row each query excludes, ``-1``:
    none), ``K`` = heap width: ``k``, or ``k + 1`` when rows are excluded``)``. Shared by
    :func:`topk_batch` and ``w2v.ivf``; raises ``ValueError`` naming the argument."""
    qs = np.asarray(queries)
    if qs.ndim != 2 or qs.shape[1] != D:
        raise ValueError(f"queries: shape {qs.shape} does not match [Q, {D}]")
    qs = _readonly(np.ascontiguousarray(qs, dtype=np.float32))
    Q = qs.shape[0]
    if exclude_self is None:
        return qs, np.full(Q, -1, np.int64), k
    skip = np.asarray(exclude_self)
    if skip.shape != (Q,) or skip.dtype.kind not in "iu":
        raise ValueError(f"exclude_self: expected integer array of shape ({Q},), got {skip.dtype} {skip.shape}")
    skip = np.ascontiguousarray(skip, np.int64)
    if Q and skip.max() >= V:
        raise ValueError(f"exclude_self: row {int(skip.max())} is out of range [0, {V})")
    return qs, skip, k + 1


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
    q_block, i_block = int(q_block), int(i_block)
    if q_block < 1 or i_block < 1:
        raise ValueError(f"q_block/i_block: must be >= 1 (got {q_block}/{i_block})")
    qs, skip, K = batch_queries(queries, D, V, k, exclude_self)
    Q = qs.shape[0]
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

    def scan(lo, hi):
        hs = np.full((hi - lo, K), -np.inf, np.float32)
        hid = np.full((hi - lo, K), -1, np.int64)
        _tiles_kernel(v, inv, qs[lo:hi], q_scale[lo:hi], 0, hi - lo, q_block, i_block, hs, hid)
        _trim_kernel(hs, hid, skip[lo:hi], out_s[lo:hi], out_i[lo:hi])

    run_chunks(chunks, n, scan, progress)
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
