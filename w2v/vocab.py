"""Vocabulary, downsampling thresholds and the negative-sampling table, as gensim 4.4 builds them.

Every function here is a pure function of arrays and numbers; docs/ALGORITHM.md gives the
rules with the gensim source they mirror (``Word2Vec.prepare_vocab``,
``KeyedVectors.sort_by_descending_frequency``, ``Word2Vec.make_cum_table``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

CUM_TABLE_DOMAIN = 2**31 - 1
SAMPLE_INT_MAX = 2**32 - 1


@dataclass(frozen=True)
class Vocab:
    """The vocabulary in gensim order.

    aids    int64 [V]  the word (aid) of each row
    counts  int64 [V]  its corpus count
    stats   raw_unique, raw_total, dropped_unique, dropped_total (min_count pruning)
    """

    aids: np.ndarray
    counts: np.ndarray
    stats: dict

    def __len__(self) -> int:
        return int(self.aids.shape[0])


@njit(cache=True, nogil=True)
def _count_first_kernel(tokens, counts, first):
    """tokens: int [N] in [0, M); counts, first: int64 [M], counts zero on entry. Adds each
    word's occurrences to ``counts`` and writes the position of its first occurrence to ``first``
    (left untouched for absent words)."""
    for i in range(tokens.shape[0]):
        w = tokens[i]
        if counts[w] == 0:
            first[w] = i
        counts[w] += 1


def dense_ids(lo: int, hi: int, n: int) -> bool:
    """Whether ids in ``[lo, hi]`` (``n`` of them, or events carrying them) are dense enough for
    a table indexed by id: ``lo >= 0`` and ``hi < 4 n + 2**20`` (OTTO's aids are). The one rule
    behind the aid -> row table (``keyed.AidIndex``) and the counting passes of ``build_vocab``
    and ``model_io.popularity``, which otherwise sort."""
    return lo >= 0 and hi < 4 * n + 2**20


def distinct_ids(ids: np.ndarray) -> np.ndarray:
    """The distinct values of integer array ``ids``, ascending, int64: by a counting pass when
    they are dense (:func:`dense_ids`), else by ``np.unique``'s sort (which takes about 50 s on
    the 148M train events of a full-size split)."""
    ids = np.asarray(ids)
    if ids.size and dense_ids(int(ids.min()), int(ids.max()), ids.size):
        return np.flatnonzero(np.bincount(ids, minlength=int(ids.max()) + 1)).astype(np.int64, copy=False)
    return np.unique(ids).astype(np.int64, copy=False)


def build_vocab(tokens: np.ndarray, min_count: int) -> Vocab:
    """Count the words of ``tokens`` (corpus order) and order them as gensim 4.4 does.

    gensim fills a dict in order of first appearance, keeps words with ``count >= min_count``
    (in that order), then ``sort_by_descending_frequency`` applies
    ``np.lexsort((-indices, -counts))``: count descending and, among equal counts, the word
    that appeared FIRST comes LAST (the reverse of first-appearance order, not a stable sort).
    """
    if min_count < 1:
        raise ValueError(f"min_count: must be >= 1, got {min_count}")
    tokens = np.asarray(tokens)
    if tokens.size == 0:
        empty = np.zeros(0, np.int64)
        return Vocab(empty, empty.copy(), dict(raw_unique=0, raw_total=0, dropped_unique=0, dropped_total=0))
    lo, hi = int(tokens.min()), int(tokens.max())
    if dense_ids(lo, hi, tokens.shape[0]):
        # dense ids (aids): one pass over the tokens instead of a sort
        all_counts = np.zeros(hi + 1, np.int64)
        all_first = np.zeros(hi + 1, np.int64)
        _count_first_kernel(tokens, all_counts, all_first)
        uniq = np.flatnonzero(all_counts)
        first, counts = all_first[uniq], all_counts[uniq]
    else:
        uniq, first, counts = np.unique(tokens, return_index=True, return_counts=True)
        counts = counts.astype(np.int64)
    keep = counts >= min_count
    k_aids, k_first, k_counts = uniq[keep].astype(np.int64), first[keep], counts[keep]
    # position in the (first-appearance ordered) retained list = rank of first appearance
    order = np.argsort(k_first, kind="stable")
    k_aids, k_counts = k_aids[order], k_counts[order]
    indices = np.arange(k_aids.shape[0])
    srt = np.lexsort((-indices, -k_counts))
    stats = dict(raw_unique=int(uniq.shape[0]), raw_total=int(tokens.shape[0]),
                 dropped_unique=int((~keep).sum()), dropped_total=int(counts[~keep].sum()))
    return Vocab(np.ascontiguousarray(k_aids[srt]), np.ascontiguousarray(k_counts[srt]), stats)


def sample_ints(counts: np.ndarray, sample: float) -> tuple[np.ndarray, dict]:
    """Downsampling thresholds ``uint32 [V]``: a kept word survives a draw ``r`` (32 bits) iff
    ``sample_int >= r`` (gensim: ``if sample_int[w] < random_int32(): skip``).

    With ``T = sample * sum(counts)`` (or ``int(sample * (3 + sqrt 5) / 2)`` when ``sample >= 1``,
    or ``sum(counts)`` when ``sample == 0``): ``p = (sqrt(c / T) + 1) * (T / c)``, capped at 1;
    ``sample_int = uint32(p * (2**32 - 1))`` (truncation). Same float64 operations as gensim.
    Returns the thresholds and ``{"downsample_unique", "downsample_total"}`` (expected kept words).
    """
    counts = np.asarray(counts, dtype=np.int64)
    retain_total = int(counts.sum())
    if not sample:
        threshold = float(retain_total)
    elif sample < 1.0:
        threshold = sample * retain_total
    else:
        threshold = float(int(sample * (3 + np.sqrt(5)) / 2))
    if counts.size == 0:
        return np.zeros(0, np.uint32), dict(downsample_unique=0, downsample_total=0)
    v = counts.astype(np.float64)
    p = (np.sqrt(v / threshold) + 1) * (threshold / v)
    low = p < 1.0
    p = np.where(low, p, 1.0)
    total = float(np.sum(p * v))  # estimate only; summation order does not matter for training
    return (p * SAMPLE_INT_MAX).astype(np.uint32), dict(downsample_unique=int(low.sum()),
                                                        downsample_total=int(total))


@njit(cache=True, nogil=True)
def _cum_table_kernel(counts, ns_exponent, domain, out):
    """Negative-sampling table, mirroring gensim ``make_cum_table`` operation for operation.

    counts int64[V] (any layout), ns_exponent float64, domain float64, out uint32[V] (written).
    Z = sum_w count_w ** ns_exponent (sequential float64 sum, vocabulary order);
    out[w] = round_half_even(cumsum_w / Z * domain). V = 0 writes nothing.
    """
    n = counts.shape[0]
    z = 0.0
    for w in range(n):
        z += np.float64(counts[w]) ** ns_exponent
    cum = 0.0
    for w in range(n):
        cum += np.float64(counts[w]) ** ns_exponent
        out[w] = np.uint32(np.rint(cum / z * domain))


def cum_table(counts: np.ndarray, ns_exponent: float = 0.75, domain: int = CUM_TABLE_DOMAIN) -> np.ndarray:
    """``uint32 [V]`` table; a negative is ``bisect_left(table, r % table[-1])`` for a random ``r``."""
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    out = np.zeros(counts.shape[0], np.uint32)
    if counts.size:
        if counts.min() < 1:
            raise ValueError("counts: every vocabulary count must be >= 1")
        _cum_table_kernel(counts, float(ns_exponent), float(domain), out)
    return out
