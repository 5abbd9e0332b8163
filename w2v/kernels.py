"""Numba kernels of skip-gram negative sampling (SGNS), one implementation for both modes.

Notation: ``syn0`` = input vectors (gensim ``wv.vectors``), ``syn1neg`` = output vectors; both
float32 [V, D], C-contiguous, updated in place (lock-free when several threads run). Inside the
kernels every random number comes from the 48-bit linear congruential generator (LCG) of
word2vec.c / gensim; its state is an explicit uint64 value: the per-pair and per-sentence
kernels take it as an argument and return the advanced state with their results, the job-level
kernels start each job from the state its schedule gives. (gensim's numpy draws -- job seeds
and reduced windows in parity mode -- are made by the caller, w2v/trainer.py, and passed in.)

Inputs travel in a few named tuples (Numba compiles field access to plain loads), in the spirit
of gensim's ``Word2VecConfig`` struct, so no kernel takes a long run of positional arguments:
``Weights`` (the two matrices), ``NegativeSampling`` (count and table of the negatives),
``Sigmoid`` (the table and the |f| >= 6 rule), ``Update`` (those two plus the window, the loss
switch and the shared-negatives switch), ``Scratch`` (per-thread work arrays), ``Sentences`` and
``Downsampling`` (the corpus and its thresholds) and the job schedules ``ParityJobs`` /
``FastJobs``.

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
LCG_MUL = np.uint64(25214903917)
LCG_ADD = np.uint64(11)
LCG_MASK = np.uint64(0xFFFFFFFFFFFF)  # 2**48 - 1

# Floating-point licence for the training loops: re-association (vectorised dot products, like a
# BLAS sdot) and contraction (fused multiply-add, like a BLAS saxpy). No finite-math or
# no-NaN assumptions, so comparisons against +-MAX_EXP keep their meaning. ``sgns_pair`` is
# inlined into its callers at Numba level (they carry the same licence); the sigmoid-table index
# is computed in ``sigmoid_lookup``, a separate function compiled with an explicit
# ``fastmath=False`` (without it Numba would let it inherit the caller's flags).
# No reference-counted value is made inside a pair: rows are indexed as ``syn0[row, a]`` (a row
# view ``syn0[row]`` costs an atomic increment and decrement of the matrix's reference count,
# and with two threads that count is one cache line both cores write, which made 2 threads as
# slow as 1), and the helpers called per draw or per term are inlined or take only scalars.
_FM = {"reassoc", "contract", "nsz"}


class Weights(NamedTuple):
    """The trained matrices: ``syn0`` (input vectors) and ``syn1neg`` (output vectors), float32 [V, D]."""

    syn0: np.ndarray
    syn1neg: np.ndarray


class NegativeSampling(NamedTuple):
    """``negative`` (>= 1) draws per pair from ``cum_table`` (uint32 [V], V >= 1), by bisection
    started from ``guide``/``shift`` (``guide_table``; an empty guide: plain ``bisect_left``) or,
    when ``alias`` (uint64 [V], ``alias_table``) is not empty, by Walker's alias method."""

    negative: int
    cum_table: np.ndarray
    guide: np.ndarray
    shift: int
    alias: np.ndarray


class Sigmoid(NamedTuple):
    """``exp_table`` (float32 [1000], ``make_exp_table``) and the rule at |f| >= 6: ``clip_edge``
    False skips the term (gensim), True clips sigma to 0/1 (word2vec.c)."""

    exp_table: np.ndarray
    clip_edge: bool


class Update(NamedTuple):
    """Everything a skip-gram update needs besides the weights and the random state: the negatives,
    the sigmoid, the ``window`` (>= 1), ``compute_loss`` (False: loss terms are not computed) and
    ``share_negatives`` (True: one draw of negatives per centre word serves all its context
    words, see ``train_span``; False: a draw per pair, as gensim and word2vec.c)."""

    ns: NegativeSampling
    sig: Sigmoid
    window: int
    compute_loss: bool
    share_negatives: bool


class Scratch(NamedTuple):
    """Per-thread scratch of the pair kernels (``make_scratch``): ``work`` float32 [D] (the input
    row's accumulated gradient) and ``targets`` int64 [negative + 1] (the output rows of a pair)."""

    work: np.ndarray
    targets: np.ndarray


