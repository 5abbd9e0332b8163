"""Numba kernels of skip-gram negative sampling (SGNS), one implementation for both modes.

Notation: ``syn0`` = input vectors (gensim ``wv.vectors``), ``syn1neg`` = output vectors; both
float32 [V, D], C-contiguous, updated in place (lock-free when several threads run). Inside the
kernels every random number comes from the 48-bit linear congruential generator (LCG) of
word2vec.c / gensim; its state is an explicit uint64 argument and each kernel returns the
advanced state. (gensim's numpy draws -- job seeds and reduced windows in parity mode -- are
made by the caller, w2v/trainer.py, and passed in.)

References name the functions of gensim 4.4 ``gensim/models/word2vec_inner.pyx`` (``.pyx``
below) and of word2vec.c (Mikolov et al.) that a kernel mirrors. docs/ALGORITHM.md derives the
whole procedure.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, types
from numba.extending import intrinsic

EXP_TABLE_SIZE = 1000
MAX_EXP = 6
# (EXP_TABLE_SIZE / MAX_EXP / 2) is integer division in gensim's generated C: (1000 / 6) / 2 = 83
EXP_TABLE_SCALE = (EXP_TABLE_SIZE // MAX_EXP) // 2
LCG_MUL = np.uint64(25214903917)
LCG_ADD = np.uint64(11)
LCG_MASK = np.uint64(0xFFFFFFFFFFFF)  # 2**48 - 1

# Floating-point licence for the training loops: re-association (vectorised dot products, like a
# BLAS sdot) and contraction (fused multiply-add, like a BLAS saxpy). No finite-math or
# no-NaN assumptions, so comparisons against +-MAX_EXP keep their meaning. ``sgns_pair`` is
# inlined into its callers at Numba level (they carry the same licence); the sigmoid-table index
# is computed in ``sigmoid_lookup``, a separate function compiled without it.
_FM = {"reassoc", "contract", "nsz"}


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Hint the CPU to load the cache line of ``arr[i, j]`` (2-d array) for reading: LLVM
    ``llvm.prefetch`` (no effect on results)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        return None
    sig = types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = [context.cast(builder, args[1], signature.args[1], types.intp),
               context.cast(builder, args[2], signature.args[2], types.intp)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=True, nogil=True)
def prefetch_row(mat, row):
    """Prefetch every 64-byte line of ``mat[row]`` (float32 [*, D], C-contiguous)."""
    for a in range(0, mat.shape[1], 16):
        _prefetch(mat, row, a)


def make_exp_table() -> np.ndarray:
    """gensim ``init()`` (.pyx ``EXP_TABLE``): float32 [1000],
    ``e = float32(exp((float32(i) / 1000f * 2 - 1) * 6))``, ``table[i] = float32(e / (e + 1))``."""
    i = np.arange(EXP_TABLE_SIZE, dtype=np.float32)
    x = (i / np.float32(EXP_TABLE_SIZE)).astype(np.float64) * 2.0 - 1.0
    e = np.exp(x * MAX_EXP).astype(np.float32)
    return (e.astype(np.float64) / (e.astype(np.float64) + 1.0)).astype(np.float32)


@njit(cache=True, nogil=True)
def lcg_next(state):
    """One LCG step (.pyx ``random_int32``, word2vec.c ``next_random``):
    ``state' = (state * 25214903917 + 11) mod 2**48``. state: uint64 < 2**48."""
    return (state * LCG_MUL + LCG_ADD) & LCG_MASK


@njit(cache=True, nogil=True)
def lcg_sequence(state, n, out):
    """Fill ``out`` (uint64 [n]) with the states after 1..n steps; returns the last state."""
    for i in range(n):
        state = lcg_next(state)
        out[i] = state
    return state


@njit(cache=True, nogil=True)
def bisect_left(table, x):
    """Smallest i with ``table[i] >= x``, or V if none (.pyx ``bisect_left``); table: uint32 [V],
    ascending, V >= 0; x: uint64. Same result as gensim's loop, computed branch-free (a fixed
    number of halvings with a conditional move), which avoids a mispredicted branch per level."""
    n = table.shape[0]
    if n == 0:
        return 0
    base = 0
    while n > 1:
        half = n >> 1
        base = base + half if np.uint64(table[base + half]) < x else base
        n -= half
    return base + (1 if np.uint64(table[base]) < x else 0)


