"""Job-by-job replay of gensim 4.4 against our parity mode: the parity oracle at realistic size.

Used by tests/test_w2v_parity_scale.py (50,000 sessions) and bench/bench_parity.py (200,000). What it does, for one training run of ``epochs`` epochs:

* builds gensim ``Word2Vec(sg=1, hs=0, workers=1)`` on the corpus as ``str`` tokens (never
  ``int``: see docs/ALGORITHM.md section 12.1 on gensim's int-token table) and our
  ``Word2Vec(mode="parity")`` on the same aids, and checks that the vocabulary, counts,
  ``sample_int``, ``cum_table`` and initial vectors are equal;
* lets gensim's own ``_job_producer`` cut each epoch into jobs (with their learning rates) and
  checks our schedule (``Word2Vec.parity_jobs``) against it, job by job;
* trains each job with gensim's own ``train_batch_sg`` and with our parity kernels, and compares
  the ``RandomState`` streams and both weight matrices after every job;
* at the first job after which the weights differ, re-runs that job on a copy of the weights as
  they were before it, recording every dot product whose sigmoid-table decision could depend on
  how it is rounded (a table-index boundary or +-6 lies within ``B = (gamma_D + 2**-19) * sum |x_a y_a|``
  of the exact value: ``gamma_D`` bounds float32 summation in any order, ``2**-19`` the way gensim
  reads ``sdot``'s result, see ``gensim_dot``); for those it computes gensim's value through the
  same BLAS pointer gensim calls, in the same way, and the exactly rounded float64 value
  (``math.fsum``), and reports the first term whose decision differs: the *flip*. If the weights
  differ but no decision flipped, the replay raises (the update steps themselves would differ);
* ``resync=True`` then copies gensim's weights into ours and goes on, so every job that contains
  a flip is found (the first flip of each such job is reported; later terms of that job already
  start from different weights); ``resync=False`` lets the two trajectories run apart and records
  the per-epoch max / mean |difference|;
* ``emulate_gensim_dot=True`` trains our side with ``_emulated_job`` instead: our schedule and
  update with gensim's dot product (``gensim_dot_model``, a Numba port of ``openblas_sdot_model``
  including gensim's reading of the result) substituted, and requires bit-identical weights after
  every job. That it holds shows the dot product is the only difference.

Our side trains each job exactly as the trainer does (``Word2Vec.parity_jobs``, then
``kernels.parity_train_jobs``); tests/test_w2v_parity_scale.py also checks the result against
``Word2Vec.train`` bit for bit, so what is compared to gensim is the trainer itself.
"""
from __future__ import annotations

import functools
import math
import queue
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

from w2v import kernels
from w2v.config import W2VConfig
from w2v.trainer import Word2Vec, job_alphas

# the issue-sized settings (gensim's defaults except window 10, min_count 1)
PARAMS = dict(vector_size=100, window=10, negative=5, sample=1e-3, min_count=1, seed=1, alpha=0.025,
              min_alpha=0.0001, ns_exponent=0.75, batch_words=10000)
U32 = 2.0 ** -24   # unit roundoff of float32
U64 = 2.0 ** -53