def make_scratch(vector_size: int, negative: int) -> Scratch:
    """Zeroed ``Scratch`` for vectors of ``vector_size`` and ``negative`` negatives per pair."""
    return Scratch(np.zeros(vector_size, np.float32), np.zeros(negative + 1, np.int64))


class Sentences(NamedTuple):
    """A corpus of vocabulary rows: sentence s is ``tokens[offsets[s]:offsets[s + 1]]`` (int32 /
    int64 [S + 1]); ``max_len`` >= the longest sentence."""

    tokens: np.ndarray
    offsets: np.ndarray
    max_len: int


class Downsampling(NamedTuple):
    """``sample_int`` (uint32 [V]) thresholds; ``use_sample`` False: every word is kept, no draws."""

    sample_int: np.ndarray
    use_sample: bool


def make_update(negative: int, cum_table: np.ndarray, exp_table: np.ndarray, window: int, clip_edge: bool,
                compute_loss: bool, guide: bool = True, alias: np.ndarray | None = None,
                share_negatives: bool = False) -> Update:
    """An ``Update`` for ``cum_table`` (with its guide table unless ``guide`` is False; the alias
    table ``alias`` selects the alias method)."""
    g, shift = guide_table(cum_table) if guide else (np.empty(0, np.int32), 0)
    a = np.empty(0, np.uint64) if alias is None else alias
    return Update(NegativeSampling(int(negative), cum_table, g, int(shift), a), Sigmoid(exp_table, bool(clip_edge)),
                  int(window), bool(compute_loss), bool(share_negatives))


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


@njit(cache=True, nogil=True, inline="always")
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
    return _draw(cum_table, np.empty(0, np.int32), 0, alias, state)


@njit(cache=True, nogil=True, inline="always")
def draw_negative_from(ns, state):
    """One negative-sample word from ``ns`` (``NegativeSampling``); returns (row, state). See ``_draw``."""
    return _draw(ns.cum_table, ns.guide, ns.shift, ns.alias, state)


@njit(cache=True, nogil=True, inline="always")
def _draw(cum_table, guide, shift, alias, state):
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


@njit(cache=True, nogil=True, fastmath=False)
def sigmoid_lookup(exp_table, f_dot):
    """``exp_table[int((f_dot + 6.0) * 83)]`` in float64 arithmetic, as gensim's C computes the
    index; compiled without fast-math so the index is never fused or re-associated. (``fastmath``
    must be given explicitly: Numba lets a callee without it inherit its caller's fast-math
    flags, and the callers are compiled with ``_FM``; the re-associated, fused form
    ``f * 83 + 498`` gives 497 instead of 498 for some tiny negative f, e.g. -1.75 * 2**-52.)
    exp_table: float32 [1000]; f_dot: float32 with -6 < f_dot < 6 (index 0..995)."""
    return exp_table[sigmoid_index(f_dot)]


@njit(cache=True, nogil=True, fastmath=False)
def sigmoid_index(f_dot):
    """``int((f_dot + 6.0) * 83)`` in float64, compiled without fast-math (see ``sigmoid_lookup``).
    A function of a scalar only, so the training loops call it without touching an array's
    reference count (with several threads those counts are shared cache lines)."""
    return int((np.float64(f_dot) + 6.0) * 83.0)


@njit(cache=True, nogil=True, inline="always")
def draw_targets(syn1neg, word, ns, state, targets):
    """The output rows of a pair predicting ``word``: ``targets[0] = word``, then ``ns.negative``
    draws (``_draw``), each kept in ``targets[1:]`` unless it equals ``word`` (gensim skips such a
    negative, it does not redraw). Every row is prefetched (the draws do not depend on the weights,
    so drawing them before the updates changes neither the random stream nor any result).
    syn1neg: float32 [V, D]; ns: ``NegativeSampling``; state: uint64 LCG state; targets: int64
    [>= ns.negative + 1]. Returns (n, state): the rows are ``targets[:n]``."""
    cum_table, guide, shift, alias = ns.cum_table, ns.guide, ns.shift, ns.alias
    targets[0] = word
    prefetch_row(syn1neg, word)
    n = 1
    for _ in range(ns.negative):
        t, state = _draw(cum_table, guide, shift, alias, state)
        if t != word:
            prefetch_row(syn1neg, t)
            targets[n] = t
            n += 1
    return n, state