@njit(cache=True, nogil=True)
def guided_bisect_left(table, guide, shift, x):
    """``bisect_left(table, x)`` for ``x < 2**31``, started from a guide table (Chen & Asau).

    guide: int32 [G + 1], ``guide[b] = bisect_left(table, b << shift)`` with ``G << shift >= 2**31``
    (see ``guide_table``). With ``b = x >> shift`` the answer lies in ``[guide[b], guide[b + 1]]``,
    usually a range of 0-2 entries, so the search touches one or two cache lines instead of
    log2(V) levels. Returns exactly what ``bisect_left`` returns; table as there, x: uint64.
    """
    b = np.int64(x >> np.uint64(shift))
    lo = np.int64(guide[b])
    hi = np.int64(guide[b + 1])
    if hi > table.shape[0] - 1:
        hi = table.shape[0] - 1
    n = hi - lo + 1
    if n <= 0:
        return lo
    base = lo
    while n > 1:
        half = n >> 1
        base = base + half if np.uint64(table[base + half]) < x else base
        n -= half
    return base + (1 if np.uint64(table[base]) < x else 0)


def guide_table(cum_table: np.ndarray) -> tuple[np.ndarray, int]:
    """(guide int32 [G + 1], shift) for ``guided_bisect_left``: G = 2**k >= V (k <= 31),
    shift = 31 - k, ``guide[b] = bisect_left(cum_table, b << shift)``."""
    V = int(cum_table.shape[0])
    k = min(31, max(0, (max(V, 1) - 1).bit_length()))
    shift = 31 - k
    starts = np.arange((1 << k) + 1, dtype=np.int64) << shift
    return np.searchsorted(cum_table.astype(np.int64), starts, side="left").astype(np.int32), shift


@njit(cache=True, nogil=True)
def draw_negative(cum_table, alias, state):
    """``draw_negative_from`` without a guide table (plain ``bisect_left`` when ``alias`` is
    empty); returns (row, state)."""
    return draw_negative_from(cum_table, np.empty(0, np.int32), 0, alias, state)


@njit(cache=True, nogil=True)
def draw_negative_from(cum_table, guide, shift, alias, state):
    """One negative-sample word; returns (row, state).

    ``alias`` empty (parity): gensim's ``bisect_left(cum_table, (state >> 16) % cum_table[-1])``
    (started from the guide table when ``guide`` is not empty: same result), one LCG step.
    ``alias`` uint64 [V] (fast mode, from ``alias_table``): Walker's alias method over the same
    distribution, O(1): ``k = ((state >> 16) * V) >> 32``, step, coin ``= state >> 16``, step; the row is ``k`` if
    ``coin < alias[k] >> 32`` else ``alias[k] & 0xFFFFFFFF``.
    cum_table: uint32 [V], V >= 1, last entry < 2**31; guide (int32 [G + 1] or [0]), shift: from
    ``guide_table``.
    """
    if alias.shape[0] == 0:
        top = np.uint64(cum_table[cum_table.shape[0] - 1])
        x = (state >> np.uint64(16)) % top
        if guide.shape[0] == 0:
            target = bisect_left(cum_table, x)
        else:
            target = guided_bisect_left(cum_table, guide, shift, x)
        return target, lcg_next(state)
    k = ((state >> np.uint64(16)) * np.uint64(alias.shape[0])) >> np.uint64(32)
    state = lcg_next(state)
    coin = state >> np.uint64(16)
    state = lcg_next(state)
    e = alias[k]
    if coin < (e >> np.uint64(32)):
        return np.int64(k), state
    return np.int64(e & np.uint64(0xFFFFFFFF)), state