# ------------------------------------------------------------------------------------- corpus
def synth_corpus(n_sessions: int, n_test: int, seed: int = 0,
                 n_items: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n_sessions`` training sessions and ``n_test`` held-out ones from data_prep.synth (aids per
    session, event order) over ``n_items`` items (default: the generator's own
    ``default_items(n_sessions + n_test)``)."""
    from data_prep import synth

    n = n_sessions + n_test
    catalog = synth.build_catalog(synth.default_items(n) if n_items is None else n_items, seed)
    offsets, aid, *_ = synth.generate_batch(catalog, 0, n, n, seed)
    aid = np.asarray(aid, np.int64)
    sessions = [aid[offsets[i]:offsets[i + 1]] for i in range(n)]
    return sessions[:n_sessions], sessions[n_sessions:]


def heldout_pairs(test: list[np.ndarray], row_of: dict, max_pairs: int, seed: int = 0):
    """Consecutive held-out pairs a -> b (a != b, both in the vocabulary) as (query rows, target rows)."""
    src, dst = [], []
    for s in test:
        for a, b in zip(s[:-1].tolist(), s[1:].tolist()):
            if a != b and a in row_of and b in row_of:
                src.append(row_of[a])
                dst.append(row_of[b])
    src, dst = np.array(src, np.int64), np.array(dst, np.int64)
    if src.shape[0] > max_pairs:
        sel = np.sort(np.random.default_rng(seed).choice(src.shape[0], max_pairs, replace=False))
        src, dst = src[sel], dst[sel]
    return src, dst


def recall_hits(vectors: np.ndarray, q_rows: np.ndarray, t_rows: np.ndarray, k: int = 20) -> np.ndarray:
    """bool [n]: is the target among the ``k`` rows of highest cosine to the query (query excluded)."""
    v = vectors.astype(np.float64)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)
    hits = np.zeros(q_rows.shape[0], bool)
    for lo in range(0, q_rows.shape[0], 512):
        q = q_rows[lo:lo + 512]
        sims = v[q] @ v.T
        sims[np.arange(q.shape[0]), q] = -np.inf
        t = t_rows[lo:lo + 512]
        target = sims[np.arange(q.shape[0]), t]
        # rank = rows strictly better, plus equal rows of smaller id (score desc, id asc)
        better = (sims > target[:, None]).sum(1) + ((sims == target[:, None]) & (np.arange(v.shape[0]) < t[:, None])).sum(1)
        hits[lo:lo + 512] = better < k
    return hits


def recall_agreement(h_ours: np.ndarray, h_gensim: np.ndarray) -> dict:
    """Both recalls, the standard error of their difference as two independent binomial estimates
    (``sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n)``) and the difference in those units."""
    n = h_ours.shape[0]
    p1, p2 = float(h_ours.mean()), float(h_gensim.mean())
    se = math.sqrt(p1 * (1 - p1) / n + p2 * (1 - p2) / n)
    return dict(pairs=int(n), recall_ours=p1, recall_gensim=p2, se=se,
                z=(abs(p1 - p2) / se if se > 0 else (0.0 if p1 == p2 else math.inf)))


# ------------------------------------------------------------------------------ flip location
@njit(cache=True, nogil=True, fastmath=kernels._FM)
def _traced_job(syn0, syn1neg, eff, bounds, n_sent, reduced, state, alpha, window, negative, cum_table,
                exp_table, work, gamma, cand_meta, cand_val, cand_rows):
    """Our parity update of one prepared job (the loops of ``kernels.train_span`` / ``sgns_pair``,
    gensim's skip rule at |f| >= 6), recording the terms whose decision is order-sensitive.

    For each term: ``x`` = float64 sum of the exact float32 products, ``B = gamma * sum |p_a|``
    (gamma covers float32 summation in any order, the float64 sum and gensim's reading of sdot). The term is a candidate
    when [x - B, x + B] contains a table-index boundary or +-6. Candidates (up to C) get
    cand_meta[c] = (sentence, i, j, d, target, word2), cand_val[c] = (our f32 dot, x) and the two
    rows as they were (cand_rows[c, 0] = syn0[word2], [c, 1] = syn1neg[target]).
    Returns (number of candidates seen, final LCG state).
    """
    d_len = syn0.shape[1]
    n_c = 0
    cap = cand_meta.shape[0]
    for q in range(n_sent):
        s0 = bounds[q]
        s1 = bounds[q + 1]
        for i in range(s0, s1):
            b = reduced[i]
            j0 = max(s0, i - window + b)
            j1 = min(s1, i + window + 1 - b)
            for j in range(j0, j1):
                if j == i:
                    continue
                word = eff[i]
                word2 = eff[j]
                for a in range(d_len):
                    work[a] = np.float32(0.0)
                l1 = syn0[word2]
                for d in range(negative + 1):
                    if d == 0:
                        target = np.int64(word)
                        label = np.float32(1.0)
                    else:
                        x_r = (state >> np.uint64(16)) % np.uint64(cum_table[cum_table.shape[0] - 1])
                        target = kernels.bisect_left(cum_table, x_r)
                        state = kernels.lcg_next(state)
                        if target == word:
                            continue
                        label = np.float32(0.0)
                    l2 = syn1neg[target]
                    f_dot = np.float32(0.0)
                    for a in range(d_len):
                        f_dot += l1[a] * l2[a]
                    x = 0.0
                    sa = 0.0
                    for a in range(d_len):
                        p = np.float64(l1[a]) * np.float64(l2[a])
                        x += p
                        sa += abs(p)
                    bnd = gamma * sa
                    lo = x - bnd
                    hi = x + bnd
                    risky = lo <= -6.0 <= hi or lo <= 6.0 <= hi
                    if not risky and -6.0 < lo and hi < 6.0:
                        risky = int((lo + 6.0) * 83.0) != int((hi + 6.0) * 83.0)
                    if risky:
                        if n_c < cap:
                            cand_meta[n_c, 0] = q
                            cand_meta[n_c, 1] = i
                            cand_meta[n_c, 2] = j
                            cand_meta[n_c, 3] = d
                            cand_meta[n_c, 4] = target
                            cand_meta[n_c, 5] = word2
                            cand_val[n_c, 0] = np.float64(f_dot)
                            cand_val[n_c, 1] = x
                            for a in range(d_len):
                                cand_rows[n_c, 0, a] = l1[a]
                                cand_rows[n_c, 1, a] = l2[a]
                        n_c += 1
                    if f_dot <= -kernels.MAX_EXP or f_dot >= kernels.MAX_EXP:
                        continue
                    f = kernels.sigmoid_lookup(exp_table, f_dot)
                    g = (label - f) * alpha
                    for a in range(d_len):
                        s1v = l2[a]
                        work[a] += g * s1v
                        l2[a] = s1v + g * l1[a]
                for a in range(d_len):
                    l1[a] += work[a]
    return n_c, state


_GENSIM_DOT = None


def gensim_dot(x: np.ndarray, y: np.ndarray) -> float:
    """The float32 dot product exactly as gensim 4.4's ``w2v_fast_sentence_sg_neg`` gets it.

    gensim calls ``scipy.linalg.blas.sdot._cpointer`` through a function-pointer type that returns
    ``double`` (``our_dot_double``) whenever its start-up probe ``dsdot([10], [0.01])`` is within
    1e-4 of 0.1 (``FAST_VERSION == 0``), then casts the double to float32. scipy's OpenBLAS ``sdot``
    returns a *float*: the double gensim reads is the float's 32 bits below the upper half of the
    register's previous content (OpenBLAS's double accumulator), so gensim's dot keeps about 20
    correct bits of mantissa and then the float's own bit pattern. We call the same pointer the
    same way (ctypes) to get the same value.
    """
    global _GENSIM_DOT
    if _GENSIM_DOT is None:
        import ctypes

        import scipy.linalg.blas as fblas
        get = ctypes.pythonapi.PyCapsule_GetPointer
        get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        pi, pf = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_float)
        fn = ctypes.CFUNCTYPE(ctypes.c_double, pi, pf, pi, pf, pi)(get(fblas.sdot._cpointer, None))
        one = ctypes.c_int(1)

        def call(a, b):
            n = ctypes.c_int(a.shape[0])
            return fn(ctypes.byref(n), a.ctypes.data_as(pf), ctypes.byref(one), b.ctypes.data_as(pf),
                      ctypes.byref(one))
        _GENSIM_DOT = call
    from gensim.models.word2vec_inner import FAST_VERSION
    if FAST_VERSION != 0:
        raise RuntimeError(f"gensim FAST_VERSION {FAST_VERSION}: this replay models FAST_VERSION 0 only")
    return float(np.float32(_GENSIM_DOT(np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.float32))))


def openblas_sdot_model(x: np.ndarray, y: np.ndarray, avx512: bool = True) -> tuple[float, float]:
    """A model of scipy's OpenBLAS 0.3.30 ``sdot`` (x86-64 kernel, unit strides): (the float32 it
    returns, the double gensim reads from it), both widened to Python floats.

    The first ``n1 = n & -32`` terms go through the SIMD kernel: with AVX-512, blocks of 64 into
    four 16-lane float32 fused-multiply-add accumulators, folded to four 8-lane ones (lane l + lane
    l + 8); then blocks of 32 into the four 8-lane accumulators; then ``((a0 + a1) + a2) + a3``
    lane-wise, the upper 4 lanes added to the lower 4, two horizontal adds. The last ``n - n1``
    products (float32) are summed in a double, the kernel's float32 added last; the function
    returns that double rounded to float32. gensim reads the return register as a double: its upper
    32 bits are the upper half of that double, its lower 32 bits the float's bit pattern. Used by
    bench/bench_parity.py to show the model matches the pointer on this machine; ported to Numba
    as ``gensim_dot_model`` for the emulated replay (the flip locator calls the pointer)."""
    import struct

    x = np.ascontiguousarray(x, np.float32)
    y = np.ascontiguousarray(y, np.float32)
    n = x.shape[0]
    n1 = n & -32

    def fma(a, b, c):
        return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)

    kern = np.float32(0.0)
    if n1:
        acc = [np.zeros(8, np.float32) for _ in range(4)]
        i = 0
        if avx512:
            a5 = [np.zeros(16, np.float32) for _ in range(4)]
            while i < (n1 & ~63):
                for k in range(4):
                    a5[k] = fma(x[i + 16 * k:i + 16 * k + 16], y[i + 16 * k:i + 16 * k + 16], a5[k])
                i += 64
            acc = [(a[:8] + a[8:]).astype(np.float32) for a in a5]
        while i < n1:
            for k in range(4):
                acc[k] = fma(x[i + 8 * k:i + 8 * k + 8], y[i + 8 * k:i + 8 * k + 8], acc[k])
            i += 32
        a = ((acc[0] + acc[1]) + acc[2]) + acc[3]
        h = (a[:4] + a[4:]).astype(np.float32)
        h = np.array([h[0] + h[1], h[2] + h[3]], np.float32)
        kern = np.float32(h[0] + h[1])
    dd = 0.0
    for i in range(n1, n):
        dd += float(np.float32(y[i] * x[i]))
    dd += float(kern)
    ret = np.float32(dd)
    hi = struct.unpack("<Q", struct.pack("<d", dd))[0] >> 32
    lo = struct.unpack("<I", struct.pack("<f", ret))[0]
    read = struct.unpack("<d", struct.pack("<Q", (hi << 32) | lo))[0]
    return float(ret), read


# ------------------------------------------------------------------ gensim's dot, emulated
@intrinsic
def _fma32(typingctx, a, b, c):
    """``a * b + c`` for float32 with a single rounding (LLVM ``llvm.fma.f32``), as a vector FMA lane."""
    if not all(t == types.float32 for t in (a, b, c)):
        return None
    sig = types.float32(a, b, c)

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f, f]), "llvm.fma.f32")
        return builder.call(fn, list(args))
    return sig, codegen


@intrinsic
def _read_as_double(typingctx, dd):
    """The double gensim reads after OpenBLAS ``sdot`` returned ``float32(dd)``: upper 32 bits those
    of ``dd`` (what the register held), lower 32 bits the float's bit pattern (``openblas_sdot_model``)."""
    if dd != types.float64:
        return None
    sig = types.float64(dd)

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        ret = builder.fptrunc(args[0], ir.FloatType())
        lo = builder.zext(builder.bitcast(ret, i32), i64)
        hi = builder.and_(builder.bitcast(args[0], i64), ir.Constant(i64, 0xFFFFFFFF00000000))
        return builder.bitcast(builder.or_(hi, lo), ir.DoubleType())
    return sig, codegen