@njit(cache=True, nogil=True, fastmath=_FM, inline="always")
def sgns_terms(w, word2, alpha, upd, scr, n):
    """The updates of one pair whose output rows are ``scr.targets[:n]`` (``draw_targets``): input
    row ``word2`` predicts ``targets[0]`` (label 1) against the negatives ``targets[1:n]`` (label 0).

    Mirrors .pyx ``w2v_fast_sentence_sg_neg`` after its draws, target by target in order:
      f_dot = syn0[word2] . syn1neg[target]        (float32)
      |f_dot| >= 6: clip_edge False -> skip (gensim); True -> sigma = 1 or 0 (word2vec.c)
      else sigma = exp_table[int((f_dot + 6) * 83)]
      g = (label - sigma) * alpha                   (float32)
      work += g * syn1neg[target];  syn1neg[target] += g * syn0[word2]
    then syn0[word2] += work. Loss (float64 exp/log, also for skipped edge terms): -log sigma(f_dot)
    for the positive and -log sigma(-f_dot) for each negative, evaluated as
    sum max(x, 0) + log prod(1 + e**-|x|) with x = -f_dot resp. f_dot (one log per pair).
    w: ``Weights``; alpha: float32; upd: ``Update``; scr: ``Scratch`` (``work`` distinct from both
    matrices). Returns the loss (0 unless ``upd.compute_loss``).
    """
    syn0, syn1neg = w.syn0, w.syn1neg
    exp_table, clip_edge, compute_loss = upd.sig.exp_table, upd.sig.clip_edge, upd.compute_loss
    work, targets = scr.work, scr.targets
    d_len = syn0.shape[1]
    for a in range(d_len):
        work[a] = np.float32(0.0)
    lin = 0.0
    prod = 1.0
    for d in range(n):
        target = targets[d]
        label = np.float32(1.0) if d == 0 else np.float32(0.0)
        f_dot = np.float32(0.0)
        for a in range(d_len):
            f_dot += syn0[word2, a] * syn1neg[target, a]
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
            f = exp_table[sigmoid_index(f_dot)]
        g = (label - f) * alpha
        for a in range(d_len):
            s1 = syn1neg[target, a]
            work[a] += g * s1
            syn1neg[target, a] = s1 + g * syn0[word2, a]
    for a in range(d_len):
        syn0[word2, a] += work[a]
    return lin + math.log(prod)


@njit(cache=True, nogil=True, fastmath=_FM, inline="always")
def sgns_pair(w, word, word2, alpha, upd, state, scr):
    """One skip-gram negative-sampling update: input row ``word2`` predicts output row ``word``
    (.pyx ``w2v_fast_sentence_sg_neg(word_index=word, word2_index=word2)``): ``draw_targets``
    (``upd.ns.negative`` draws, a negative equal to ``word`` skipped), then ``sgns_terms``.

    w: ``Weights`` (float32 [V, D] C-contiguous); word, word2: row indices; alpha: float32;
    upd: ``Update``; state: uint64 LCG state; scr: ``Scratch``. Returns (state, loss) (loss 0
    unless ``upd.compute_loss``). A vocabulary of one word makes every negative equal ``word``:
    only the positive term is trained.
    """
    n, state = draw_targets(w.syn1neg, word, upd.ns, state, scr.targets)
    return state, sgns_terms(w, word2, alpha, upd, scr, n)