@njit(cache=True, nogil=True)
def _alias_kernel(cum_table, out):
    """Vose's alias construction for p_w = (cum[w] - cum[w-1]) / cum[-1].

    cum_table: uint32 [V] ascending, V >= 1; out: uint64 [V] (written) holding
    ``threshold << 32 | alias`` with threshold = round(q_w * 2**32) capped at 2**32 - 1, where q_w is
    the probability of keeping column w; a column kept with certainty gets threshold 2**32 - 1
    and alias = w, so the result is exact up to the 2**-32 resolution of the coin.
    """
    n = cum_table.shape[0]
    total = np.float64(cum_table[n - 1])
    q = np.empty(n, np.float64)
    prev = 0.0
    for w in range(n):
        c = np.float64(cum_table[w])
        q[w] = (c - prev) / total * n
        prev = c
    small = np.empty(n, np.int64)
    large = np.empty(n, np.int64)
    ns = 0
    nl = 0
    for w in range(n):
        if q[w] < 1.0:
            small[ns] = w
            ns += 1
        else:
            large[nl] = w
            nl += 1
    full = np.uint64(0xFFFFFFFF)
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        nl -= 1
        l = large[nl]
        thr = np.uint64(min(np.float64(full), np.floor(q[s] * 4294967296.0 + 0.5)))
        out[s] = (thr << np.uint64(32)) | np.uint64(l)
        q[l] = (q[l] + q[s]) - 1.0
        if q[l] < 1.0:
            small[ns] = l
            ns += 1
        else:
            large[nl] = l
            nl += 1
    for i in range(nl):
        out[large[i]] = (full << np.uint64(32)) | np.uint64(large[i])
    for i in range(ns):
        out[small[i]] = (full << np.uint64(32)) | np.uint64(small[i])


def alias_table(cum_table: np.ndarray) -> np.ndarray:
    """uint64 [V] alias table of the negative-sampling distribution (see ``draw_negative``)."""
    cum_table = np.ascontiguousarray(cum_table, dtype=np.uint32)
    out = np.zeros(cum_table.shape[0], np.uint64)
    if cum_table.shape[0]:
        _alias_kernel(cum_table, out)
    return out


@njit(cache=True, nogil=True)
def sigmoid_lookup(exp_table, f_dot):
    """``exp_table[int((f_dot + 6.0) * 83)]`` in float64 arithmetic, as gensim's C computes the
    index; compiled without fast-math so the index is never fused or re-associated.
    exp_table: float32 [1000]; f_dot: float32 with -6 < f_dot < 6 (index 0..995)."""
    return exp_table[int((np.float64(f_dot) + 6.0) * 83.0)]


@njit(cache=True, nogil=True, fastmath=_FM, inline="always")
def sgns_pair(syn0, syn1neg, word, word2, alpha, negative, cum_table, guide, shift, alias, state,
              exp_table, clip_edge, work, compute_loss):
    """One skip-gram negative-sampling update: input row ``word2`` predicts output row ``word``.

    Mirrors .pyx ``w2v_fast_sentence_sg_neg(word_index=word, word2_index=word2)``:
      work = 0
      for d in 0..negative:
        d = 0: target = word, label = 1
        d > 0: target, state = draw_negative_from(cum_table, guide, shift, alias, state)
               (gensim: bisect_left(cum_table, (state >> 16) % cum_table[-1]), one LCG step);
               if target == word: skip this d (no redraw); label = 0
        f_dot = syn0[word2] . syn1neg[target]        (float32)
        |f_dot| >= 6: clip_edge False -> skip (gensim); True -> sigma = 1 or 0 (word2vec.c)
        else sigma = exp_table[int((f_dot + 6) * 83)]
        g = (label - sigma) * alpha                   (float32)
        work += g * syn1neg[target];  syn1neg[target] += g * syn0[word2]
      syn0[word2] += work
    Loss (float64 exp/log, also for skipped edge terms): -log sigma(f_dot) for d = 0 and
    -log sigma(-f_dot) for each negative d that was not skipped as equal to ``word``, evaluated as
    sum max(x, 0) + log prod(1 + e**-|x|) with x = -f_dot resp. f_dot (one log per pair).

    syn0, syn1neg: float32 [V, D] C-contiguous; word, word2: row indices; alpha: float32;
    negative >= 1; cum_table: uint32 [V] (V >= 1); guide, shift, alias: see draw_negative_from;
    state: uint64 LCG state; exp_table: float32 [1000]; clip_edge: bool; work: float32 [D]
    scratch (distinct from both matrices); compute_loss: bool (False returns loss 0).
    Returns (state, loss). A vocabulary of one word makes every negative equal ``word``: only
    the positive term is trained. Before the loop the negative draws are replayed on a copy of
    the state to prefetch the output rows (the draws do not depend on the weights, so neither
    the random stream nor any update changes).
    """
    d_len = syn0.shape[1]
    for a in range(d_len):
        work[a] = np.float32(0.0)
    lin = 0.0
    prod = 1.0
    l1 = syn0[word2]
    # the draws do not depend on the weights: draw once to prefetch the rows, then again to train
    s_ahead = state
    prefetch_row(syn1neg, word)
    for _ in range(negative):
        t_ahead, s_ahead = draw_negative_from(cum_table, guide, shift, alias, s_ahead)
        prefetch_row(syn1neg, t_ahead)
    for d in range(negative + 1):
        if d == 0:
            target = np.int64(word)
            label = np.float32(1.0)
        else:
            target, state = draw_negative_from(cum_table, guide, shift, alias, state)
            if target == word:
                continue
            label = np.float32(0.0)
        l2 = syn1neg[target]
        f_dot = np.float32(0.0)
        for a in range(d_len):
            f_dot += l1[a] * l2[a]
        if compute_loss:
            # softplus(x) = max(x, 0) + log(1 + e**-|x|), x = -f_dot (positive) or f_dot
            # (negative); the logs of a pair are taken once, of the product (each factor in (1, 2]).
            x = np.float64(-f_dot if d == 0 else f_dot)
            if x > 0:
                lin += x
            prod *= 1.0 + math.exp(-abs(x))
            if prod > 1e300:  # only reachable with about 1000 negatives
                lin += math.log(prod)
                prod = 1.0
        if f_dot <= -MAX_EXP or f_dot >= MAX_EXP:
            if not clip_edge:
                continue
            f = np.float32(1.0) if f_dot > 0 else np.float32(0.0)
        else:
            f = sigmoid_lookup(exp_table, f_dot)
        g = (label - f) * alpha
        for a in range(d_len):
            s1 = l2[a]
            work[a] += g * s1
            l2[a] = s1 + g * l1[a]
    for a in range(d_len):
        l1[a] += work[a]
    return state, lin + math.log(prod)