@njit(cache=True, nogil=True, fastmath=False)
def gensim_dot_model(x, y, acc, avx512):
    """Numba port of ``openblas_sdot_model``: the float32 gensim's ``w2v_fast_sentence_sg_neg``
    computes for ``x . y`` (``<REAL_t>our_dot_double(...)`` with FAST_VERSION 0 on this BLAS).

    x, y: float32 [n] (n >= 0, unit stride); acc: float32 [2, 8] scratch; avx512: the 64-term
    16-lane blocks first (OpenBLAS's AVX-512 kernel) or only the 32-term 8-lane blocks (AVX2).
    Compiled without fast-math (explicitly: Numba would otherwise inherit the caller's flags), so
    every operation is the one the model names, in its order; the lane FMAs are ``llvm.fma.f32``.
    """
    n = x.shape[0]
    n1 = n & -32
    n64 = n1 & -64 if avx512 else 0
    kern = np.float32(0.0)
    if n1:
        # lane l of 8-lane accumulator k, each chain kept in a register (the lanes are independent)
        for lane in range(8):
            s = np.float32(0.0)
            for k in range(4):
                v = np.float32(0.0)
                if n64:
                    lo = np.float32(0.0)
                    hi = np.float32(0.0)
                    for i in range(0, n64, 64):
                        lo = _fma32(x[i + 16 * k + lane], y[i + 16 * k + lane], lo)
                        hi = _fma32(x[i + 16 * k + lane + 8], y[i + 16 * k + lane + 8], hi)
                    v = lo + hi
                for i in range(n64, n1, 32):
                    v = _fma32(x[i + 8 * k + lane], y[i + 8 * k + lane], v)
                s = v if k == 0 else s + v
            acc[0, lane] = s
        for lane in range(4):
            acc[1, lane] = acc[0, lane] + acc[0, lane + 4]
        kern = (acc[1, 0] + acc[1, 1]) + (acc[1, 2] + acc[1, 3])
    dd = 0.0
    for i in range(n1, n):
        dd += np.float64(y[i] * x[i])
    dd += np.float64(kern)
    return np.float32(_read_as_double(dd))


