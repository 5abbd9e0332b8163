"""Inverted-file (IVF) cosine top-k for bulk queries: hand-written Numba kernels and wrappers.

The exact batched top-k (:func:`w2v.knn.topk_batch`) costs ``Q * V * D`` multiply-adds; for the
neighbour table (``Q = V``) and for scoring every test session that is quadratic in the number
of aids. The IVF index visits only the rows of a few clusters per query.

Coarse quantiser
----------------
Spherical k-means on unit vectors, seeded and bounded:

1. ``rng = numpy.random.default_rng(seed)`` (the only source of randomness). A training sample of
   ``min(V, train_per_list * nlist)`` distinct rows is drawn with ``rng.choice`` and sorted;
   its rows are normalised (``knn.normalize_rows``; zero rows stay zero).
2. The initial centroids are ``nlist`` distinct sample rows (``rng.choice``).
3. At most ``iterations`` rounds of: assign every sample row to its best centroid by cosine
   (``knn.topk_batch`` with ``k = 1``: score descending, then centroid ascending, so ties and
   zero rows go to the lowest centroid); new centroid = the float64 sum of its rows, normalised
   (``_centroid_sums``). A centroid left with no rows or a zero sum is re-seeded with the
   sample row that scored lowest against its own centroid (ties: lowest sample position), each
   such row used once per round. Stops early when no assignment changed.
4. Every row of the matrix is assigned to its best centroid (the same ``k = 1`` rule); the
   inverted lists are the rows of each centroid in ascending row order (``rows``, ``offsets``:
   a CSR over lists).

Every step is deterministic for a seed and independent of the thread count (``topk_batch`` is).

Search
------
For each query ``q``: the ``nprobe`` best centroids by cosine under the total order (the set
``topk_batch`` over the centroids would give, found by ``_probe_kernel`` without a heap); then
every row of those lists (packed once per search by :func:`pack_lists`) is scored with the
exact batched arithmetic of
``knn._tiles_kernel`` (unit query ``q * (1/||q||)`` dotted with the unit row ``v_j * inv_j`` by the
``_outer4x16`` micro-kernel, sequential fused multiply-adds), so each candidate's score is
bit-identical to the exact table's score for the same pair; the ``K`` best are kept in a heap
under the one total order (score descending, row ascending). Lists are not visited in row order,
so the heap test is the full comparison ``s > t or (s == t and j < id_t)``. With
``nprobe = nlist`` the result therefore equals ``knn.topk_batch`` exactly.

A query whose probed lists hold fewer than ``K`` rows (``K = k``, or ``k + 1`` when its own row
is excluded), and a zero query (all cosines 0), probe every list instead, so a result is never
shorter than the exact one; both are counted (``stats["queries_widened"]``).

Cost per query: ``nlist * D`` (coarse, tiled) + about ``nprobe * V / nlist * D`` (lists).

Automatic nprobe
----------------
The recall of a fixed fraction of lists depends on V and on the data, so when no nprobe is given
the build measures it (:func:`tune_nprobe`): ``min(recall_sample, V)`` rows drawn from
``default_rng([seed, 1])`` are the queries, their exact top-k (``knn.topk_batch``, own row
excluded) the reference; from ``default_nprobe(nlist)`` nprobe doubles (capped at nlist) until the
sampled recall@k (:func:`sampled_recall`) reaches ``target_recall``, or nprobe = nlist (exact,
recall 1.0), or the cap of ``max_probe_fraction`` of the lists (then the index records
``target_reached: false`` and the recall it has). The chosen nprobe and every trial are recorded in the index info, and a search
without an nprobe uses it. For the neighbour table (``build_ivf(..., table=True)``, which
``otto-train index`` uses) the measure is a lower bound of the table's recall after its
refinement (:func:`_refined_bound`), since the table is refined after the search.

Files (docs/FORMATS.md, "IVF index"): ``ivf_centroids.npy`` (``<f4 [nlist, D]``),
``ivf_offsets.npy`` (``<i8 [nlist + 1]``), ``ivf_rows.npy`` (``<i8 [V]``), and ``ivf.json``
(format ``otto-ivf`` version 1, written last) in the model directory.
"""
from __future__ import annotations

import json
import math
import os
import threading
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import njit

from data_prep.atomic import atomic_file
from data_prep.parallel import run_chunks

from . import knn
# the exact kernels' own building blocks, so IVF scores are the exact table's scores
from .knn import (_copy_scaled, _inv_norms_kernel, _outer4x16, _outer4x16_hits, _pack_panels, _trim_kernel,
                  heap_replace_root, heap_sort)

__all__ = ["IVFIndex", "IVFParams", "IVFError", "default_nlist", "default_nprobe", "assign_lists", "build_ivf", "expand",
           "tune_nprobe", "sampled_recall", "table_base",
           "search", "neighbor_table", "refine_table", "reprobe_table", "merge_rows", "SearchedRows", "recall_reference", "pack_lists", "PackedLists", "BulkTopK", "resolve_method", "METHODS", "AUTO_IVF_MIN_ROWS",
           "save_ivf", "load_ivf", "IVF_FORMAT_NAME", "IVF_FORMAT_VERSION"]

IVF_FORMAT_NAME = "otto-ivf"
IVF_FORMAT_VERSION = 1
FILES = ("ivf_centroids.npy", "ivf_offsets.npy", "ivf_rows.npy", "ivf.json")


class IVFError(ValueError):
    """IVF files missing, corrupt or not matching the vectors. The message names the file."""