@njit(cache=True, nogil=True, fastmath=_FM)
def train_span(syn0, syn1neg, idx, start, end, window, reduced, lcg_windows, state, alpha,
               negative, cum_table, guide, shift, alias, exp_table, clip_edge, work, compute_loss):
    """Skip-gram over one sentence ``idx[start:end]`` (.pyx ``train_batch_sg`` inner loops).

    For each position i: b = reduced window (``reduced[i]`` when ``lcg_windows`` is False, as
    gensim draws them with numpy; else ``(state >> 16) % window`` from the LCG, then one step);
    every j in [max(start, i - window + b), min(end, i + window + 1 - b)), j != i, gives the pair
    ``sgns_pair(word=idx[i], word2=idx[j])``.

    idx: int32 [*] vocabulary rows; reduced: int64 [>= end] (ignored when lcg_windows);
    window >= 1; the other arguments as in ``sgns_pair``. Returns (state, loss sum, number of
    pairs). An empty or one-word span trains nothing (a one-word span still draws its window).
    """
    loss = 0.0
    pairs = 0
    for i in range(start, end):
        if lcg_windows:
            b = np.int64((state >> np.uint64(16)) % np.uint64(window))
            state = lcg_next(state)
        else:
            b = reduced[i]
        j0 = i - window + b
        if j0 < start:
            j0 = start
        j1 = i + window + 1 - b
        if j1 > end:
            j1 = end
        for j in range(j0, j1):
            if j == i:
                continue
            state, l = sgns_pair(syn0, syn1neg, idx[i], idx[j], alpha, negative, cum_table, guide, shift, alias,
                                 state, exp_table, clip_edge, work, compute_loss)
            loss += l
            pairs += 1
    return state, loss, pairs


@njit(cache=True, nogil=True)
def downsample(tokens, lo, hi, sample_int, use_sample, state, out, pos, cap):
    """Copy the kept words of ``tokens[lo:hi]`` to ``out[pos:]`` (.pyx ``train_batch_sg`` prep).

    With ``use_sample``: for each word w, ``r = state >> 16; state = lcg(state)``; w is dropped
    iff ``sample_int[w] < r``. Stops once ``pos == cap`` (gensim's MAX_SENTENCE_LEN per job);
    words not examined are reported, and consume no random numbers.
    tokens: int32 [*]; sample_int: uint32 [V]; out: int32 [>= cap]. Returns (pos, state, unexamined).
    """
    for t in range(lo, hi):
        w = tokens[t]
        if use_sample:
            r = state >> np.uint64(16)
            state = lcg_next(state)
            if np.uint64(sample_int[w]) < r:
                continue
        out[pos] = w
        pos += 1
        if pos == cap:
            return pos, state, hi - t - 1
    return pos, state, 0