def probe_sdot_model(n: int = 300, seed: int = 0) -> bool | None:
    """Which variant of the sdot model reproduces, on ``n`` random vectors (lengths 1..299), the
    value gensim gets from this machine's BLAS pointer (``gensim_dot``): True (AVX-512 kernel),
    False (AVX2), or None when neither matches every vector (then the emulation does not apply)."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((2, 8), np.float32)
    ok = {True: 0, False: 0}
    for _ in range(n):
        d = int(rng.integers(1, 300))
        x = (rng.standard_normal(d) * 0.1).astype(np.float32)
        y = rng.standard_normal(d).astype(np.float32)
        g = gensim_dot(x, y)
        for v in ok:
            ok[v] += float(gensim_dot_model(x, y, acc, v)) == g
    for v in (True, False):
        if ok[v] == n:
            return v
    return None


@functools.lru_cache(maxsize=None)
def saxpy_unfused_lanes(d: int, n: int = 200, seed: int = 0) -> list[int]:
    """The positions ``i < d`` where this machine's BLAS ``saxpy`` (the one gensim's update calls,
    through scipy) does not round ``a * x[i] + y[i]`` once, as a fused multiply-add does, on ``n``
    random length-``d`` vectors; empty when it is fused everywhere. Our parity update rounds once
    in every lane, so the replay's bit-identity holds only where this is empty (OpenBLAS's AVX2
    kernel, for example, leaves the lanes past the last multiple of 32 unfused: 96..99 at d 100)."""
    from scipy.linalg import blas

    rng = np.random.default_rng(seed)
    bad = np.zeros(d, bool)
    for _ in range(n):
        x = rng.standard_normal(d).astype(np.float32)
        y = rng.standard_normal(d).astype(np.float32)
        a = np.float32(rng.standard_normal() * 0.01)
        once = np.empty(d, np.float32)
        _fused_axpy(a, x, y, once)
        bad |= blas.saxpy(x, y.copy(), a=a) != once
    return np.flatnonzero(bad).tolist()


@njit(cache=True, nogil=True)
def _fused_axpy(a, x, y, out):
    """out[i] = a * x[i] + y[i] rounded once (``_fma32``), float32."""
    for i in range(x.shape[0]):
        out[i] = _fma32(a, x[i], y[i])


@njit(cache=True, nogil=True, fastmath=kernels._FM)
def _emulated_job(syn0, syn1neg, eff, bounds, n_sent, reduced, state, alpha, window, negative, cum_table,
                  exp_table, work, acc, avx512):
    """Our parity update of one prepared job (the loops of ``kernels.train_span`` / ``sgns_pair``,
    the same fast-math licence for the updates, ``kernels.sigmoid_lookup`` for the index) with one
    substitution: each dot product is ``gensim_dot_model`` instead of our float32 sum. Returns the
    final LCG state. If this reproduces gensim bit for bit, the dot product is the only difference."""
    d_len = syn0.shape[1]
    for q in range(n_sent):
        s0 = bounds[q]
        s1 = bounds[q + 1]
        for i in range(s0, s1):
            b = reduced[i]
            j0 = max(s0, i - window + b)
            j1 = min(s1, i + window + 1 - b)
            for j in range(j0, j1):
                if j == i:
                    continue
                word = eff[i]
                word2 = eff[j]
                for a in range(d_len):
                    work[a] = np.float32(0.0)
                l1 = syn0[word2]
                for d in range(negative + 1):
                    if d == 0:
                        target = np.int64(word)
                        label = np.float32(1.0)
                    else:
                        x_r = (state >> np.uint64(16)) % np.uint64(cum_table[cum_table.shape[0] - 1])
                        target = kernels.bisect_left(cum_table, x_r)
                        state = kernels.lcg_next(state)
                        if target == word:
                            continue
                        label = np.float32(0.0)
                    l2 = syn1neg[target]
                    f_dot = gensim_dot_model(l1, l2, acc, avx512)
                    if f_dot <= -kernels.MAX_EXP or f_dot >= kernels.MAX_EXP:
                        continue
                    f = kernels.sigmoid_lookup(exp_table, f_dot)
                    g = (label - f) * alpha
                    for a in range(d_len):
                        s1v = l2[a]
                        work[a] += g * s1v
                        l2[a] = s1v + g * l1[a]
                for a in range(d_len):
                    l1[a] += work[a]
    return state


def decision(f: float) -> str | int:
    """What the update does with a float32 dot ``f``: 'skip' (|f| >= 6) or the sigmoid-table index."""
    if f <= -6.0 or f >= 6.0:
        return "skip"
    return int((float(f) + 6.0) * 83.0)


@dataclass
class Flip:
    """The first term of a job whose sigmoid-table decision differs between ours and gensim."""

    epoch: int
    job: int
    sentence: int          # corpus index of the session
    centre_aid: int        # the pair (word = centre, word2 = context)
    context_aid: int
    term: int              # 0 = the positive, k >= 1 = the k-th negative draw
    target_aid: int
    dot_ours: float        # float32 values, widened
    dot_gensim: float      # as gensim reads it (``gensim_dot``)
    dot_sdot: float        # what OpenBLAS sdot returns (scipy.linalg.blas.sdot)
    dot_exact: float       # exactly rounded float64 value of the exact dot product
    decision_ours: object
    decision_gensim: object
    candidates: int        # order-sensitive terms screened in the job before the flip

    def describe(self) -> str:
        kind = "positive" if self.term == 0 else f"negative {self.term}"
        return (f"epoch {self.epoch} job {self.job}: session {self.sentence}, pair (centre {self.centre_aid}, "
                f"context {self.context_aid}), {kind} (target {self.target_aid}): dot ours {self.dot_ours:.9g} "
                f"-> {self.decision_ours}, gensim {self.dot_gensim:.9g} -> {self.decision_gensim} (sdot returns "
                f"{self.dot_sdot:.9g}), exact "
                f"{self.dot_exact:.9g} ({self.candidates} order-sensitive terms screened before it)")


def locate_flip(pre_vectors, pre_output, jobs: kernels.ParityJobs, cfg: W2VConfig, tables, aids, epoch: int,
                job: int, first_sentence: int, after_vectors, after_output) -> Flip | None:
    """Re-run one prepared job (``jobs`` holds just it) from the weights ``pre_*`` with the tracer;
    return the first order-sensitive term whose decision differs with gensim's ``sdot``, or None.
    Checks that the tracer reproduces the kernel's result (``after_*``)."""
    from scipy.linalg import blas

    s_int, c_tab, e_tab = tables
    syn0, syn1 = pre_vectors.copy(), pre_output.copy()
    D = syn0.shape[1]
    cap = 200_000
    meta = np.zeros((cap, 6), np.int64)
    val = np.zeros((cap, 2), np.float64)
    rows = np.zeros((cap, 2, D), np.float32)
    gamma = D * U32 / (1 - D * U32) + D * U64 / (1 - D * U64) + 2.0 ** -19
    n_c, _ = _traced_job(syn0, syn1, jobs.eff, jobs.bounds, int(jobs.n_sent[0]), jobs.reduced, jobs.state[0],
                         jobs.alpha[0], cfg.window, cfg.negative, c_tab, e_tab, np.zeros(D, np.float32), gamma,
                         meta, val, rows)
    if not (np.array_equal(syn0, after_vectors) and np.array_equal(syn1, after_output)):
        raise AssertionError(f"epoch {epoch} job {job}: the tracer does not reproduce the parity kernel")
    if n_c > cap:
        raise AssertionError(f"epoch {epoch} job {job}: {n_c} order-sensitive terms (more than {cap})")
    for c in range(n_c):
        ours = float(np.float32(val[c, 0]))
        g = gensim_dot(rows[c, 0], rows[c, 1])
        if decision(ours) != decision(g):
            q, i, j, d, target, word2 = (int(v) for v in meta[c])
            eff = jobs.eff
            exact = math.fsum(float(a) * float(b) for a, b in zip(rows[c, 0].tolist(), rows[c, 1].tolist()))
            return Flip(epoch=epoch, job=job, sentence=first_sentence + q, centre_aid=int(aids[eff[i]]),
                        context_aid=int(aids[word2]), term=d, target_aid=int(aids[target]), dot_ours=ours,
                        dot_gensim=g, dot_sdot=float(np.float32(blas.sdot(rows[c, 0], rows[c, 1]))), dot_exact=exact, decision_ours=decision(ours), decision_gensim=decision(g),
                        candidates=c)
    return None