@dataclass(frozen=True)
class IVFParams:
    """The IVF index's knobs (``otto-train index`` and ``otto-eval`` flags ``--ivf-*``).

    nlist           inverted lists (k-means centroids), at most V (default: round(4 sqrt(V)))
    nprobe          lists scanned per query; nprobe >= nlist gives the exact result (default:
                    auto, measured at build time: from max(24, nlist / 48), about 2% of the
                    lists, doubled until the sampled recall@k reaches --ivf-target-recall or
                    the next doubling would pass --ivf-max-probe-fraction of the lists)
    recall_sample   auto nprobe: rows (at most V) drawn with the seed whose exact top-k the
                    sampled recall is measured against
    target_recall   auto nprobe: the sampled recall@k the chosen nprobe reaches, in (0, 1]; for
                    the neighbour table (otto-train index), the table's sampled recall after the
                    refinement and the reprobe steps (with --ivf-reprobe-max 0: a lower bound
                    of it after the refinement, which the automatic nprobe doubles to reach)
    max_probe_fraction  auto nprobe: never more than this share of the lists, in (0, 1] (the
                    table then costs about this share of the exact scan); when the target is
                    not reached within it, the index records and reports the recall it has
    seed            seed of the k-means training sample and initial centroids
    iterations      k-means rounds at most (fewer when no assignment changes)
    train_per_list  k-means training sample: this many rows per list (at most V)
    chunk           queries per work unit shared by the threads; memory and speed only
    q_block         queries per tile inside a list; speed only
    symmetric       neighbour table only: every pair the table's search scores is offered to both
                    of its rows, so a row's list is the best of its own probed lists' rows and of
                    the rows whose probed lists include its list (no extra scoring; memory: one
                    k-heap per row per thread); off: each row keeps its own search's best only
    refine_rounds   neighbour table only: rounds of neighbour-of-neighbour refinement after the
                    search (0: none); each scores, for every row, the rows in its neighbours'
                    lists and in the lists of the rows that list it, and keeps the best
    refine_reverse  refinement: at most this many of the rows that list a row (the lowest) are
                    used; the reverse edges left out are counted in index.json
    reprobe_max     neighbour table only: while its sampled recall is below --ivf-target-recall,
                    the rows with the lowest k-th score are searched again with more lists, in
                    steps, up to this share of the rows (0: never); then the automatic nprobe
                    of the table's search is the base one
    reprobe_step    share of the rows searched again per step; the recall is measured after each
    reprobe_factor  those rows' second search scans the lists ranked nprobe + 1 up to this many
                    times nprobe (8: on the full-size trained model it reaches the target with 38%
                    fewer pairs than 16, by searching more rows less far; bench/RESULTS.md 11)
    reprobe_base    with reprobing, the table's search probes this share of the base nprobe
                    (default_nprobe, about 2% of the lists; at least 1 list), in (0, 1]
    expand_rounds   bulk searches given a neighbour table (otto-eval's session answers, when the
                    model has one): rounds that add the table rows of each query's first
                    --ivf-expand-width results, scored exactly, and keep the best (0: none); the
                    automatic nprobe is then the base one, about 2% of the lists, not measured
    expand_width    expansion: the results (best first) whose table rows are added
    """

    nlist: int | None = None
    nprobe: int | None = None
    seed: int = 0
    iterations: int = 10
    train_per_list: int = 64
    chunk: int = 4096
    q_block: int = 64
    recall_sample: int = 2000
    target_recall: float = 0.99
    max_probe_fraction: float = 0.08
    symmetric: bool = True
    refine_rounds: int = 2
    refine_reverse: int = 20
    reprobe_max: float = 0.5
    reprobe_step: float = 0.025
    reprobe_factor: int = 8
    reprobe_base: float = 0.5
    expand_rounds: int = 1
    expand_width: int = 20

    def __post_init__(self) -> None:
        for name in ("nlist", "nprobe", "iterations", "train_per_list", "chunk", "q_block", "recall_sample",
                     "refine_rounds", "refine_reverse", "reprobe_factor", "expand_rounds", "expand_width"):
            v = getattr(self, name)
            lo = {"iterations": 0, "refine_rounds": 0, "refine_reverse": 0, "reprobe_factor": 2,
                  "expand_rounds": 0, "expand_width": 0}.get(name, 1)
            if v is None and name in ("nlist", "nprobe"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: must be an integer >= {lo}, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: must be an integer >= 0, got {self.seed!r}")
        t = self.target_recall
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < t <= 1.0:
            raise ValueError(f"target_recall: must be a number in (0, 1], got {t!r}")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric: must be True or False, got {self.symmetric!r}")
        f = self.max_probe_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
            raise ValueError(f"max_probe_fraction: must be a number in (0, 1], got {f!r}")
        for name, low_open in (("reprobe_max", False), ("reprobe_step", True), ("reprobe_base", True)):
            f = getattr(self, name)
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not (0.0 < f if low_open else 0.0 <= f) \
                    or not f <= 1.0:
                raise ValueError(f"{name}: must be a number in {'(' if low_open else '['}0, 1], got {f!r}")


DEFAULTS = IVFParams()


class IVFIndex(NamedTuple):
    """Coarse centroids and the inverted lists of one matrix (see the module docstring)."""

    centroids: np.ndarray   # float32 [nlist, D], unit rows (zero only for a degenerate list)
    offsets: np.ndarray     # int64 [nlist + 1], offsets[0] = 0, offsets[-1] = V
    rows: np.ndarray        # int64 [V], rows of list l = rows[offsets[l]:offsets[l + 1]], ascending
    info: dict              # build parameters and counts (the ivf.json fields)


def default_nprobe(nlist: int) -> int:
    """``max(24, ceil(nlist / 48))``, at most ``nlist``: about 2% of the lists. Recall depends
    mostly on the fraction of lists probed; 2% gave recall@20 >= 0.99 against the exact table on
    trained models (bench/RESULTS.md, IVF section)."""
    return int(max(1, min(nlist, max(24, -(-nlist // 48)))))


def default_nlist(V: int) -> int:
    """``round(4 sqrt(V))``, at least 1 and at most ``V`` (the usual IVF rule of thumb: about
    ``sqrt(V)`` rows per list; 4x more lists keeps the list scan short at ``nprobe = 24``)."""
    return int(max(1, min(V, round(4.0 * math.sqrt(max(V, 1))))))


def _nprobe(nprobe, nlist: int, info: dict | None = None) -> int:
    """The nprobe a search uses: the given one, else the index's recorded one (``info["nprobe"]``,
    chosen at build time), else ``default_nprobe``."""
    if nprobe is None:
        recorded = (info or {}).get("nprobe")
        if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1:
            return recorded
        return default_nprobe(nlist)
    if int(nprobe) < 1:
        raise ValueError(f"nprobe: must be >= 1 (got {nprobe})")
    return int(nprobe)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------

# sums[c, d] = sum of x[i, d] (float64) over the rows i with labels[i] = c; counts[c] = their number.
# x: float32 [n, D] (unit rows); labels: int64 [n] in [0, C); sums: float64 [C, D] zeroed;
# counts: int64 [C] zeroed. Sequential in i, so the sums do not depend on threads. Degenerate: n = 0.
@njit(cache=True, nogil=True)
def _centroid_sums(x, labels, sums, counts):
    n, D = x.shape
    for i in range(n):
        c = labels[i]
        counts[c] += 1
        for d in range(D):
            sums[c, d] += np.float64(x[i, d])


# The P-th largest of keys[:n] (uint32; 1 <= P <= n; kmin: a key at most the answer, such as
# their minimum; kmax: their maximum): the largest t with count(keys >= t) >= P, by bisection
# over [kmin, kmax]. Each step is a branch-free count of the keys >= mid; when at least P but
# at most half of them are >= mid, the answer is one of those, so only they are kept (copied to
# cand, uint32 [n], in order) and later steps count fewer keys. At most 32 steps; the first few
# read all n keys, the rest about 2P or fewer. Degenerate: all keys equal gives that key at once.
@njit(cache=True, nogil=True)
def _kth_largest_key(keys, n, P, kmin, kmax, cand):
    lo = np.int64(kmin)             # count(keys >= lo) >= P
    hi = np.int64(kmax) + 1         # count(keys >= hi) = 0 < P
    src = keys
    m = n
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        t = np.uint32(mid)
        cnt = 0
        for c in range(m):
            cnt += 1 if src[c] >= t else 0
        if cnt >= P:
            lo = mid
            if 2 * cnt <= m:
                j = 0
                for c in range(m):
                    x = src[c]
                    cand[j] = x
                    j += 1 if x >= t else 0
                src = cand
                m = j
        else:
            hi = mid
    return np.uint32(lo)


# The probe set of each query: the P best centroids under the total order (score descending,
# centroid ascending), written in ascending centroid order (the scan visits lists in that order
# anyway, so only the set matters). Scores are the exact batched ones (knn._tiles_kernel's:
# queries copied scaled by q_scale, centroids packed scaled by c_scale, _outer4x16), so the set
# equals that of knn.topk_batch(centroids, c_scale, queries, P) without its K = P heap.
# Selection without sorting or data-dependent branches: each score is mapped to an order key
# (uint32 whose unsigned order is the float order: -0.0 counts as +0.0, NaN, from non-finite
# vectors only, as -inf); the P-th largest key T is found by bisection (_kth_largest_key, each
# step a branch-free count of keys >= mid, over fewer keys as it narrows); then every centroid
# with key > T and the lowest-numbered ones with key == T, up to P, are the probes.
# first (uint8 [Q, P]) flags the probes that are among the P0 best (0 <= P0 <= P; P0 = 0 flags
# none), found the same way, so a second search can scan only the lists ranked P0 + 1..P.
# queries: float32 [Q, D]; q_scale: float32 [Q]; c_panels: float32 [ceil(nlist / 16), D, 16]
# (knn._pack_panels of the centroids); 1 <= P <= nlist; probes: int64 [Q, P].
# Degenerate: D = 0 scores 0 everywhere (probes 0..P-1, the first P0 of them flagged).
@njit(cache=True, nogil=True)
def _probe_kernel(queries, q_scale, c_panels, nlist, P0, P, probes, first):
    Q, D = queries.shape
    qb = 64
    qt = np.zeros((qb, D), np.float32)
    acc = np.zeros((4, 16), np.float32)
    npan = c_panels.shape[0]
    sc = np.empty((qb, npan * 16), np.float32)
    bits = sc.view(np.uint32)
    keys = np.empty(nlist, np.uint32)
    cand = np.empty(nlist, np.uint32)
    for q0 in range(0, Q, qb):
        q1 = min(q0 + qb, Q)
        nq = q1 - q0
        _copy_scaled(queries, q_scale, q0, q1, qt)
        for p in range(npan):
            for ii in range(0, nq, 4):
                _outer4x16(qt, ii, c_panels, p, acc)
                for r in range(min(4, nq - ii)):
                    for ln in range(16):
                        x = acc[r, ln] + np.float32(0.0)       # -0.0 -> +0.0
                        sc[ii + r, 16 * p + ln] = x if x == x else -np.inf
        for r in range(nq):
            kmin = np.uint32(0xFFFFFFFF)
            kmax = np.uint32(0)
            for c in range(nlist):
                u = bits[r, c]
                kc = ~u if u >> np.uint32(31) else u | np.uint32(0x80000000)
                keys[c] = kc
                kmin = min(kmin, kc)
                kmax = max(kmax, kc)
            T = _kth_largest_key(keys, nlist, P, kmin, kmax, cand)
            above = 0
            for c in range(nlist):
                above += keys[c] > T
            ties = P - above
            T0 = np.uint32(0xFFFFFFFF)
            ties0 = 0
            if P0 > 0:
                T0 = _kth_largest_key(keys, nlist, P0, T, kmax, cand)   # T0 >= T
                above0 = 0
                for c in range(nlist):
                    above0 += keys[c] > T0
                ties0 = P0 - above0
            n = 0
            for c in range(nlist):
                kc = keys[c]
                if kc > T:
                    pass
                elif kc == T and ties > 0:
                    ties -= 1
                else:
                    continue
                f = 0
                if P0 > 0:
                    if kc > T0:
                        f = 1
                    elif kc == T0 and ties0 > 0:
                        f = 1
                        ties0 -= 1
                probes[q0 + r, n] = c
                first[q0 + r, n] = f
                n += 1


# Inverted probe lists of one query chunk: for list l, the chunk-local queries that probe it, in
# ascending query order, as a CSR (l_off int64 [nlist + 1], l_q int64 [total]); a counting sort.
# probes: int [Q, P] (best centroids of each query, -1 padding); full: bool [Q] (probe every
# list). Degenerate: Q = 0 gives empty lists. The refinement inverts a neighbour table with it
# (probes = the int32 [V, k] table, nlist = V, no full rows): the rows that list each row.
@njit(cache=True, nogil=True)
def _invert_probes(probes, full, nlist):
    Q, P = probes.shape
    cnt = np.zeros(nlist + 1, np.int64)
    for q in range(Q):
        if full[q]:
            for l in range(nlist):
                cnt[l + 1] += 1
        else:
            for p in range(P):
                l = probes[q, p]
                if l >= 0:
                    cnt[l + 1] += 1
    for l in range(nlist):
        cnt[l + 1] += cnt[l]
    l_q = np.empty(cnt[nlist], np.int64)
    pos = cnt[:nlist].copy()
    for q in range(Q):
        if full[q]:
            for l in range(nlist):
                l_q[pos[l]] = q
                pos[l] += 1
        else:
            for p in range(P):
                l = probes[q, p]
                if l >= 0:
                    l_q[pos[l]] = q
                    pos[l] += 1
    return cnt, l_q


# Scaled, panel-interleaved copy of the rows of lists l_lo..l_hi-1 (knn._pack_panels through
# the index): row rows[offsets[l] + 16 p + i] goes to dst[panel_off[l] + p, :, i] multiplied by
# row_scale, lanes past the list's end zeroed. Same float32 product as _pack_panels, so packed
# values are bit-identical. Each list starts a new panel: panel_off[l + 1] - panel_off[l] =
# ceil(len(l) / 16). Threads pack disjoint list ranges into one dst.
# vectors: float32 [V, D]; row_scale: float32 [V]; rows: int64 [V]; offsets: int64 [nlist + 1];
# panel_off: int64 [nlist + 1]; dst: float32 [panel_off[nlist], D, 16].
@njit(cache=True, nogil=True)
def _pack_lists(vectors, row_scale, rows, offsets, panel_off, l_lo, l_hi, dst):
    D = vectors.shape[1]
    for l in range(l_lo, l_hi):
        a = offsets[l]
        b = offsets[l + 1]
        for p in range((b - a + 15) // 16):
            r0 = a + 16 * p
            lanes = min(16, b - r0)
            pp = panel_off[l] + p
            for d in range(D):
                for i in range(lanes):
                    j = rows[r0 + i]
                    dst[pp, d, i] = vectors[j, d] * row_scale[j]
                for i in range(lanes, 16):
                    dst[pp, d, i] = 0.0


# Scaled copy of the queries qids[lo:hi] (knn._copy_scaled through an index): dst[r] =
# queries[qids[lo + r]] * q_scale[...]; rows up to a multiple of 4 zeroed.
@njit(cache=True, nogil=True)
def _gather_scaled(queries, q_scale, qids, lo, hi, dst):
    D = queries.shape[1]
    n = hi - lo
    for r in range(n):
        qi = qids[lo + r]
        c = q_scale[qi]
        for d in range(D):
            dst[r, d] = queries[qi, d] * c
    for r in range(n, min((n + 3) // 4 * 4, dst.shape[0])):
        for d in range(D):
            dst[r, d] = 0.0


# Symmetric offers of one 4 x 16 tile (_scan_lists_kernel): lane ln (row rows[j0 + ln]) is
# offered each of the tile's nr queries, as row q_row[l_q[q0 + r]] with score acc[r, ln], under the
# total order (score descending, row ascending), its own row skipped, and only when the score
# is at least the row's floor (rev_floor, by position; -inf: none). First one pass over the 16
# lanes flags those whose best score of the tile reaches their threshold, rev_root = max(heap
# root, floor) (rev_root holds 16
# padding entries past the last row, so the pass never reads out of bounds); padding query rows
# (r >= nr) and lanes (ln >= lanes) may raise a flag, never an offer.
@njit(cache=True, nogil=True, inline="always")
def _offer_back(acc, nr, lanes, j0, rows, q_row, l_q, q0, rev_root, rev_floor, rev_s, rev_i):
    flags = 0
    for ln in range(16):
        mx = max(max(acc[0, ln], acc[1, ln]), max(acc[2, ln], acc[3, ln]))
        flags |= np.int64(mx >= rev_root[j0 + ln]) << ln
    while flags:
        ln = _lowest_bit(flags)
        flags &= flags - 1
        if ln >= lanes:
            break
        pos = j0 + ln
        y = rows[pos]
        for r in range(nr):
            s = acc[r, ln]
            x = q_row[l_q[q0 + r]]
            if x == y:
                continue
            t = rev_s[pos, 0]
            if s >= rev_floor[pos] and (s > t or (s == t and x < rev_i[pos, 0])):
                heap_replace_root(rev_s[pos], rev_i[pos], s, x)
                rev_root[pos] = max(rev_s[pos, 0], rev_floor[pos])


# Index of the lowest set bit of m > 0 (at most 63).
@njit(cache=True, nogil=True, inline="always")
def _lowest_bit(m):
    b = 0
    while (m >> b) & 1 == 0:
        b += 1
    return b


# The list scan of one query chunk. For every list l with rows and probing queries, for each
# block of q_block probing queries: copy them scaled (_gather_scaled) and, per panel of 16 rows
# of the packed list (_pack_lists, done once per search) and group of 4 queries, compute 64
# exact scores with _outer4x16_hits (the knn._tiles_kernel arithmetic), which also flags the
# queries with a lane >= their heap root; only those lanes are tested against the root with the
# full total order (lists arrive in centroid order, not row order). Heaps sorted at the end.
# panels/panel_off: _pack_lists output for all lists; rows/offsets: the lists;
# queries: float32 [Q, D] (chunk); q_scale: float32 [Q]; l_off/l_q: _invert_probes output;
# hs/hid: float32/int64 [Q, K] pre-filled with (-inf, -1); q_floor: float32 [Q], a row scoring
# below its query's floor is not kept (-inf: no floor; the symmetric search passes each query's
# own-list floor, _own_floors, which never changes a result). Returns the pairs scored.
# Symmetric offers (a neighbour table's search, where the queries are rows of the matrix): with
# rev_s non-empty, every pair scored is also offered to the row's own heap, so row y (at position
# pos of `rows`) keeps the best k of the queries whose probed lists include y's list. q_row:
# int64 [Q], the matrix row of each query (that row itself is never offered to its own heap);
# rev_s/rev_i: float32/int64 [len(rows), k] heaps by position, pre-filled with (-inf, -1), and
# rev_floor: float32 [len(rows)], each row's floor (_own_floors) by position: a pair below it
# is not offered; rev_root: float32 [len(rows) + 16], always max(rev_s[:, 0], rev_floor) (one
# contiguous load per panel; the 16 entries past the end are never offered a pair).
# The pair's score is the same number both ways (the product of two scaled rows, summed in the
# same order), so a row's final list is the top-k of a superset of its own search's candidates.
# With rev_s empty ([0, k]) nothing is offered back and q_row/rev_root are not read.
# Degenerate: empty lists or lists nobody probes are skipped; D = 0 scores every pair 0.
@njit(cache=True, nogil=True)
def _scan_lists_kernel(panels, panel_off, rows, offsets, queries, q_scale, l_off, l_q, q_block, hs, hid,
                       q_floor, q_row, rev_root, rev_floor, rev_s, rev_i):
    D = queries.shape[1]
    nlist = offsets.shape[0] - 1
    Q, K = hs.shape
    sym = rev_s.shape[0] > 0
    qt = np.zeros(((q_block + 3) // 4 * 4, D), np.float32)
    acc = np.zeros((4, 16), np.float32)
    thr = np.empty(4, np.float32)
    pairs = 0
    for l in range(nlist):
        a = offsets[l]
        b = offsets[l + 1]
        if a == b or l_off[l] == l_off[l + 1]:
            continue
        npan = (b - a + 15) // 16
        p0 = panel_off[l]
        for qb0 in range(l_off[l], l_off[l + 1], q_block):
            qb1 = min(qb0 + q_block, l_off[l + 1])
            nq = qb1 - qb0
            pairs += nq * (b - a)
            _gather_scaled(queries, q_scale, l_q, qb0, qb1, qt)
            for p in range(npan):
                j0 = a + 16 * p
                lanes = min(16, b - j0)
                for ii in range(0, nq, 4):
                    nr = min(4, nq - ii)
                    for r in range(4):
                        thr[r] = max(hs[l_q[qb0 + ii + r], 0], q_floor[l_q[qb0 + ii + r]]) if r < nr else np.inf
                    m = _outer4x16_hits(qt, ii, panels, p0 + p, acc, thr)
                    if sym:
                        _offer_back(acc, nr, lanes, j0, rows, q_row, l_q, qb0 + ii, rev_root, rev_floor, rev_s,
                                    rev_i)
                    if m == 0:
                        continue
                    for r in range(nr):
                        if (m >> r) & 1 == 0:
                            continue
                        qi = l_q[qb0 + ii + r]
                        t = hs[qi, 0]
                        ti = hid[qi, 0]
                        fq = q_floor[qi]
                        for ln in range(lanes):
                            s = acc[r, ln]
                            j = rows[j0 + ln]
                            if s >= fq and (s > t or (s == t and j < ti)):
                                heap_replace_root(hs[qi], hid[qi], s, j)
                                t = hs[qi, 0]
                                ti = hid[qi, 0]
    for qi in range(Q):
        heap_sort(hs[qi], hid[qi], K)
    return pairs


class RefineInput(NamedTuple):
    """The input of one refinement round (``_refine_kernel`` reads its fields):

    nb        int32 [V, k]: the table (rows, best first, -1 padding)
    sc        float32 [V, k]: its exact scores (-inf padding)
    old       uint8 [V, k]: 1 where nb[x, t] was also in x's list in the previous round's input
              (all 0 for a first round)
    rev_off   int64 [V + 1], rev_idx int64 [E]: the reverse lists of nb (for each row, the rows
              that list it, ascending)
    prev_off  int64 [V + 1], prev_idx int64 [E']: the reverse lists of the previous round's input
              (all zero / empty for a first round)
    rcap      int >= 0: at most this many reverse rows (the first, ascending) are used per row
    """

    nb: np.ndarray
    sc: np.ndarray
    old: np.ndarray
    rev_off: np.ndarray
    rev_idx: np.ndarray
    prev_off: np.ndarray
    prev_idx: np.ndarray
    rcap: int


def _first_round(nb, sc, rev_off, rev_idx, rcap: int) -> RefineInput:
    """The :class:`RefineInput` of a round with no previous round (nothing offered before)."""
    V = nb.shape[0]
    return RefineInput(nb, sc, np.zeros(nb.shape, np.uint8), rev_off, rev_idx, np.zeros(V + 1, np.int64),
                       np.zeros(0, np.int64), int(rcap))


# Whether y is among the first rcap rows of the ascending list idx[off[x]:off[x + 1]].
@njit(cache=True, nogil=True, inline="always")
def _in_first(off, idx, x, rcap, y):
    a = off[x]
    b = min(off[x + 1], a + rcap)
    p = a + np.searchsorted(idx[a:b], y)
    return p < b and idx[p] == y


# One round of neighbour-of-neighbour refinement of a k-neighbour table (the "local join" of
# NN-descent, Dong, Moses and Li 2011). For row x the sources are its current neighbours and the
# first rcap rows that list x (ascending); the candidates are those reverse neighbours and every
# row in a source's current list (never x, never a row already in x's list, each row once). Each
# candidate is scored exactly and offered to x's list under the total order (score descending,
# row ascending). A true neighbour that the IVF probes missed is usually a neighbour of a
# neighbour found, and costs about (k + rcap) * k candidates per row instead of a share of all
# rows.
# Incremental (the "new / old" flags of NN-descent, exact here): a candidate offered to x in the
# previous round is not offered again. Such a candidate is in x's list or ranks below all k of
# its entries (the list was full, else it would have been kept), and a list only gets better,
# so it cannot enter; skipping it leaves the result bit-identical to offering it. The test is
# sufficient, not necessary: z is skipped when it reaches x through a source y that was a
# source of x in the previous round (y in x's previous list: t.old, or among its previous first
# rcap reverse rows: t.prev_*) and z is an old entry of y's list (t.old[y, u]: in y's previous
# list, so the previous round offered it); a reverse row that was a previous reverse row of x is
# not scored again (it was offered then). Skipped rows are still stamped, so no other path
# offers them. With a first round's input (t.old all 0, no previous reverse lists) every
# candidate is offered.
# Scores use the tiles' arithmetic: units[r] is row r scaled by its inverse norm (units[r, d] =
# vectors[r, d] * row_scale[r], the float32 product every kernel forms), the candidates' rows are
# copied 16 at a time into one panel (a row copy, then a transpose in cache: far fewer cache
# misses than gathering column by column) and scored against units[x] by _outer4x16 (rows 1..3
# of the query tile stay zero), so every score is bit-identical to the exact table's score of
# the pair, and a list can only get better.
# units: float32 [V, D]; t: RefineInput; rows order[lo..hi-1] are refined into nb_out/sc_out
# (not the inputs: other threads read them), and old_out[x, s] = 1 where nb_out[x, s] is in
# t.nb[x] (the next round's t.old); order: int64 [V], a permutation of the rows (the order in
# which they are visited: it changes the cache behaviour, never the result); mark: int32 [V]
# scratch of this thread, filled with -1 (x is its stamp, so it is never reset). Returns the
# candidates scored. Degenerate: padding slots stay padding unless a candidate fills them.
@njit(cache=True, nogil=True)
def _refine_kernel(units, t, order, lo, hi, mark, nb_out, sc_out, old_out):
    V, D = units.shape
    nb_in, sc_in, old_in, rev_off, rev_idx, prev_off, prev_idx, rcap = t
    k = nb_in.shape[1]
    maxc = (k + rcap) * (k + 1)
    vp = np.zeros((1, D, 16), np.float32)
    rows16 = np.zeros((16, D), np.float32)
    qt = np.zeros((4, D), np.float32)
    acc = np.zeros((4, 16), np.float32)
    cand = np.empty(maxc + 1, np.int64)
    src = np.empty(k + rcap, np.int64)
    src_old = np.empty(k + rcap, np.bool_)
    hs = np.empty(k, np.float32)
    hid = np.empty(k, np.int64)
    scored = 0
    for p in range(lo, hi):
        x = order[p]
        for s in range(k):
            hs[s] = -np.inf
            hid[s] = -1
        mark[x] = x
        ns = 0
        for s in range(k):
            y = nb_in[x, s]
            if y >= 0:
                mark[y] = x
                src[ns] = y
                src_old[ns] = old_in[x, s] != 0 or _in_first(prev_off, prev_idx, x, rcap, y)
                ns += 1
                sv = sc_in[x, s]
                if sv > hs[0] or (sv == hs[0] and y < hid[0]):
                    heap_replace_root(hs, hid, sv, y)
        n = 0
        for e in range(rev_off[x], min(rev_off[x + 1], rev_off[x] + rcap)):
            y = rev_idx[e]
            if mark[y] != x:
                mark[y] = x
                was = _in_first(prev_off, prev_idx, x, rcap, y)
                if not was:
                    cand[n] = y
                    n += 1
                src[ns] = y
                src_old[ns] = was
                ns += 1
        for si in range(ns):
            y = src[si]
            so = src_old[si]
            for u in range(k):
                z = nb_in[y, u]
                if z >= 0 and mark[z] != x:
                    mark[z] = x
                    if so and old_in[y, u] != 0:
                        continue
                    cand[n] = z
                    n += 1
        scored += n
        for d in range(D):
            qt[0, d] = units[x, d]
        for r0 in range(0, n, 16):
            lanes = min(16, n - r0)
            for i in range(lanes):
                z = cand[r0 + i]
                for d in range(D):
                    rows16[i, d] = units[z, d]
            for i in range(lanes, 16):
                for d in range(D):
                    rows16[i, d] = 0.0
            for d in range(D):
                for i in range(16):
                    vp[0, d, i] = rows16[i, d]
            _outer4x16(qt, 0, vp, 0, acc)
            t0 = hs[0]
            ti = hid[0]
            for i in range(lanes):
                sv = acc[0, i]
                z = cand[r0 + i]
                if sv > t0 or (sv == t0 and z < ti):
                    heap_replace_root(hs, hid, sv, z)
                    t0 = hs[0]
                    ti = hid[0]
        heap_sort(hs, hid, k)
        for s in range(k):
            z = hid[s]
            nb_out[x, s] = z
            sc_out[x, s] = hs[s]
            was = False
            if z >= 0:
                for u in range(k):
                    if nb_in[x, u] == z:
                        was = True
                        break
            old_out[x, s] = 1 if was else 0
    return scored


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------

def _assign(centroids: np.ndarray, x: np.ndarray, n_threads) -> tuple[np.ndarray, np.ndarray]:
    """Best centroid of every row of ``x`` by cosine (ties: lowest centroid): (scores, labels)."""
    inv_c = knn.inverse_norms(centroids)
    s, lab = knn.topk_batch(centroids, inv_c, x, 1, n_threads=n_threads)
    lab = lab[:, 0].copy()
    lab[lab < 0] = 0  # only when every centroid scores NaN (non-finite rows): list 0
    return s[:, 0].copy(), lab


def assign_lists(centroids, vectors, *, n_threads=None) -> tuple[np.ndarray, np.ndarray]:
    """Inverted lists of ``vectors`` under fixed ``centroids``: ``(offsets int64[nlist + 1],
    rows int64[V])``; row i joins the list of its best centroid by cosine (ties and zero rows:
    the lowest centroid), rows ascending within a list (step 4 of the module docstring)."""
    c = knn._as_matrix(centroids, "centroids")
    v = knn._as_matrix(vectors)
    nlist = c.shape[0]
    lab = _assign(c, v, n_threads)[1] if v.shape[0] else np.zeros(0, np.int64)
    rows = np.argsort(lab, kind="stable").astype(np.int64)
    offsets = np.zeros(nlist + 1, np.int64)
    np.cumsum(np.bincount(lab, minlength=nlist), out=offsets[1:])
    return offsets, rows


def build_ivf(vectors, params: IVFParams = DEFAULTS, *, k: int = 20, n_threads=None, progress=None,
              reference=None, table: bool = False, searched: dict | None = None) -> IVFIndex:
    """Seeded spherical k-means over the rows of ``vectors``, their inverted lists and the nprobe.

    ``vectors``: float32 ``[V, D]`` (any rows; zero rows are allowed). ``nlist`` is capped at ``V``
    (at least 1). ``params.nprobe = None`` chooses nprobe by measurement (:func:`tune_nprobe`,
    recall@``k``; ``reference``: :func:`recall_reference`'s result for these vectors, k and
    params, when the caller has it already; ``table``: measure the neighbour table's recall after
    the refinement instead of the search's, see :func:`tune_nprobe`); a given nprobe is recorded
    as it is (capped at nlist), with no measurement. ``progress(message)`` (optional) is called
    once per k-means round and per nprobe tried. ``searched``: see :func:`tune_nprobe`."""
    v = knn._as_matrix(vectors)
    V, D = v.shape
    nlist_req = default_nlist(V) if params.nlist is None else int(params.nlist)
    nlist = max(1, min(nlist_req, V))
    rng = np.random.default_rng(int(params.seed))
    n_train = min(V, params.train_per_list * nlist)
    sample = np.sort(rng.choice(V, n_train, replace=False)) if V else np.zeros(0, np.int64)
    x = knn.normalize_rows(v[sample])
    cent = np.zeros((nlist, D), np.float32)
    if V:
        cent[:] = x[rng.choice(n_train, nlist, replace=False)]
    labels = np.full(n_train, -1, np.int64)
    rounds = 0
    reseeded = 0
    for it in range(params.iterations):
        scores, new = _assign(cent, x, n_threads)
        changed = int((new != labels).sum())
        labels = new
        rounds = it + 1
        sums = np.zeros((nlist, D), np.float64)
        counts = np.zeros(nlist, np.int64)
        _centroid_sums(x, labels, sums, counts)
        norms = np.sqrt((sums * sums).sum(axis=1))
        ok = norms > 0
        cent[ok] = (sums[ok] / norms[ok, None]).astype(np.float32)
        bad = np.flatnonzero(~ok)
        if bad.size:  # re-seed with the worst-served sample rows (lowest score, then position)
            worst = np.lexsort((np.arange(n_train), scores))[:bad.size]
            cent[bad[:worst.size]] = x[worst]
            reseeded += int(bad.size)
        if progress is not None:
            progress(f"k-means round {rounds}/{params.iterations}: {changed} assignments changed, "
                     f"{int(bad.size)} lists re-seeded")
        if changed == 0 and bad.size == 0:
            break
    offsets, rows = assign_lists(cent, v, n_threads=n_threads)
    sizes = np.diff(offsets)
    info = {
        "nlist": int(nlist), "nlist_requested": int(nlist_req), "seed": int(params.seed),
        "iterations": int(params.iterations), "rounds_run": int(rounds),
        "train_per_list": int(params.train_per_list), "train_size": int(n_train),
        "lists_reseeded": int(reseeded), "empty_lists": int((sizes == 0).sum()),
        "max_list": int(sizes.max()) if nlist else 0, "vocab_size": int(V), "vector_size": int(D),
    }
    index = IVFIndex(cent, offsets, rows, info)
    if params.nprobe is not None:
        info.update(nprobe=int(min(params.nprobe, nlist)), nprobe_source="given")
        return index
    return tune_nprobe(index, v, knn.inverse_norms(v), k, params, n_threads=n_threads, progress=progress,
                       reference=reference, table=table, searched=searched)


def sampled_recall(exact_rows, approx_rows) -> float:
    """Share of the exact top-k rows (``-1`` padding left out) that the approximate top-k of the
    same query holds, over all queries; 1.0 when no query has a neighbour. The bench's and the
    tests' recall@k: both results follow the one total order over bit-identical scores, so rows
    tied at the k-th score are taken in the same (row ascending) order by both."""
    ex = np.asarray(exact_rows, np.int64)
    ap = np.asarray(approx_rows, np.int64)
    valid = ex >= 0
    total = int(valid.sum())
    if total == 0:
        return 1.0
    # one id space per query (id + query * stride), so a single sort-based isin checks every query
    stride = int(max(ex.max(), ap.max())) + 2
    base = np.arange(ex.shape[0], dtype=np.int64)[:, None] * stride
    hits = np.isin((ex + base)[valid], (ap + base)[ap >= 0])
    return float(hits.sum()) / total


def _recall_sample(V: int, params: IVFParams) -> np.ndarray:
    """``min(recall_sample, V)`` distinct rows, ascending, from ``default_rng([seed, 1])`` (a stream
    of its own: the k-means draws do not move it, so a loaded index re-measures the same rows)."""
    n = min(int(params.recall_sample), V)
    rng = np.random.default_rng([int(params.seed), 1])
    return np.sort(rng.choice(V, n, replace=False)).astype(np.int64)


def recall_reference(vectors, inv_norms, k: int, params: IVFParams = DEFAULTS, *,
                     n_threads=None) -> tuple[np.ndarray, np.ndarray]:
    """``(sample int64[n], exact int64[n, k])``: the ``_recall_sample`` rows (those the automatic
    nprobe is measured on) and their exact top-k (``knn.topk_batch``, own row excluded), the
    reference a finished table's rows are compared with (``sampled_recall(exact,
    table[sample])``). Cost: ``n * V * D``."""
    v = knn._as_matrix(vectors)
    inv = knn._check_inv(inv_norms, v.shape[0])
    sample = _recall_sample(v.shape[0], params)
    _, exact = knn.topk_batch(v, inv, v[sample], knn._check_k(k), exclude_self=sample, n_threads=n_threads)
    return sample, exact


class SearchedRows(NamedTuple):
    """Rows of the matrix already searched at ``nprobe`` (own row excluded) by the automatic
    nprobe's last trial, kept for the table's search (:func:`neighbor_table`): a row's search
    result does not depend on the other queries of its batch, so it is not searched again."""

    nprobe: int
    rows: np.ndarray      # int64 [n], ascending, unique
    scores: np.ndarray    # float32 [n, k]: search's scores of these rows
    ids: np.ndarray       # int64 [n, k]: search's rows
    pairs: int            # pairs scored for them (search's stats)
    widened: int          # queries among them that probed every list
    packed: PackedLists   # the packed lists the searches used (shared with the table's search)


def _merge_searched(P: int, packed, parts) -> SearchedRows:
    """One :class:`SearchedRows` from ``(rows, scores, ids, stats)`` parts at nprobe ``P`` whose
    rows are disjoint (so their stats add up)."""
    rows = np.concatenate([p[0] for p in parts]).astype(np.int64)
    order = np.argsort(rows, kind="stable")
    sc = np.concatenate([p[1] for p in parts])[order]
    ids = np.concatenate([p[2] for p in parts])[order]
    return SearchedRows(int(P), rows[order], sc, ids, sum(int(p[3]["pairs_scored"]) for p in parts),
                        sum(int(p[3]["queries_widened"]) for p in parts), packed)


def tune_nprobe(index: IVFIndex, vectors, inv_norms, k: int, params: IVFParams = DEFAULTS, *,
                n_threads=None, progress=None, reference=None, table: bool = False,
                searched: dict | None = None) -> IVFIndex:
    """``index`` with the nprobe chosen by measurement recorded in its info.

    The exact top-k (``knn.topk_batch``, own row excluded) of the ``_recall_sample`` rows is the
    reference. Starting at ``default_nprobe(nlist)``, the sample is searched through the index and
    its :func:`sampled_recall` measured; nprobe doubles until the recall reaches
    ``params.target_recall``, or nprobe = nlist (whose result is the exact one, recall 1.0), or the
    cap ``max(base, floor(max_probe_fraction * nlist))`` (the last doubling is cut to the cap).
    Records ``nprobe``, ``nprobe_source = "auto"``, ``nprobe_trials`` (``[{nprobe, recall}]`` in
    order), ``sampled_recall`` (at the chosen nprobe), ``recall_k``, ``recall_sample`` (rows
    drawn), ``target_recall``, ``max_probe_fraction`` and ``target_reached`` (False: the cap
    stopped the search below the target). Cost: ``n * V * D`` for the reference plus a few sample
    searches; ``reference``, :func:`recall_reference`'s ``(sample, exact)`` for the same vectors,
    k and params, saves the first part (its sample and shape are checked). Degenerate: V = 0 or
    k = 0 records recall 1.0 at the base nprobe.

    ``table=True`` (the neighbour table, when ``params.refine_rounds >= 1``): the measure compared
    with the target is a lower bound of the *refined table's* sampled recall instead of the
    search's (:func:`_refined_bound`: one forward round of the refinement on the sample, from the
    search results of the sample and of its neighbours; every later round, and the reverse lists,
    can only add to it). Each trial then also records ``table_bound``; the info records
    ``table_recall_bound`` at the chosen nprobe and ``nprobe_target = "table"`` (else
    ``"search"``). Extra cost per trial: a search of the sample's neighbours (about ``k`` times
    the sample) and one refinement step of the sample. With the table target and
    ``params.reprobe_max > 0``, only one nprobe is tried, :func:`table_base` (half the base by
    default): the weakest rows of the table are then searched again with more lists until its
    measured sampled recall reaches the target (:func:`reprobe_table`), which costs less than
    doubling nprobe for every row (bench/RESULTS.md section 11). ``searched`` (optional dict) receives
    ``"rows"``: the :class:`SearchedRows` of the last trial (the sample, and with ``table`` its
    neighbours), for :func:`neighbor_table`."""
    v = knn._as_matrix(vectors)
    inv = knn._check_inv(inv_norms, v.shape[0])
    k = knn._check_k(k)
    nlist = index.centroids.shape[0]
    target = float(params.target_recall)
    sample = _recall_sample(v.shape[0], params)
    q = v[sample]
    exact = None
    if sample.size and k:
        if reference is None:
            _, exact = recall_reference(v, inv, k, params, n_threads=n_threads)
        else:
            ref_sample, exact = reference
            if not np.array_equal(ref_sample, sample) or np.shape(exact) != (sample.size, k):
                raise ValueError("reference: not recall_reference's result for these vectors, k and params")
    table = bool(table) and params.refine_rounds > 0
    reprobe = table and params.reprobe_max > 0   # the table is brought to the target by reprobe_table
    trials = []
    P = table_base(nlist, params) if reprobe else default_nprobe(nlist)
    cap = _probe_cap(nlist, params)
    packed = pack_lists(index, v, inv, n_threads=n_threads) if exact is not None else None
    last = None
    while True:
        r = b = 1.0
        if exact is not None:
            found_stats = {}
            found = search(index, v, inv, q, k, nprobe=P, exclude_self=sample, chunk=params.chunk,
                           q_block=params.q_block, n_threads=n_threads, packed=packed, stats=found_stats)
            r = sampled_recall(exact, found[1])
            last = [(sample, found[0], found[1], found_stats)]
            if table:
                bound, hop = _refined_bound(index, v, inv, sample, found, P, params, packed, n_threads)
                b = sampled_recall(exact, bound)
                last.append(hop)
        trials.append({"nprobe": int(P), "recall": r} | ({"table_bound": b} if table else {}))
        m = b if table else r
        if progress is not None:
            progress(f"nprobe {P}/{nlist}: sampled recall@{k} {r:.4f} over {sample.size} rows"
                     + (f", refined table at least {b:.4f}" if table else "") + f" (target {target})")
        if m >= target or P >= cap or reprobe:
            break
        P = min(2 * P, cap)
    info = dict(index.info, nprobe=int(P), nprobe_source="auto", nprobe_trials=trials, sampled_recall=r,
                recall_k=int(k), recall_sample=int(sample.size), target_recall=target,
                max_probe_fraction=float(params.max_probe_fraction), target_reached=bool(m >= target),
                nprobe_target="table" if table else "search")
    if table:
        info["table_recall_bound"] = b
    else:
        info.pop("table_recall_bound", None)  # an index measured for the table before
    if searched is not None and last is not None:
        searched["rows"] = _merge_searched(P, packed, last)
    if progress is not None:
        progress(f"nprobe {P} chosen (auto): sampled recall@{k} {r:.4f}"
                 + (f", refined table at least {b:.4f}" if table else "") + f", target {target}"
                 + (" (refined table)" if table else "")
                 + ("" if m >= target else
                    "; the weakest rows of the table are searched again until it is reached (--ivf-reprobe-max)"
                    if reprobe else f" NOT reached within {params.max_probe_fraction:g} of the lists "
                    "(--ivf-max-probe-fraction)"))
    return index._replace(info=info)


def table_base(nlist: int, params: IVFParams = DEFAULTS) -> int:
    """The nprobe of the neighbour table's search when its weakest rows are searched again
    (``reprobe_max > 0``): ``ceil(reprobe_base * default_nprobe(nlist))``, from 1 to nlist."""
    return int(max(1, min(nlist, math.ceil(float(params.reprobe_base) * default_nprobe(nlist)))))


def _probe_cap(nlist: int, params: IVFParams) -> int:
    """The automatic nprobe's largest value: ``max(base, floor(max_probe_fraction * nlist))``, at
    most nlist."""
    return min(nlist, max(default_nprobe(nlist), int(float(params.max_probe_fraction) * nlist)))


def _refined_bound(index: IVFIndex, v, inv, sample, found, P: int, params: IVFParams, packed, n_threads):
    """``(bound, hop search)``. ``bound``, int64 ``[n, k]``: for each ``sample`` row, the top-k of
    its searched list and its neighbours' searched lists (one forward round of
    :func:`refine_table`, no reverse lists), from
    ``found = search(sample)`` at nprobe ``P``. A search result does not depend on the other
    queries of its batch, so the neighbours' lists are the rows the table's search gives them;
    each refinement round keeps the best k of a superset of these candidates (the round's own
    list, every neighbour's list, more), and a row of the exact top-k, once in a list, stays there.
    So, row by row, this result holds at most as many exact neighbours as the table after any
    number >= 1 of refinement rounds with any ``refine_reverse``: its :func:`sampled_recall` is a
    lower bound of the refined table's. Computed on the rows involved only (relabelled in
    ascending order, which keeps the total order's tie rule), with ``_refine_kernel``'s arithmetic.
    ``hop search``: ``(rows, scores, ids, stats)`` of the search at nprobe ``P`` of the
    neighbours that are not sample rows (:func:`search`'s result and stats for the rows ``rows``,
    own row excluded)."""
    sc1, nb1 = found
    n, k = nb1.shape
    # the sample's neighbours not in the sample (a sample row's list is found's already)
    hop = np.setdiff1d(np.unique(nb1[nb1 >= 0]), sample)
    hop_stats = {}
    sc2, nb2 = search(index, v, inv, v[hop], k, nprobe=P, exclude_self=hop, chunk=params.chunk,
                      q_block=params.q_block, n_threads=n_threads, packed=packed, stats=hop_stats)
    rows = np.unique(np.concatenate([sample, hop, nb2[nb2 >= 0]]))
    C = rows.size
    local = np.full((C, k), -1, np.int32)
    local_sc = np.full((C, k), -np.inf, np.float32)
    for ids, sc, lists in ((hop, sc2, nb2), (sample, sc1, nb1)):
        at = np.searchsorted(rows, ids)
        local[at] = np.where(lists >= 0, np.searchsorted(rows, np.maximum(lists, 0)), -1)
        local_sc[at] = sc
    units = _unit_rows(np.ascontiguousarray(v[rows]), np.ascontiguousarray(inv[rows]), [(0, C)], 1)
    order = np.searchsorted(rows, sample).astype(np.int64)
    out_nb = np.full((C, k), -1, np.int32)
    out_sc = np.full((C, k), -np.inf, np.float32)
    t = _first_round(knn._readonly(local), knn._readonly(local_sc), np.zeros(C + 1, np.int64), np.zeros(0, np.int64), 0)
    _refine_kernel(units, t, order, 0, n, np.full(C, -1, np.int32), out_nb, out_sc, np.zeros((C, k), np.uint8))
    got = out_nb[order]
    return np.where(got >= 0, rows[np.maximum(got, 0)], -1), (hop, sc2, nb2, hop_stats)


def _auto_matches(info: dict, params: IVFParams, V: int, k: int, target: str = "search") -> bool:
    """Whether ``info`` records an auto nprobe measured as ``params`` and ``k`` would measure it,
    for ``target`` (``"search"``: the search's recall; ``"table"``: the refined table's bound)."""
    return (info.get("nprobe_source") == "auto" and info.get("recall_k") == k
            and info.get("nprobe_target", "search") == target
            and info.get("recall_sample") == min(int(params.recall_sample), V)
            and info.get("target_recall") == float(params.target_recall)
            and info.get("max_probe_fraction", 1.0) == float(params.max_probe_fraction))


def _search_choice(info: dict, params: IVFParams, V: int, k: int) -> dict | None:
    """The info the search target (``nprobe_target = "search"``) would record, derived from an
    index whose automatic nprobe was measured for the table (``info``, matching ``params`` and
    ``k``), or None when its trials do not decide it. Both targets try the same nprobe sequence
    and record the search's recall at each; the table's measure (a bound at least the search's
    recall) stops no later. So the search target stops at the table's last trial when the
    search's recall reached the target there or that trial is the cap, and otherwise needs
    nprobe values the table did not try."""
    if not _auto_matches(info, params, V, k, "table") or not info.get("nprobe_trials"):
        return None
    if info["nprobe_trials"][0]["nprobe"] != default_nprobe(int(info["nlist"])):
        return None  # the table's search started below the search's base (reprobing): not the same sequence
    cap = _probe_cap(int(info["nlist"]), params)
    target = float(params.target_recall)
    last = info["nprobe_trials"][-1]
    if last["recall"] < target and last["nprobe"] < cap:
        return None
    out = {key: val for key, val in info.items() if key != "table_recall_bound"}
    out.update(nprobe_trials=[{"nprobe": t["nprobe"], "recall": t["recall"]} for t in info["nprobe_trials"]],
               nprobe=int(last["nprobe"]), sampled_recall=last["recall"], target_reached=bool(last["recall"] >= target),
               nprobe_target="search")
    return out


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------

class PackedLists(NamedTuple):
    """The rows of every list scaled to unit length and interleaved in panels of 16 (the layout
    the scan reads), made once per search or once per :class:`BulkTopK`: ``panels`` float32
    ``[panel_off[-1], D, 16]`` (list l in ``panels[panel_off[l]:panel_off[l + 1]]``, lanes past
    its end zero; about ``V * D * 4`` bytes plus padding), ``panel_off`` int64 ``[nlist + 1]``."""

    panels: np.ndarray
    panel_off: np.ndarray


def pack_lists(index: IVFIndex, vectors, inv_norms, *, n_threads=None) -> PackedLists:
    """Pack every list of ``index`` (rows of ``vectors`` times ``inv_norms``) for :func:`search`,
    list ranges shared among ``n_threads`` threads. The values are those the exact kernel packs."""
    v = knn._as_matrix(vectors)
    V, D = v.shape
    inv = knn._check_inv(inv_norms, V)
    _check_index(index, V, D)
    offsets = np.ascontiguousarray(index.offsets, np.int64)
    rows = np.ascontiguousarray(index.rows, np.int64)
    nlist = offsets.shape[0] - 1
    panel_off = np.zeros(nlist + 1, np.int64)
    np.cumsum((np.diff(offsets) + 15) // 16, out=panel_off[1:])
    panels = np.empty((int(panel_off[-1]), D, 16), np.float32)
    n = knn._threads(n_threads)
    # list ranges of about equal row counts, several per thread
    bounds = np.searchsorted(offsets, np.linspace(0, V, 4 * n + 1)).clip(0, nlist)
    bounds[0], bounds[-1] = 0, nlist
    ranges = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    run_chunks(ranges, n, lambda lo, hi: _pack_lists(v, inv, rows, offsets, panel_off, lo, hi, panels))
    return PackedLists(knn._readonly(panels), knn._readonly(panel_off))


def search(index: IVFIndex, vectors, inv_norms, queries, k, *, nprobe: int | None = None,
           exclude_self=None, chunk: int = DEFAULTS.chunk, q_block: int = DEFAULTS.q_block,
           n_threads=None, progress=None, stats: dict | None = None,
           packed: PackedLists | None = None, probe_from: int = 0,
           symmetric: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Approximate cosine top-k of many queries: ``(scores float32[Q, k], rows int64[Q, k])``.

    The same contract as :func:`w2v.knn.topk_batch` (same scores, order, ``exclude_self`` and
    ``-1``/``-inf`` padding beyond the eligible rows), restricted to the rows of each query's
    ``nprobe`` nearest lists (None: the index's recorded nprobe, else ``default_nprobe(nlist)``);
    ``nprobe >= nlist`` gives exactly
    ``topk_batch``'s result.
    ``vectors``/``inv_norms`` must be the matrix the index was built on and its inverse norms.
    Chunks of ``chunk`` queries are shared among ``n_threads`` threads (None: all CPUs); the
    result does not depend on chunk, q_block or threads. ``progress(done, total)`` after each
    chunk. ``stats`` (optional dict) receives ``queries_widened`` and ``pairs_scored``.
    ``packed``: :func:`pack_lists` of the same index and matrix (made here when None; pass it to
    share the packing between searches).
    ``probe_from`` (0 <= probe_from <= nprobe): scan only the lists ranked ``probe_from + 1`` to
    ``nprobe`` of each query (the continuation of a search at ``nprobe = probe_from``); a query
    that search scanned every list for (zero, or fewer than k rows in its lists) gets nothing.
    The top-k of the two results together (:func:`merge_rows`) is then the search at ``nprobe``.
    ``symmetric`` (a neighbour table's search; needs ``exclude_self`` naming a distinct row of
    ``vectors`` for every query, whose vector the query is, and ``probe_from = 0``): every pair
    scored is offered to both of its rows, so query i's result is the top-k over the rows of its
    probed lists and the query rows whose probed lists include the list of i's row (the same
    exact scores; each result at least as good as without). The extra memory is one k-heap per
    row of the matrix per thread (12 * V * k bytes each); ``stats`` then also receives
    ``symmetric_entries``, the result entries that came from the other direction only.
    """
    v = knn._as_matrix(vectors)
    V, D = v.shape
    inv = knn._check_inv(inv_norms, V)
    k = knn._check_k(k)
    _check_index(index, V, D)
    nlist = index.centroids.shape[0]
    nprobe = _nprobe(nprobe, nlist, index.info)
    if int(chunk) < 1 or int(q_block) < 1:
        raise ValueError(f"chunk/q_block: must be >= 1 (got {chunk}/{q_block})")
    P = min(nprobe, nlist)
    if isinstance(probe_from, bool) or not isinstance(probe_from, (int, np.integer)) or not 0 <= probe_from <= nprobe:
        raise ValueError(f"probe_from: must be an integer in [0, nprobe = {nprobe}], got {probe_from!r}")
    P0 = min(int(probe_from), P)
    qs, skip, K = knn.batch_queries(queries, D, V, k, exclude_self)
    Q = qs.shape[0]
    sym = bool(symmetric)
    if sym:
        if P0:
            raise ValueError("symmetric: a continuation search (probe_from > 0) cannot offer pairs back")
        whole = Q == V and np.array_equal(skip, np.arange(V))   # a whole table: no gathered copy to compare
        if exclude_self is None or (Q and (skip.min() < 0 or np.unique(skip).size != Q)) \
                or not np.array_equal(qs, v if whole else v[skip]):
            raise ValueError("symmetric: every query must be a distinct row of vectors, named by exclude_self")
    out_s = np.full((Q, k), -np.inf, np.float32)
    out_i = np.full((Q, k), -1, np.int64)
    info = {"queries_widened": 0, "pairs_scored": 0, "nprobe": P, "nlist": int(nlist)}
    if k == 0 or Q == 0 or V == 0:
        if stats is not None:
            stats.update(info)
        return out_s, out_i
    q_scale = np.empty(Q, np.float32)
    _inv_norms_kernel(qs, q_scale)
    skip = knn._readonly(skip)
    cent = knn._readonly(np.ascontiguousarray(index.centroids, np.float32))
    inv_c = knn.inverse_norms(cent)
    c_panels = np.zeros(((nlist + 15) // 16, D, 16), np.float32)
    _pack_panels(cent, inv_c, 0, nlist, c_panels)
    c_panels = knn._readonly(c_panels)
    sizes = np.diff(index.offsets)
    rows = knn._readonly(np.ascontiguousarray(index.rows, np.int64))
    offsets = knn._readonly(np.ascontiguousarray(index.offsets, np.int64))
    if packed is None:
        packed = pack_lists(index, v, inv, n_threads=n_threads)
    elif packed.panel_off.shape != (nlist + 1,) or packed.panels.shape[1:] != (D, 16) \
            or packed.panels.shape[0] != packed.panel_off[-1] \
            or not np.array_equal(packed.panel_off[1:] - packed.panel_off[:-1], (sizes + 15) // 16):
        raise ValueError("packed: not the packed lists of this index")
    # rows a query's lists must hold, else it probes every list: k, or k + 1 when it excludes a row
    need = np.minimum(k + (skip >= 0), V)

    n = knn._threads(n_threads)
    per = max(1, min(int(chunk), -(-Q // n)))
    chunks = [(lo, min(lo + per, Q)) for lo in range(0, Q, per)]

    heaps = []  # symmetric: (rev_root, rev_s, rev_i) of each thread, by position in index.rows
    local = threading.local()
    lock = threading.Lock()
    none_s, none_i, none_r = np.zeros((0, k), np.float32), np.zeros((0, k), np.int64), np.zeros(0, np.float32)
    q_floor = np.full(Q, -np.inf, np.float32)
    rev_floor = none_r
    if sym:
        # each row's own-list floor: its result holds k rows at least that good, so lower scores are
        # dropped before any heap test, in both directions (the result is unchanged)
        floor = _own_floors(packed, v, inv, rows, offsets, k, n)
        q_floor = floor[skip]
        rev_floor = knn._readonly(floor[rows])
        own = np.empty(V, np.int64)
        own[rows] = np.repeat(np.arange(nlist, dtype=np.int64), sizes)
        unprobed = [0]

    def scan(lo, hi):
        if sym and not hasattr(local, "heap"):
            local.heap = (np.concatenate([rev_floor, np.full(16, -np.inf, np.float32)]),
                          np.full((V, k), -np.inf, np.float32), np.full((V, k), -1, np.int64))
            with lock:
                heaps.append(local.heap)
        rev_root, rev_s, rev_i = local.heap if sym else (none_r, none_s, none_i)
        probes = np.empty((hi - lo, P), np.int64)
        first = np.zeros((hi - lo, P), np.uint8)
        _probe_kernel(qs[lo:hi], q_scale[lo:hi], c_panels, nlist, P0, P, probes, first)
        held = sizes[probes]   # rows in each probed list
        full = (q_scale[lo:hi] == 0) | (held.sum(axis=1) < need[lo:hi])
        if P0:  # the search at P0 scanned the flagged lists, and every list for queries it widened
            done = (q_scale[lo:hi] == 0) | ((held * first).sum(axis=1) < need[lo:hi])
            probes[(first == 1) | done[:, None]] = -1
            full[:] = False
        if sym:  # the floors hold only for a query that scans its own row's list
            missing = int((~(full | (probes == own[skip[lo:hi], None]).any(axis=1))).sum())
            if missing:
                with lock:
                    unprobed[0] += missing
        l_off, l_q = _invert_probes(knn._readonly(probes), full, nlist)
        hs = np.full((hi - lo, K), -np.inf, np.float32)
        hid = np.full((hi - lo, K), -1, np.int64)
        pairs = _scan_lists_kernel(packed.panels, packed.panel_off, rows, offsets, qs[lo:hi], q_scale[lo:hi], l_off, l_q,
                                   int(q_block), hs, hid, q_floor[lo:hi], skip[lo:hi], rev_root, rev_floor, rev_s,
                                   rev_i)
        _trim_kernel(hs, hid, skip[lo:hi], out_s[lo:hi], out_i[lo:hi])
        return int(full.sum()), int(pairs)

    for widened, pairs in run_chunks(chunks, n, scan, progress):
        info["queries_widened"] += widened
        info["pairs_scored"] += pairs
    if sym:
        if unprobed[0]:
            raise ValueError(f"symmetric: {unprobed[0]} queries do not probe their own row's list, so the lists "
                           "are not these vectors' assignment to the centroids (rebuild the index)")
        info["symmetric_entries"] = _merge_back(out_s, out_i, skip, rows, heaps)
    if stats is not None:
        stats.update(info)
    return out_s, out_i


def _own_floors(packed: PackedLists, v, inv, rows, offsets, k: int, n_threads: int) -> np.ndarray:
    """float32 [V]: each row's floor, the k-th best score (total order) of the other rows of its own
    list, -inf when the list holds fewer than k others: the list scan (``_scan_lists_kernel``)
    with every list probed by its own rows only, self excluded (``_trim_kernel``). A row's own list
    is its best centroid's, so it is among its probes and its search result holds k rows at least
    that good: lower scores can be dropped unseen."""
    V = v.shape[0]
    nlist = offsets.shape[0] - 1
    floor = np.full(V, -np.inf, np.float32)
    none_s, none_i, none_r = np.zeros((0, k), np.float32), np.zeros((0, k), np.int64), np.zeros(0, np.float32)

    def lists(a, b):
        lo, hi = int(offsets[a]), int(offsets[b])
        who = rows[lo:hi]   # the queries: these lists' rows, list by list
        l_off = np.clip(offsets - lo, 0, hi - lo)   # list l probed by its own rows only
        q_scale = inv[who]
        hs = np.full((hi - lo, k + 1), -np.inf, np.float32)
        hid = np.full((hi - lo, k + 1), -1, np.int64)
        _scan_lists_kernel(packed.panels, packed.panel_off, rows, offsets, v[who], q_scale, l_off,
                           np.arange(hi - lo, dtype=np.int64), DEFAULTS.q_block, hs, hid,
                           np.full(hi - lo, -np.inf, np.float32), who, none_r, none_r, none_s, none_i)
        out_s = np.empty((hi - lo, k), np.float32)
        _trim_kernel(hs, hid, who, out_s, np.empty((hi - lo, k), np.int64))
        floor[who] = out_s[:, k - 1]

    per = max(1, -(-nlist // (4 * n_threads)))
    run_chunks([(a, min(a + per, nlist)) for a in range(0, nlist, per)], n_threads, lists)
    return floor


def _merge_back(out_s, out_i, skip, rows, heaps) -> int:
    """Merge the threads' symmetric heaps (``_scan_lists_kernel``: by position in ``rows``) into
    the results of the queries whose row they are (query q is row ``skip[q]``), in place; returns
    the result entries that came from the heaps only."""
    V = heaps[0][1].shape[0] if heaps else 0
    qpos = np.full(V, -1, np.int64)
    qpos[skip] = np.arange(skip.shape[0], dtype=np.int64)
    q_of = qpos[rows]  # query of each position (-1: the row is not a query)
    keep = np.flatnonzero(q_of >= 0)
    before = out_i.copy()
    for _root, rev_s, rev_i in heaps:
        _sort_heaps(rev_s, rev_i)
        if keep.size == V:  # every row is a query (a whole table): no copies
            _merge_rows_kernel(out_i, out_s, q_of, rev_s, rev_i)
        else:
            _merge_rows_kernel(out_i, out_s, q_of[keep], rev_s[keep], rev_i[keep])
    return int(_new_entries(before, out_i))


# Each row of (hs, hid) is a heap (root: the worst entry); sorted in place, best first.
@njit(cache=True, nogil=True)
def _sort_heaps(hs, hid):
    for r in range(hs.shape[0]):
        heap_sort(hs[r], hid[r], hs.shape[1])


# Entries of after[q] (ids >= 0) not in before[q], summed over the rows.
@njit(cache=True, nogil=True)
def _new_entries(before, after):
    n = 0
    for q in range(after.shape[0]):
        for a in range(after.shape[1]):
            z = after[q, a]
            if z < 0:
                continue
            found = False
            for b in range(before.shape[1]):
                if before[q, b] == z:
                    found = True
                    break
            if not found:
                n += 1
    return n


# Expansion of bulk search candidates through a neighbour table (one round; Dong, Moses and Li's
# local join seen from an outside query): for query i in [lo, hi) the candidates are its current
# K rows (rows_in[i], best first, -1 padding last) and the table rows of its first min(width, K)
# ones (table[y, :], -1 padding skipped), each row once. A true neighbour of the query that its
# probed lists missed is usually a table neighbour of a row it found. The current rows keep their
# scores; every new row is scored with the exact arithmetic (the row scaled by its inverse norm,
# vectors[z, d] * inv_norms[z], copied 16 at a time into a panel and dotted with the scaled query
# queries[i, d] * q_scale[i] by _outer4x16), so each score is bit-identical to the exact
# top-k's score of the pair; the K best under the total order (score descending, row
# ascending) are written to rows_out/sc_out (never the inputs' rows: other threads read them).
# vectors: float32 [V, D]; inv_norms: float32 [V]; table: int32 [V, kt] (rows, -1 padding);
# queries: float32 [Q, D]; q_scale: float32 [Q]; rows_in: int64 [Q, K]; sc_in: float32 [Q, K];
# mark: int64 [V] scratch of this thread, filled with -1 before the first call of an expansion
# (the query index is its stamp, so it is never reset). Returns the new rows scored.
# Degenerate: width = 0, kt = 0 or a query with no rows changes nothing.
@njit(cache=True, nogil=True)
def _expand_kernel(vectors, inv_norms, table, queries, q_scale, rows_in, sc_in, width, lo, hi, mark,
                   rows_out, sc_out):
    V, D = vectors.shape
    K = rows_in.shape[1]
    kt = table.shape[1]
    W = min(width, K)
    vp = np.zeros((1, D, 16), np.float32)
    rows16 = np.zeros((16, D), np.float32)
    qt = np.zeros((4, D), np.float32)
    acc = np.zeros((4, 16), np.float32)
    cand = np.empty(max(1, W * kt), np.int64)
    hs = np.empty(K, np.float32)
    hid = np.empty(K, np.int64)
    scored = 0
    for i in range(lo, hi):
        for s in range(K):
            hs[s] = -np.inf
            hid[s] = -1
        for s in range(K):
            y = rows_in[i, s]
            if y >= 0:
                mark[y] = i
                sv = sc_in[i, s]
                if sv > hs[0] or (sv == hs[0] and y < hid[0]):
                    heap_replace_root(hs, hid, sv, y)
        n = 0
        for s in range(W):
            y = rows_in[i, s]
            if y < 0:
                continue
            for u in range(kt):
                z = table[y, u]
                if z >= 0 and mark[z] != i:
                    mark[z] = i
                    cand[n] = z
                    n += 1
        scored += n
        c = q_scale[i]
        for d in range(D):
            qt[0, d] = queries[i, d] * c
        for r0 in range(0, n, 16):
            lanes = min(16, n - r0)
            for j in range(lanes):
                z = cand[r0 + j]
                f = inv_norms[z]
                for d in range(D):
                    rows16[j, d] = vectors[z, d] * f
            for j in range(lanes, 16):
                for d in range(D):
                    rows16[j, d] = 0.0
            for d in range(D):
                for j in range(16):
                    vp[0, d, j] = rows16[j, d]
            _outer4x16(qt, 0, vp, 0, acc)
            t0 = hs[0]
            ti = hid[0]
            for j in range(lanes):
                sv = acc[0, j]
                z = cand[r0 + j]
                if sv > t0 or (sv == t0 and z < ti):
                    heap_replace_root(hs, hid, sv, z)
                    t0 = hs[0]
                    ti = hid[0]
        heap_sort(hs, hid, K)
        for s in range(K):
            rows_out[i, s] = hid[s]
            sc_out[i, s] = hs[s]
    return scored


def expand(vectors, inv_norms, table, queries, scores, rows, *, width: int = 20, rounds: int = 1,
           chunk: int = DEFAULTS.chunk, n_threads=None, stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bulk top-k candidates improved through a neighbour table: new ``(scores float32[Q, K],
    rows int64[Q, K])``.

    ``scores``/``rows``: a top-K result of ``queries`` over ``vectors`` (:func:`search`'s, best
    first, exact scores). Each round adds, for every query, the rows that ``table`` (int32
    ``[V, kt]``, e.g. the model's ``neighbors.npy``) lists for its first ``width`` rows, scored
    exactly, and keeps the K best under the total order (``_expand_kernel``); a round never makes
    a slot worse. ``stats`` receives ``expand_scored`` (rows scored over all rounds). The result
    does not depend on chunk or threads. Degenerate: ``rounds = 0``, ``width = 0`` or an empty
    table return copies of the inputs."""
    v = knn._as_matrix(vectors)
    V, D = v.shape
    inv = knn._check_inv(inv_norms, V)
    tb = np.ascontiguousarray(table, np.int32)
    if tb.ndim != 2 or tb.shape[0] != V:
        raise ValueError(f"table: expected [V = {V}, kt] rows, got shape {tb.shape}")
    qs = knn._as_matrix(queries, "queries")
    sc = np.array(scores, np.float32, order="C")
    rw = np.array(rows, np.int64, order="C")
    if qs.shape[1] != D or sc.shape != rw.shape or sc.ndim != 2 or sc.shape[0] != qs.shape[0]:
        raise ValueError(f"queries/scores/rows: shapes {qs.shape}/{sc.shape}/{rw.shape} do not match [Q, {D}]/[Q, K]")
    for name, val, lo in (("width", width, 0), ("rounds", rounds, 0), ("chunk", chunk, 1)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
            raise ValueError(f"{name}: must be an integer >= {lo}, got {val!r}")
    Q = qs.shape[0]
    scored = 0
    if Q and V and sc.shape[1] and int(width) and tb.shape[1]:
        q_scale = knn.inverse_norms(qs)
        n = knn._threads(n_threads)
        per = max(1, min(int(chunk), -(-Q // n)))
        chunks = [(lo, min(lo + per, Q)) for lo in range(0, Q, per)]
        tb = knn._readonly(tb)
        for _ in range(int(rounds)):
            marks = [np.full(V, -1, np.int64) for _ in range(min(n, len(chunks)))]
            out_s, out_r = np.empty_like(sc), np.empty_like(rw)

            def one(lo, hi, marks=marks, rw=rw, sc=sc, out_r=out_r, out_s=out_s):  # this round's arrays
                mark = marks.pop()
                try:
                    return _expand_kernel(v, inv, tb, qs, q_scale, rw, sc, int(width), lo, hi, mark, out_r, out_s)
                finally:
                    marks.append(mark)

            scored += int(sum(run_chunks(chunks, n, one)))
            sc, rw = out_s, out_r
    if stats is not None:
        stats["expand_scored"] = stats.get("expand_scored", 0) + scored
    return sc, rw


# Row-wise merge of two top-k lists, in place: for t in 0..n-1, row r = rows[t] of (nb, sc)
# (int32 / float32 [V, k], best first, -1 / -inf padding) becomes the best k of its own list and
# (s2[t], i2[t]) (float32 / int64 [n, k2], the same order and padding) under the total order
# (score descending, row ascending). A row in both lists is the same pair with the same score
# bits, so both lists reach it at the same step (everything before it in either list ranks
# above it): it is taken once. Slots past the rows found hold -1 / -inf. Degenerate: n = 0.
@njit(cache=True, nogil=True)
def _merge_rows_kernel(nb, sc, rows, s2, i2):
    k = nb.shape[1]
    k2 = i2.shape[1]
    out_i = np.empty(k, np.int32)
    out_s = np.empty(k, np.float32)
    for t in range(rows.shape[0]):
        r = rows[t]
        a = 0
        b = 0
        n = 0
        while n < k:
            ia = nb[r, a] if a < k else -1
            ib = i2[t, b] if b < k2 else -1
            if ia < 0 and ib < 0:
                break
            if ib < 0 or (ia >= 0 and (sc[r, a] > s2[t, b] or (sc[r, a] == s2[t, b] and ia <= ib))):
                out_i[n] = ia
                out_s[n] = sc[r, a]
                if ia == ib:
                    b += 1
                a += 1
            else:
                out_i[n] = ib
                out_s[n] = s2[t, b]
                b += 1
            n += 1
        for j in range(n):
            nb[r, j] = out_i[j]
            sc[r, j] = out_s[j]
        for j in range(n, k):
            nb[r, j] = -1
            sc[r, j] = -np.inf


def merge_rows(neighbors, scores, rows, s2, i2) -> None:
    """In place: row ``rows[t]`` of the table ``(neighbors int32[V, k], scores float32[V, k])``
    becomes the top-k of its list and ``(s2[t], i2[t])`` (a search result of that row: the same
    pairs have the same scores), under the total order, each row once (``_merge_rows_kernel``)."""
    rows = np.ascontiguousarray(rows, np.int64)
    s2 = np.ascontiguousarray(s2, np.float32)
    i2 = np.ascontiguousarray(i2, np.int64)
    if neighbors.dtype != np.int32 or scores.dtype != np.float32 or neighbors.shape != scores.shape \
            or not (neighbors.flags.c_contiguous and scores.flags.c_contiguous and neighbors.flags.writeable):
        raise ValueError("neighbors/scores: expected writable C-contiguous int32/float32 arrays of one shape")
    if s2.shape != i2.shape or s2.ndim != 2 or s2.shape[0] != rows.shape[0]:
        raise ValueError(f"s2/i2: shapes {s2.shape}/{i2.shape} do not match [{rows.shape[0]}, k]")
    if rows.size and (rows.min() < 0 or rows.max() >= neighbors.shape[0]):
        raise ValueError("rows: out of range")
    _merge_rows_kernel(neighbors, scores, rows, s2, i2)


def _reverse(nb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reverse lists of a table, inverted like the probes of a search (``_invert_probes``: for
    each row, the rows that list it, ascending): ``(rev_off int64 [V + 1], rev_idx int64 [E])``."""
    return _invert_probes(nb, np.zeros(nb.shape[0], np.bool_), nb.shape[0])


def _refine_round(units, t: RefineInput, order, chunks, n: int, progress):
    """One round of :func:`refine_table` on ``t``: ``(neighbors, scores, old, candidates scored)``,
    ``old`` the next round's :attr:`RefineInput.old`."""
    V, k = t.nb.shape
    out_nb = np.empty_like(t.nb)
    out_sc = np.empty_like(t.sc)
    out_old = np.empty(t.nb.shape, np.uint8)

    def one(lo, hi):
        mark = np.full(V, -1, np.int32)
        return _refine_kernel(units, t, order, lo, hi, mark, out_nb, out_sc, out_old)

    scored = int(sum(run_chunks(chunks, n, one, progress)))
    return out_nb, out_sc, out_old, scored


def _unit_rows(v, inv, chunks, n: int) -> np.ndarray:
    """float32 [V, D]: row r = v[r] * inv[r], the product every kernel forms (``knn._copy_scaled``),
    in private memory (row gathers from it miss the cache less than from a file mapping)."""
    units = np.empty(v.shape, np.float32)
    run_chunks(chunks, n, lambda lo, hi: _copy_scaled(v, inv, lo, hi, units[lo:hi]))
    return knn._readonly(units)


def refine_table(vectors, inv_norms, neighbors, scores, *, rounds: int = DEFAULTS.refine_rounds,
                 reverse: int = DEFAULTS.refine_reverse, order=None, n_threads=None, progress=None,
                 stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``rounds`` rounds of neighbour-of-neighbour refinement of a k-neighbour table (own row
    excluded, exact scores, best first, ``-1`` padding): each row's list is offered its current
    neighbours' lists and the first ``reverse`` rows (ascending) that list it, and their lists
    (``_refine_kernel``). Returns new ``(neighbors int32[V, k], scores float32[V, k])``; every
    score stays the exact table's score of its pair and no list gets worse. ``order``: the rows
    in the order they are visited (a permutation of ``0..V-1``; default ascending), for the cache
    only: the result is the same for every order. :func:`neighbor_table` passes the IVF index's
    rows, list by list, so rows visited one after the other share most of their candidates.
    ``stats`` receives ``refine_candidates`` (scored, summed over rounds) and
    ``reverse_left_out`` (reverse edges beyond ``reverse``, summed over rounds).
    ``progress(done, total)`` counts rows over all rounds. Extra memory: one scaled copy of the
    vectors (4 * V * D bytes) and the reverse lists while it runs."""
    v = knn._as_matrix(vectors)
    V = v.shape[0]
    inv = knn._check_inv(inv_norms, V)
    nb = np.ascontiguousarray(neighbors, np.int32)
    sc = np.ascontiguousarray(scores, np.float32)
    if nb.ndim != 2 or nb.shape[0] != V or sc.shape != nb.shape:
        raise ValueError(f"neighbors/scores: shapes {nb.shape}/{sc.shape} do not match [V={V}, k]")
    for name, val in (("rounds", rounds), ("reverse", reverse)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 0:
            raise ValueError(f"{name}: must be an integer >= 0, got {val!r}")
    if order is None:
        order = np.arange(V, dtype=np.int64)
    else:
        order = np.ascontiguousarray(order, np.int64)
        if order.shape != (V,) or (V and (order.min() < 0 or order.max() >= V
                                          or np.bincount(order, minlength=V).min() != 1)):
            raise ValueError(f"order: must be a permutation of the {V} rows")
    n = knn._threads(n_threads)
    info = {"refine_candidates": 0, "reverse_left_out": 0}
    per = max(1, min(16384, -(-V // n)))
    chunks = [(lo, min(lo + per, V)) for lo in range(0, V, per)]
    units = _unit_rows(v, inv, chunks, n) if rounds else None
    if rounds:
        t = _first_round(knn._readonly(nb), knn._readonly(sc), *_reverse(nb), int(reverse))
    for r in range(int(rounds)):
        step = None if progress is None else (lambda done, total, r=r: progress(r * V + done, rounds * V))
        info["reverse_left_out"] += int(np.maximum(np.diff(t.rev_off) - reverse, 0).sum())
        nb, sc, old, scored = _refine_round(units, t, order, chunks, n, step)
        info["refine_candidates"] += scored
        if r + 1 < rounds:  # the next round offers only what this one did not
            t = RefineInput(knn._readonly(nb), knn._readonly(sc), knn._readonly(old), *_reverse(nb), t.rev_off,
                            t.rev_idx, int(reverse))
        del old
    if stats is not None:
        stats.update(info)
    return nb, sc


def reprobe_table(vectors, inv_norms, index: IVFIndex, neighbors, scores, reference, *, nprobe: int,
                  params: IVFParams = DEFAULTS, packed: PackedLists | None = None, n_threads=None,
                  progress=None, stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The weakest rows of a table searched again with more lists, until its sampled recall
    reaches ``params.target_recall``: new ``(neighbors int32[V, k], scores float32[V, k])``.

    ``neighbors``/``scores``: a table searched at ``nprobe`` (:func:`neighbor_table`, refined or
    not). ``reference``: :func:`recall_reference`'s ``(sample, exact)``. While the table's
    :func:`sampled_recall` is below the target and at most ``params.reprobe_max`` of the rows have
    been searched again, the next ``params.reprobe_step`` of the rows (rows by their k-th score
    in the table, lowest first, then row ascending; the ranking is made once, before the first
    step) get the lists ranked ``nprobe + 1`` to ``reprobe_factor * nprobe`` scanned
    (:func:`search` with ``probe_from``) and merged into their lists (:func:`merge_rows`); then the
    recall is measured again. A row's k-th score is what its search and refinement found: it is
    low where the neighbourhood is sparse, and that is where they miss most (bench/RESULTS.md
    section 11). Rows are chosen by their scores only, never by whether they are in the sample,
    so the sample's recall stays an estimate of the whole table's. ``stats`` receives
    ``reprobe_rows``, ``reprobe_nprobe``, ``reprobe_pairs`` and ``reprobe_trials`` (``[{rows,
    recall}]`` after each step). ``progress(message)`` after each step. Degenerate: nothing to do
    when the recall is reached, ``reprobe_max = 0`` or ``nprobe >= nlist`` (the search was
    exact)."""
    v = knn._as_matrix(vectors)
    V = v.shape[0]
    inv = knn._check_inv(inv_norms, V)
    nb = np.array(neighbors, np.int32, order="C")
    sc = np.array(scores, np.float32, order="C")
    sample, exact = reference
    nlist = index.centroids.shape[0]
    P = min(int(nprobe), nlist)
    P2 = min(nlist, int(params.reprobe_factor) * P)
    target = float(params.target_recall)
    r = sampled_recall(exact, nb[sample].astype(np.int64)) if len(sample) else 1.0
    limit = int(math.floor(float(params.reprobe_max) * V))
    step = max(1, int(math.ceil(float(params.reprobe_step) * V)))
    info = {"reprobe_rows": 0, "reprobe_nprobe": int(P2), "reprobe_pairs": 0, "reprobe_trials": []}
    if r < target and limit > 0 and P < nlist and nb.shape[1]:
        if packed is None:
            packed = pack_lists(index, v, inv, n_threads=n_threads)
        weakest = np.lexsort((np.arange(V), sc[:, -1]))
        done = 0
        while r < target and done < limit:
            rows = np.sort(weakest[done:min(done + step, limit)])
            got = {}
            s2, i2 = search(index, v, inv, v[rows], nb.shape[1], nprobe=P2, probe_from=P, exclude_self=rows,
                            chunk=params.chunk, q_block=params.q_block, n_threads=n_threads, packed=packed,
                            stats=got)
            merge_rows(nb, sc, rows, s2, i2)
            done += rows.size
            info["reprobe_pairs"] += int(got["pairs_scored"])
            r = sampled_recall(exact, nb[sample].astype(np.int64))
            info["reprobe_trials"].append({"rows": int(done), "recall": r})
            if progress is not None:
                progress(f"reprobe: {done:,} weakest rows ({done / V:.1%}) searched again at nprobe {P2}: "
                         f"sampled recall@{nb.shape[1]} {r:.4f} (target {target})")
        info["reprobe_rows"] = int(done)
    if stats is not None:
        stats.update(info)
    return nb, sc


def neighbor_table(vectors, k, index: IVFIndex, *, nprobe: int | None = None,
                   refine_rounds: int = DEFAULTS.refine_rounds, refine_reverse: int = DEFAULTS.refine_reverse,
                   n_threads=None, progress=None, stats: dict | None = None,
                   searched: SearchedRows | None = None,
                   symmetric: bool = DEFAULTS.symmetric) -> tuple[np.ndarray, np.ndarray]:
    """Each row's approximate top-k rows by cosine, excluding itself:
    ``(neighbors int32[V, k], scores float32[V, k])``, as :func:`w2v.knn.build_neighbor_table`:
    the IVF search of every row, then :func:`refine_table` (``refine_rounds`` rounds; 0: the
    search's result as it is). ``progress(done, total)`` counts the search's rows, then the
    refinement's (a new total). ``searched``: rows already searched (``build_ivf(...,
    searched=d)``'s ``d["rows"]``), used when their nprobe and k are this search's (the result is
    the same; ``stats`` counts their pairs too) and ignored otherwise. ``symmetric``: the search
    offers every pair it scores to both rows (:func:`search`); every row is then searched, as a
    row searched before offered nothing back (``searched`` lends only its packed lists)."""
    v = knn._as_matrix(vectors)
    V = v.shape[0]
    if V >= 2**31:
        raise ValueError(f"vectors: {V} rows do not fit the int32 neighbour table")
    inv = knn.inverse_norms(v)
    P = min(_nprobe(nprobe, index.centroids.shape[0], index.info), index.centroids.shape[0])
    if symmetric or searched is None or searched.nprobe != P or searched.ids.shape[1:] != (knn._check_k(k),) \
            or not V:
        s, i = search(index, v, inv, v, k, nprobe=nprobe, exclude_self=np.arange(V, dtype=np.int64),
                      n_threads=n_threads, progress=progress, stats=stats, symmetric=bool(symmetric),
                      packed=None if searched is None else searched.packed)
    else:
        todo = np.setdiff1d(np.arange(V, dtype=np.int64), searched.rows, assume_unique=True)
        done = searched.rows.size
        step = None if progress is None else (lambda d, total: progress(done + d, V))
        got = {}
        s_t, i_t = search(index, v, inv, v[todo], k, nprobe=P, exclude_self=todo, n_threads=n_threads,
                          progress=step, stats=got, packed=searched.packed)
        s = np.empty((V, s_t.shape[1]), np.float32)
        i = np.empty((V, s_t.shape[1]), np.int64)
        s[todo], i[todo] = s_t, i_t
        s[searched.rows], i[searched.rows] = searched.scores, searched.ids
        del s_t, i_t
        got["pairs_scored"] += searched.pairs
        got["queries_widened"] += searched.widened
        if stats is not None:
            stats.update(got)
    nb = i.astype(np.int32)
    del i
    if refine_rounds:
        nb, s = refine_table(v, inv, nb, s, rounds=refine_rounds, reverse=refine_reverse, order=index.rows,
                             n_threads=n_threads, progress=progress, stats=stats)
    return nb, s


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def vectors_fingerprint(vectors) -> str:
    """CRC-32 (hex) of the float32 matrix bytes: ties the lists to the vectors they index."""
    v = np.ascontiguousarray(vectors, np.float32)
    crc = 0
    flat = v.reshape(-1).view(np.uint8)
    step = 1 << 26
    for lo in range(0, flat.shape[0], step):
        crc = zlib.crc32(flat[lo:lo + step], crc)
    return f"{crc:08x}"


def _check_index(index: IVFIndex, V: int, D: int, where: str = "ivf") -> None:
    """One-line IVFError unless centroids/offsets/rows describe V rows of D dims in valid lists."""
    c, off, rows = index.centroids, index.offsets, index.rows
    if c.ndim != 2 or c.shape[1] != D or c.shape[0] < 1:
        raise IVFError(f"{where}: centroids shape {c.shape} does not match [nlist >= 1, D={D}]")
    nlist = c.shape[0]
    if off.shape != (nlist + 1,) or off.dtype.kind != "i":
        raise IVFError(f"{where}: offsets shape {off.shape} does not match [nlist + 1 = {nlist + 1}]")
    if rows.shape != (V,) or rows.dtype.kind != "i":
        raise IVFError(f"{where}: rows shape {rows.shape} does not match the {V} rows of the vectors")
    if off[0] != 0 or off[-1] != V or (np.diff(off) < 0).any():
        raise IVFError(f"{where}: offsets must rise from 0 to {V} (got {int(off[0])}..{int(off[-1])})")
    if V and (rows.min() < 0 or rows.max() >= V or np.bincount(rows, minlength=V).max() != 1):
        raise IVFError(f"{where}: rows is not a permutation of 0..{V - 1}")


def save_ivf(path: str | os.PathLike, index: IVFIndex, fingerprint: str) -> None:
    """Write the IVF files into a model directory; ``ivf.json`` last (removed first).

    ``fingerprint``: ``vectors_fingerprint`` of the vectors the index was built on."""
    path = Path(path)
    if (path / "ivf.json").exists():
        os.unlink(path / "ivf.json")
    for name, arr, dt in (("ivf_centroids.npy", index.centroids, "<f4"), ("ivf_offsets.npy", index.offsets, "<i8"),
                          ("ivf_rows.npy", index.rows, "<i8")):
        with atomic_file(path / name) as fh:
            np.save(fh, np.ascontiguousarray(arr, dtype=dt), allow_pickle=False)
    meta = dict(index.info)
    meta.update(format=IVF_FORMAT_NAME, format_version=IVF_FORMAT_VERSION,
                vectors_crc32=str(fingerprint))
    with atomic_file(path / "ivf.json", "w") as fh:
        fh.write(json.dumps(meta, indent=2) + "\n")


def load_ivf(path: str | os.PathLike, vectors) -> IVFIndex:
    """Read and validate the IVF files of a model directory against its ``vectors``.

    Raises IVFError (one line naming the file) when a file is missing, unreadable, of the wrong
    dtype or shape, when the lists are not a valid partition of the rows (each list ascending),
    or when ``ivf.json`` describes other vectors (size or CRC-32)."""
    path = Path(path)
    side = path / "ivf.json"
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IVFError(f"{side}: missing (build it with 'otto-train index --method ivf')") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IVFError(f"{side}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != IVF_FORMAT_NAME:
        raise IVFError(f"{side}: not an {IVF_FORMAT_NAME} sidecar")
    if meta.get("format_version") != IVF_FORMAT_VERSION:
        raise IVFError(f"{side}: format_version {meta.get('format_version')!r} is not supported (expected {IVF_FORMAT_VERSION})")
    v = np.asarray(vectors)
    V, D = v.shape
    if meta.get("vocab_size") != V or meta.get("vector_size") != D:
        raise IVFError(f"{side}: vocab_size/vector_size {meta.get('vocab_size')}/{meta.get('vector_size')} "
                       f"do not match vectors {v.shape}")
    arrs = {}
    for name, dt, nd in (("ivf_centroids.npy", "<f4", 2), ("ivf_offsets.npy", "<i8", 1), ("ivf_rows.npy", "<i8", 1)):
        f = path / name
        try:
            a = np.load(f, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise IVFError(f"{f}: missing") from None
        except (ValueError, OSError) as exc:
            raise IVFError(f"{f}: not a readable .npy array ({exc})") from None
        if a.dtype != np.dtype(dt) or a.ndim != nd:
            raise IVFError(f"{f}: dtype {a.dtype.str} shape {a.shape} (expected {np.dtype(dt).str}, {nd}-d)")
        arrs[name] = np.asarray(a)
    c, off, rows = arrs["ivf_centroids.npy"], arrs["ivf_offsets.npy"], arrs["ivf_rows.npy"]
    if c.shape[0] != meta.get("nlist"):
        raise IVFError(f"{path / 'ivf_centroids.npy'}: {c.shape[0]} centroids, ivf.json says nlist={meta.get('nlist')}")
    if not np.isfinite(c).all():
        raise IVFError(f"{path / 'ivf_centroids.npy'}: holds non-finite values")
    index = IVFIndex(c, off, rows, meta)
    _check_index(index, V, D, where=str(path / "ivf_offsets.npy") + "/ivf_rows.npy")
    if V > 1:  # within a list rows ascend: a descent may only happen where a list starts
        starts = np.zeros(V + 1, bool)
        starts[off[:-1]] = True
        desc = np.flatnonzero((np.diff(rows) <= 0) & ~starts[1:V])
        if desc.size:
            raise IVFError(f"{path / 'ivf_rows.npy'}: rows of a list are not ascending (position {int(desc[0]) + 1})")
    if meta.get("vectors_crc32") != vectors_fingerprint(v):
        raise IVFError(f"{side}: vectors_crc32 {meta.get('vectors_crc32')!r} does not match vectors.npy "
                       "(the lists were built for other vectors; rebuild with 'otto-train index --method ivf')")
    return index


# --------------------------------------------------------------------------------------------
# The method choice shared by ``otto-train index`` and ``otto-eval``
# --------------------------------------------------------------------------------------------

METHODS = ("auto", "exact", "ivf")
# ``auto`` uses the IVF index from this many rows on. Below it the exact V x V table costs at
# most V^2 D = 2.5e11 multiply-adds at D = 100 (a few seconds on 2 cores, bench/RESULTS.md section 4)
# and stays the reference; above it the exact cost grows quadratically (about 1 h at 1.86M x 64).
AUTO_IVF_MIN_ROWS = 50_000


def resolve_method(method: str, V: int) -> str:
    """``exact`` or ``ivf`` for a matrix of V rows (``auto``: ivf from AUTO_IVF_MIN_ROWS rows)."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if method == "auto":
        return "ivf" if V >= AUTO_IVF_MIN_ROWS else "exact"
    return method


class BulkTopK:
    """Batched cosine top-k over one matrix with the method chosen once (exact or IVF).

    ``model_dir``: reuse its IVF files when they exist, match the vectors and were built with
    the same nlist/seed/iterations/train_per_list; otherwise the index is built in memory.
    ``k``: the recall@k an automatic nprobe is measured for (a loaded index whose auto nprobe was
    measured otherwise is re-measured, unless it was measured for the neighbour table and its
    trials decide the search's choice, :func:`_search_choice`). ``log(message)`` receives one line per build step (optional).
    ``table``: a neighbour table of the same rows (int32 ``[V, kt]``, e.g. the model's
    ``neighbors.npy``); with the IVF method and ``params.expand_rounds > 0`` every search is
    followed by :func:`expand` through it, and an automatic nprobe is the base one,
    ``default_nprobe(nlist)``, without a measurement (ignored with the exact method)."""

    def __init__(self, vectors, method: str = "auto", params: IVFParams = DEFAULTS, *, model_dir=None,
                 n_threads=None, log=None, k: int = 20, table=None):
        self.vectors = knn._as_matrix(vectors)
        V = self.vectors.shape[0]
        self.method = resolve_method(method, V)
        self.params = params
        self.n_threads = n_threads
        self.inv = knn.inverse_norms(self.vectors)
        self.index = None
        self.source = None
        self._packed = None   # pack_lists, made at the first IVF search and kept (about V * D * 4 bytes)
        self.table = None
        if self.method == "ivf" and table is not None and params.expand_rounds and params.expand_width:
            tb = np.asarray(table)
            if tb.ndim != 2 or tb.shape[0] != V or tb.dtype != np.int32:
                raise ValueError(f"table: expected int32 [V = {V}, kt] neighbour rows, got {tb.dtype} {tb.shape}")
            self.table = tb
        if self.method == "ivf":
            want = _build_key(params, V)
            if model_dir is not None and (Path(model_dir) / "ivf.json").exists():
                idx = load_ivf(model_dir, self.vectors)
                if _build_key(replace(DEFAULTS, **{f: idx.info.get(f) for f in _KEY_FIELDS}), V) == want:
                    self.index, self.source = idx, "loaded from the model directory"
                    if params.nprobe is None and self.table is not None:
                        self.index = idx._replace(info=_base_choice(idx.info))
                        self.source += ", the base nprobe (table expansion)"
                    elif params.nprobe is None and not _auto_matches(idx.info, params, V, k):
                        derived = _search_choice(idx.info, params, V, k)
                        if derived is not None:  # the table's trials decide the search's nprobe
                            self.index = idx._replace(info=derived)
                            self.source += ", nprobe from the table's trials"
                        else:
                            self.index = tune_nprobe(idx, self.vectors, self.inv, k, params,
                                                     n_threads=n_threads, progress=log)
                            self.source += ", nprobe re-measured"
            if self.index is None:
                if params.nprobe is None and self.table is not None:
                    base = default_nprobe(want[0])
                    idx = build_ivf(self.vectors, replace(params, nprobe=base), k=k, n_threads=n_threads, progress=log)
                    self.index = idx._replace(info=_base_choice(idx.info))
                    self.source = "built in memory, the base nprobe (table expansion)"
                else:
                    self.index = build_ivf(self.vectors, params, k=k, n_threads=n_threads, progress=log)
                    self.source = "built in memory"

    def topk(self, queries, k, *, exclude_self=None, progress=None, stats=None):
        """``(scores float32[Q, k], rows int64[Q, k])`` as :func:`w2v.knn.topk_batch`."""
        if self.method == "exact":
            return knn.topk_batch(self.vectors, self.inv, queries, k, exclude_self=exclude_self,
                                  n_threads=self.n_threads, progress=progress)
        if self._packed is None:
            self._packed = pack_lists(self.index, self.vectors, self.inv, n_threads=self.n_threads)
        s, r = search(self.index, self.vectors, self.inv, queries, k, nprobe=self.params.nprobe,
                      exclude_self=exclude_self, chunk=self.params.chunk, q_block=self.params.q_block,
                      n_threads=self.n_threads, progress=progress, stats=stats, packed=self._packed)
        if self.table is None:
            return s, r
        if exclude_self is not None:  # the table lists no row itself, but an expansion could re-add it
            raise ValueError("exclude_self: not supported with a table expansion")
        return expand(self.vectors, self.inv, self.table, queries, s, r, width=self.params.expand_width,
                      rounds=self.params.expand_rounds, chunk=self.params.chunk, n_threads=self.n_threads,
                      stats=stats)

    def info(self) -> dict:
        d = {"method": self.method}
        if self.index is not None:
            d.update(nlist=self.index.info["nlist"], nprobe=_nprobe(self.params.nprobe, self.index.info["nlist"], self.index.info),
                     nprobe_source="given" if self.params.nprobe is not None
                     else self.index.info.get("nprobe_source", "default"),
                     seed=self.params.seed,
                     iterations=self.params.iterations, train_per_list=self.params.train_per_list,
                     ivf_source=self.source)
            if self.table is not None:
                d.update(expand_rounds=int(self.params.expand_rounds), expand_width=int(self.params.expand_width),
                         table_k=int(self.table.shape[1]))
        return d


def _base_choice(info: dict) -> dict:
    """``info`` with the base nprobe (``default_nprobe(nlist)``) as the search's choice."""
    return dict(info, nprobe=default_nprobe(int(info["nlist"])), nprobe_source="base (table expansion)")


_KEY_FIELDS = ("nlist", "seed", "iterations", "train_per_list")


def _build_key(p: IVFParams, V: int) -> tuple:
    nl = default_nlist(V) if p.nlist is None else max(1, min(int(p.nlist), V))
    return (nl, int(p.seed), int(p.iterations), int(p.train_per_list))