@njit(cache=True, nogil=True, fastmath=_FM)
def train_span(w, idx, reduced, start, end, state, alpha, upd, scr):
    """Skip-gram over one sentence ``idx[start:end]`` (.pyx ``train_batch_sg`` inner loops).

    For each position i: b = reduced window: ``reduced[i]`` (gensim draws them with numpy), or,
    when ``reduced`` is empty, ``(state >> 16) % window`` from the LCG, then one step; every j in
    [max(start, i - window + b), min(end, i + window + 1 - b)), j != i, gives the pair
    (word = idx[i], word2 = idx[j]): ``sgns_pair``, which draws the pair's negatives. With
    ``upd.share_negatives`` the negatives are drawn once for position i, right after its window
    (``draw_targets``; also when i has no context word), and every pair of i uses them
    (``sgns_terms``): the per-window sharing of Ji et al. 2016 ("Parallelizing Word2Vec in Shared
    and Distributed Memory"), which touches ``negative`` random output rows per centre word
    instead of per pair.

    idx: int32 [*] vocabulary rows; reduced: int64 [>= end] or [0]; window = ``upd.window`` >= 1;
    the other arguments as in ``sgns_pair``. Returns (state, loss sum, number of pairs). An empty
    or one-word span trains nothing (a one-word span still draws its window).
    """
    window = upd.window
    share = upd.share_negatives
    lcg_windows = reduced.shape[0] == 0
    loss = 0.0
    pairs = 0
    n = 0
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
        if share:
            n, state = draw_targets(w.syn1neg, idx[i], upd.ns, state, scr.targets)
        for j in range(j0, j1):
            if j == i:
                continue
            if share:
                loss += sgns_terms(w, idx[j], alpha, upd, scr, n)
            else:
                state, l = sgns_pair(w, idx[i], idx[j], alpha, upd, state, scr)
                loss += l
            pairs += 1
    return state, loss, pairs


@njit(cache=True, nogil=True)
def downsample(tokens, lo, hi, down, state, out, pos, cap):
    """Copy the kept words of ``tokens[lo:hi]`` to ``out[pos:]`` (.pyx ``train_batch_sg`` prep).

    With ``down.use_sample``: for each word w, ``r = state >> 16; state = lcg(state)``; w is
    dropped iff ``down.sample_int[w] < r``. Stops once ``pos == cap`` (gensim's MAX_SENTENCE_LEN
    per job); words not examined are reported, and consume no random numbers.
    tokens: int32 [*]; down: ``Downsampling``; out: int32 [>= cap]. Returns (pos, state, unexamined).
    """
    sample_int, use_sample = down.sample_int, down.use_sample
    for t in range(lo, hi):
        wd = tokens[t]
        if use_sample:
            r = state >> np.uint64(16)
            state = lcg_next(state)
            if np.uint64(sample_int[wd]) < r:
                continue
        out[pos] = wd
        pos += 1
        if pos == cap:
            return pos, state, hi - t - 1
    return pos, state, 0


@njit(cache=True, nogil=True)
def parity_prepare_job(sents, s_lo, s_hi, down, state, cap, eff, bounds):
    """Downsample the sentences ``s_lo..s_hi-1`` of ``sents`` (``Sentences``), one gensim job, into ``eff``.

    ``bounds[k]:bounds[k+1]`` (int64 [>= s_hi - s_lo + 1]) delimits effective sentence k in
    ``eff`` (int32 [>= cap]): every sentence of the job gets an entry, an empty one (or one that
    loses all its words) a zero-length entry, which trains nothing, as in gensim. After ``cap``
    kept words the rest of the job is ignored, exactly like gensim; those words are counted.
    Returns (n_eff_words, n_eff_sentences, state, dropped).
    """
    tokens, offsets = sents.tokens, sents.offsets
    pos = 0
    ns = 0
    dropped = 0
    bounds[0] = 0
    for s in range(s_lo, s_hi):
        a = offsets[s]
        b = offsets[s + 1]
        pos, state, unexamined = downsample(tokens, a, b, down, state, eff, pos, cap)
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


class FastJobs(NamedTuple):
    """The job schedule of fast mode for jobs ``lo..hi-1`` of an epoch: job j holds the sentences
    ``starts[j]..starts[j + 1] - 1`` (int64 [J + 1], ``gensim_jobs``), learns at ``alpha[j]``
    (float32 [J]) and starts its LCG at ``state[j]`` (uint64 [J], ``fast_job_states``)."""

    starts: np.ndarray
    alpha: np.ndarray
    state: np.ndarray
    lo: int
    hi: int