# ------------------------------------------------------------------------------------- replay
@dataclass
class Replay:
    epochs: int
    jobs_per_epoch: int
    vocab: int
    raw_words: int
    identical_jobs: int = 0                 # jobs after which the weights were still bit-identical
    first_flip: Flip | None = None
    flips: list = field(default_factory=list)      # resync=True: the first flip of every job that has one
    epoch_diffs: list = field(default_factory=list)  # per epoch: max / mean |difference| of both matrices
    emulated: bool | None = None            # emulate_gensim_dot: the sdot-model variant used (True: AVX-512)
    ours: Word2Vec | None = None
    gensim: object = None
    seconds: float = 0.0


def _both_models(sentences: list[np.ndarray], params: dict | None, epochs: int):
    """``(str sentences, ours, gensim)``, both sides with their vocabulary built (gensim on ``str``
    tokens) and not trained; raises if the vocabulary orders differ."""
    params = dict(PARAMS if params is None else params)
    sents_str = [[str(w) for w in s.tolist()] for s in sentences]
    g = _gensim_model(sents_str, params, epochs)
    cfg = W2VConfig(mode="parity", workers=1, epochs=epochs, compute_loss=False, **params)
    ours = Word2Vec(cfg).build_vocab_from_sequences(sentences)
    if [str(a) for a in ours.aids.tolist()] != g.wv.index_to_key:
        raise AssertionError("vocabulary order differs from gensim's")
    return sents_str, ours, g