@njit(cache=True, nogil=True)
def parity_prepare_job(tokens, offsets, s_lo, s_hi, sample_int, use_sample, state, cap, eff, bounds):
    """Downsample the sentences ``s_lo..s_hi-1`` of one gensim job into ``eff``.

    ``bounds[k]:bounds[k+1]`` (int64 [>= s_hi - s_lo + 1]) delimits effective sentence k in
    ``eff`` (int32 [>= cap]). Empty sentences are skipped (gensim ``if not sent: continue``); a
    sentence that is non-empty but loses all its words is kept with zero words (gensim does the
    same; it trains nothing). After ``cap`` kept words the rest of the job is ignored, exactly
    like gensim; those words are counted. Returns (n_eff_words, n_eff_sentences, state, dropped).
    """
    pos = 0
    ns = 0
    dropped = 0
    bounds[0] = 0
    for s in range(s_lo, s_hi):
        a = offsets[s]
        b = offsets[s + 1]
        pos, state, unexamined = downsample(tokens, a, b, sample_int, use_sample, state, eff, pos, cap)
        ns += 1
        bounds[ns] = pos
        if pos == cap:
            dropped += unexamined
            for s2 in range(s + 1, s_hi):
                dropped += offsets[s2 + 1] - offsets[s2]
            break
    return pos, ns, state, dropped


class ParityJobs(NamedTuple):
    """The job schedule of parity mode: a run of K prepared gensim jobs (``Word2Vec.parity_jobs``).

    Job k's kept words are ``eff[eff_start[k]:eff_start[k + 1]]`` (int32 vocabulary rows), its
    sentences ``bounds[bound_start[k] : bound_start[k] + n_sent[k] + 1]`` (int64, relative to its
    first word), ``reduced[i]`` (int64) the reduced window gensim drew for ``eff[i]``, ``state[k]``
    (uint64) its LCG state after downsampling and ``alpha[k]`` (float32) its learning rate.
    eff_start: int64 [K + 1]; bound_start, n_sent: int64 [K]; state: uint64 [K]; alpha: float32 [K].
    """

    eff: np.ndarray
    bounds: np.ndarray
    eff_start: np.ndarray
    bound_start: np.ndarray
    n_sent: np.ndarray
    reduced: np.ndarray
    state: np.ndarray
    alpha: np.ndarray


@njit(cache=True, nogil=True, fastmath=_FM)
def parity_train_jobs(syn0, syn1neg, eff, bounds, eff_start, bound_start, n_sent, reduced, job_state,
                      job_alpha, window, negative, cum_table, guide, shift, exp_table, clip_edge, work,
                      compute_loss):
    """Train a run of prepared gensim jobs in order (one call for many jobs).

    Job k's kept words are ``eff[eff_start[k]:]`` with sentence bounds
    ``bounds[bound_start[k] : bound_start[k] + n_sent[k] + 1]`` (relative to its first word);
    ``reduced[i]`` is the reduced window (gensim's numpy draw) of the word ``eff[i]``; its LCG state after
    downsampling ``job_state[k]`` and its learning rate ``job_alpha[k]`` (float32). Negatives are
    gensim's (bisection, sped up by the guide table). eff: int32, bounds/eff_start/bound_start/n_sent/reduced: int64,
    job_state: uint64, job_alpha: float32 [K]. Returns (loss sum, pairs).
    """
    no_alias = np.empty(0, np.uint64)
    loss = 0.0
    pairs = 0
    for k in range(n_sent.shape[0]):
        e0 = eff_start[k]
        b0 = bound_start[k]
        state = job_state[k]
        for q in range(n_sent[k]):
            state, l, p = train_span(syn0, syn1neg, eff, e0 + bounds[b0 + q], e0 + bounds[b0 + q + 1], window,
                                     reduced, False, state, job_alpha[k], negative, cum_table, guide, shift,
                                     no_alias,
                                     exp_table, clip_edge, work, compute_loss)
            loss += l
            pairs += p
    return loss, pairs