@njit(cache=True, nogil=True, fastmath=_FM)
def parity_train_jobs(w, jobs, upd, scr):
    """Train the prepared gensim jobs ``jobs`` (``ParityJobs``) in order, job k from its LCG state
    ``jobs.state[k]`` at ``jobs.alpha[k]`` with gensim's reduced windows ``jobs.reduced``. One call
    trains many jobs; the result does not depend on how jobs are grouped into calls.
    w: ``Weights``; upd: ``Update`` (negatives by gensim's bisection: ``upd.ns.alias`` empty);
    scr: ``Scratch``. Returns (loss sum, pairs)."""
    eff, bounds = jobs.eff, jobs.bounds
    loss = 0.0
    pairs = 0
    for k in range(jobs.n_sent.shape[0]):
        e0 = jobs.eff_start[k]
        b0 = jobs.bound_start[k]
        state = jobs.state[k]
        alpha = jobs.alpha[k]
        for q in range(jobs.n_sent[k]):
            state, l, p = train_span(w, eff, jobs.reduced, e0 + bounds[b0 + q], e0 + bounds[b0 + q + 1], state,
                                     alpha, upd, scr)
            loss += l
            pairs += p
    return loss, pairs


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def fast_train_jobs(w, sents, down, jobs, n_threads, upd, totals):
    """Fast mode: jobs ``jobs.lo..jobs.hi-1`` (``FastJobs``) on ``n_threads`` threads, Hogwild updates.

    Thread t takes jobs lo + t, lo + t + n_threads, ... in order, so all threads move through the
    epoch together and a job's learning rate ``jobs.alpha[j]`` matches its place in the epoch.
    Job j's LCG starts at ``jobs.state[j]``, so with one thread the result is deterministic and
    does not depend on how jobs are grouped into calls. Each sentence of ``sents`` is downsampled
    (``down``) into a private buffer (int32 [sents.max_len]), then trained with LCG reduced windows
    and negatives drawn as ``upd.ns`` says (alias method when ``upd.ns.alias`` is not empty), per
    pair or, with ``upd.share_negatives``, per centre word (``train_span``).
    totals: float64 [3, n_threads], per thread += (loss, pairs, kept words).
    """
    # a parallel loop cannot take tuples of arrays from outside (Numba's parfor lowering passes
    # them as scalars): unpack here, rebuild inside
    syn0, syn1neg = w.syn0, w.syn1neg
    negative, cum_table, guide, shift, alias = upd.ns.negative, upd.ns.cum_table, upd.ns.guide, upd.ns.shift, upd.ns.alias
    exp_table, clip_edge, window, compute_loss = upd.sig.exp_table, upd.sig.clip_edge, upd.window, upd.compute_loss
    share = upd.share_negatives
    sample_int, use_sample = down.sample_int, down.use_sample
    starts, job_alpha, job_state, lo, hi = jobs.starts, jobs.alpha, jobs.state, jobs.lo, jobs.hi
    d_len = syn0.shape[1]
    tokens, offsets, max_len = sents.tokens, sents.offsets, sents.max_len
    for t in prange(n_threads):
        wt = Weights(syn0, syn1neg)
        u = Update(NegativeSampling(negative, cum_table, guide, shift, alias), Sigmoid(exp_table, clip_edge), window,
                   compute_loss, share)
        dn = Downsampling(sample_int, use_sample)
        # 128 bytes of padding on both sides: no cache line of a thread's scratch is shared
        scr = Scratch(np.zeros(d_len + 64, np.float32)[32:32 + d_len],
                      np.zeros(negative + 1 + 32, np.int64)[16:16 + negative + 1])
        buf = np.empty(max(max_len, 1) + 64, np.int32)[32:]
        none = np.empty(0, np.int64)
        loss = 0.0
        pairs = 0
        words = 0
        for j in range(lo + t, hi, n_threads):
            state = job_state[j]
            alpha = job_alpha[j]
            for s in range(starts[j], starts[j + 1]):
                n, state, _ = downsample(tokens, offsets[s], offsets[s + 1], dn, state, buf, 0, max_len + 1)
                words += n
                state, l, p = train_span(wt, buf, none, 0, n, state, alpha, u, scr)
                loss += l
                pairs += p
        totals[0, t] += loss
        totals[1, t] += pairs
        totals[2, t] += words


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