def _gensim_model(sentences_str, params: dict, epochs: int):
    from gensim.models import word2vec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = word2vec.Word2Vec(sg=1, hs=0, workers=1, epochs=epochs, **params)
        g.build_vocab(sentences_str)
    return g


def train_both(sentences: list[np.ndarray], epochs: int, params: dict | None = None):
    """gensim (``str`` tokens, ``workers=1``) and our parity mode, each trained by its own ``train``
    on the same corpus and settings, with no job-by-job comparison: ``(ours, gensim)``. What the
    held-out comparison uses where the replay cannot run (see ``saxpy_unfused_lanes``)."""
    sents_str, ours, g = _both_models(sentences, params, epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g.train(sents_str, total_examples=len(sents_str), epochs=epochs)
    ours.train(progress=False)
    return ours, g


def _diffs(a: Word2Vec, g) -> dict:
    dv = np.abs(a.vectors - g.wv.vectors)
    du = np.abs(a.output - g.syn1neg)
    return dict(vectors_max=float(dv.max()), vectors_mean=float(dv.mean()),
                output_max=float(du.max()), output_mean=float(du.mean()))


def replay(sentences: list[np.ndarray], epochs: int, params: dict | None = None, resync: bool = False,
           progress=None, emulate_gensim_dot: bool = False) -> Replay:
    """Train gensim and our parity mode side by side, job by job (see the module docstring).
    ``progress`` (callable of a str) receives each flip and each epoch's differences.

    ``emulate_gensim_dot``: train our side with ``_emulated_job`` (our schedule and update, gensim's
    dot product as ``gensim_dot_model``, the variant ``probe_sdot_model`` finds on this machine)
    and require bit-identical weights after every job: the first job that differs raises
    (``resync`` is ignored). Raises RuntimeError when the model does not match this machine's BLAS."""
    from gensim.models.word2vec_inner import train_batch_sg

    avx512 = None
    if emulate_gensim_dot:
        avx512 = probe_sdot_model()
        if avx512 is None:
            raise RuntimeError("the sdot model does not reproduce this machine's BLAS pointer: no emulation")
    t_start = time.perf_counter()
    sents_str, ours, g = _both_models(sentences, params, epochs)
    cfg = ours.config
    tables = ours.tables()
    s_int, c_tab, e_tab = tables
    checks = [("counts", ours.counts, np.array([g.wv.get_vecattr(k, "count") for k in g.wv.index_to_key])),
              ("sample_int", s_int, g.wv.expandos["sample_int"]), ("cum_table", c_tab, g.cum_table),
              ("initial vectors", ours.vectors, g.wv.vectors), ("initial output", ours.output, g.syn1neg)]
    for name, a, b in checks:
        if not np.array_equal(a, b):
            raise AssertionError(f"{name} differ from gensim's before training")
    corpus = ours.corpus
    job_starts = kernels.gensim_jobs(corpus.raw_lengths, cfg.batch_words)
    n_jobs = job_starts.shape[0] - 1
    res = Replay(epochs=epochs, jobs_per_epoch=int(n_jobs), vocab=int(ours.aids.shape[0]),
                 raw_words=int(corpus.raw_words), ours=ours, gensim=g, emulated=avx512)
    g.epochs = epochs
    g.min_alpha_yet_reached = g.alpha
    work_g = np.zeros(cfg.vector_size, np.float32)
    identical = True
    upd = kernels.make_update(cfg.negative, c_tab, e_tab, cfg.window, False, False)
    work_o = np.zeros(cfg.vector_size, np.float32)
    targets_o = np.zeros(cfg.negative + 1, np.int64)
    acc = np.zeros((2, 8), np.float32)
    for ep in range(epochs):
        jobs_q: queue.Queue = queue.Queue()
        g._job_producer(iter(sents_str), jobs_q, cur_epoch=ep, total_examples=len(sents_str))
        alphas = job_alphas(job_starts, corpus.n_sentences, ep, epochs, cfg.alpha, cfg.min_alpha)
        for j in range(n_jobs):
            item = jobs_q.get_nowait()
            if item is None:
                raise AssertionError(f"epoch {ep}: gensim produced {j} jobs, we {n_jobs}")
            job, g_alpha = item
            lo, hi = int(job_starts[j]), int(job_starts[j + 1])
            if len(job) != hi - lo or np.float32(g_alpha) != alphas[j]:
                raise AssertionError(f"epoch {ep} job {j}: gensim's job has {len(job)} sentences, alpha "
                                     f"{np.float32(g_alpha)!r}; ours {hi - lo}, {alphas[j]!r}")
            keep = identical or resync
            pre = (ours.vectors.copy(), ours.output.copy()) if keep else None
            jobs, _, _ = ours.parity_jobs(job_starts, alphas, j, j + 1)
            if emulate_gensim_dot:
                _emulated_job(ours.vectors, ours.output, jobs.eff, jobs.bounds, int(jobs.n_sent[0]), jobs.reduced,
                              jobs.state[0], jobs.alpha[0], cfg.window, cfg.negative, c_tab, e_tab, work_o, acc,
                              avx512)
            else:
                kernels.parity_train_jobs(kernels.Weights(ours.vectors, ours.output), jobs, upd,
                                          kernels.Scratch(work_o, targets_o))
            train_batch_sg(g, job, g_alpha, work_g, False)
            if ours.random.get_state()[2] != g.random.get_state()[2] or not np.array_equal(
                    ours.random.get_state()[1], g.random.get_state()[1]):
                raise AssertionError(f"epoch {ep} job {j}: the RandomState streams differ")
            if not keep:
                continue
            same = np.array_equal(ours.vectors, g.wv.vectors) and np.array_equal(ours.output, g.syn1neg)
            if same:
                res.identical_jobs += identical
                continue
            if emulate_gensim_dot:
                rows = np.flatnonzero((ours.vectors != g.wv.vectors).any(1) | (ours.output != g.syn1neg).any(1))
                d = _diffs(ours, g)
                raise AssertionError(f"epoch {ep} job {j}: with gensim's dot product emulated the weights differ "
                                     f"in {rows.shape[0]} rows (first {ours.aids[rows[0]]}), max "
                                     f"{max(d['vectors_max'], d['output_max']):.3g}")
            flip = locate_flip(pre[0], pre[1], jobs, cfg, tables, ours.aids, ep, j, lo, ours.vectors, ours.output)
            if flip is None:
                d = _diffs(ours, g)
                raise AssertionError(f"epoch {ep} job {j}: weights differ (max {max(d['vectors_max'], d['output_max']):.3g}) "
                                     "without a sigmoid-table decision that differs")
            if identical:
                res.first_flip = flip
                identical = False
            res.flips.append(flip)
            if progress:
                progress(flip.describe())
            if resync:
                ours.vectors[:] = g.wv.vectors
                ours.output[:] = g.syn1neg
        if jobs_q.get_nowait() is not None or not jobs_q.empty():
            raise AssertionError(f"epoch {ep}: gensim produced more than {n_jobs} jobs")
        res.epoch_diffs.append(_diffs(ours, g))
        ours.epochs_trained += 1
        if progress:
            progress(f"epoch {ep + 1}/{epochs}: {res.epoch_diffs[-1]}")
    res.seconds = time.perf_counter() - t_start
    return res