@njit(cache=True, nogil=True, fastmath=_FM)
def parity_train_job(syn0, syn1neg, eff, bounds, n_sent, window, reduced, state, alpha, negative,
                     cum_table, exp_table, clip_edge, work, compute_loss):
    """One prepared gensim job (``parity_prepare_job``): its effective sentences
    ``eff[bounds[k]:bounds[k+1]]``, k < n_sent, with gensim's reduced windows ``reduced`` (int64
    [n_eff_words]), LCG ``state`` after downsampling and float32 ``alpha``; negatives by plain
    ``bisect_left``. The trainer uses ``parity_train_jobs`` (many jobs per call, same result).
    Returns (state, loss sum, pairs)."""
    no_guide = np.empty(0, np.int32)
    no_alias = np.empty(0, np.uint64)
    loss = 0.0
    pairs = 0
    for k in range(n_sent):
        state, l, p = train_span(syn0, syn1neg, eff, bounds[k], bounds[k + 1], window, reduced, False, state,
                                 alpha, negative, cum_table, no_guide, 0, no_alias, exp_table, clip_edge, work,
                                 compute_loss)
        loss += l
        pairs += p
    return state, loss, pairs


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def fast_train_jobs(syn0, syn1neg, tokens, offsets, job_starts, job_lo, job_hi, job_alpha, job_state,
                    n_threads, window, negative, sample_int, use_sample, cum_table, guide, shift, alias, exp_table,
                    clip_edge, compute_loss, max_len, loss_out, pairs_out, words_out):
    """Fast mode: jobs ``job_lo..job_hi-1`` on ``n_threads`` threads, Hogwild updates.

    Thread t takes jobs job_lo + t, job_lo + t + n_threads, ... in order, so all threads move
    through the epoch together and a job's learning rate ``job_alpha[j]`` (float32) matches its
    place in the epoch. Job j's sentences are ``job_starts[j]..job_starts[j+1]-1`` (int64
    [J+1]); its LCG starts at ``job_state[j]`` (uint64 [J]), so with one thread the result is
    deterministic and does not depend on how jobs are grouped into calls. Each sentence is
    downsampled into a private buffer (int32 [max_len], max_len >= longest sentence), then
    trained with LCG reduced windows and negatives drawn with ``alias`` (pass an empty array
    for gensim's bisection). Per-thread totals go to loss_out/pairs_out/words_out
    (float64/int64/int64 [n_threads]; words = kept words).
    """
    d_len = syn0.shape[1]
    for t in prange(n_threads):
        # 128 bytes of padding on both sides: no cache line of a thread's scratch is shared
        work = np.zeros(d_len + 64, np.float32)[32:32 + d_len]
        buf = np.empty(max(max_len, 1) + 64, np.int32)[32:]
        none = np.empty(0, np.int64)
        loss = 0.0
        pairs = 0
        words = 0
        for j in range(job_lo + t, job_hi, n_threads):
            state = job_state[j]
            alpha = job_alpha[j]
            for s in range(job_starts[j], job_starts[j + 1]):
                n, state, _ = downsample(tokens, offsets[s], offsets[s + 1], sample_int, use_sample,
                                         state, buf, 0, max_len + 1)
                words += n
                state, l, p = train_span(syn0, syn1neg, buf, 0, n, window, none, True, state, alpha, negative,
                                         cum_table, guide, shift, alias, exp_table, clip_edge, work, compute_loss)
                loss += l
                pairs += p
        loss_out[t] += loss
        pairs_out[t] += pairs
        words_out[t] += words


def gensim_jobs(raw_lengths: np.ndarray, batch_words: int) -> np.ndarray:
    """Job boundaries of gensim's ``_job_producer``: sentence index where each job starts, plus
    the end (int64 [J+1]). A sentence joins the current job while ``size + len <= batch_words``;
    otherwise the current job is pushed -- even when it is EMPTY, which happens when the first
    sentence of an epoch is longer than ``batch_words`` -- and the sentence starts the next job."""
    lengths = np.asarray(raw_lengths, dtype=np.int64)
    return _gensim_jobs_kernel(lengths, np.int64(batch_words))


@njit(cache=True, nogil=True)
def _gensim_jobs_kernel(lengths, batch_words):
    """lengths int64 [S] raw words per sentence; returns int64 [J+1] job start sentences + S."""
    n = lengths.shape[0]
    starts = np.empty(n + 2, np.int64)
    nj = 0
    size = 0
    job_start = 0
    for s in range(n):
        ln = lengths[s]
        if size + ln <= batch_words:
            size += ln
        else:
            starts[nj] = job_start
            nj += 1
            job_start = s
            size = ln
    if n > job_start or (n > 0 and nj == 0):
        starts[nj] = job_start
        nj += 1
    starts[nj] = n
    return starts[:nj + 1].copy()
