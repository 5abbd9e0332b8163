"""Co-visitation matrices: for each aid, the top-N aids seen near it in the same sessions.

For every session, take its last ``max_events`` events whose type is in ``types``. Every ordered
pair of those events (i, j) with ``aid_i != aid_j`` and ``|ts_i - ts_j| < window_ms`` gives the pair
(x = aid_i, y = aid_j) a weight ``w(i, j)``:

* ``mode="time"``:  ``1 + 3 (ts_i - ts_min) / (ts_max - ts_min)`` (later sessions count more;
  ``ts_min``/``ts_max`` over the whole dataset; a constant-time dataset gives 1)
* ``mode="type"``:  ``type_weight[type_j]`` (default clicks 1, carts 6, orders 3)
* ``mode="unit"``:  1

Within one session a pair counts once, with the largest of its weights; across sessions weights
add up. Row x keeps its ``top_n`` heaviest y (weight descending, then aid ascending).

Computed with Numba by emitting pair keys ``x * 2**31 + y`` per chunk of sessions, sorting them
and summing equal keys; memory is bounded by ``chunk_pairs`` (pairs emitted per chunk) and by
``n_parts`` (each pass keeps only the rows with ``x`` in one slice of the aid range, so the summed
table of a pass holds roughly 1/n_parts of the distinct pairs). What the limits drop is counted in
``CovisitGraph.stats``: events beyond ``max_events`` and neighbours beyond ``top_n``.

The result is a CSR graph over aid space: the neighbours of aid a are
``nbr[indptr[a]:indptr[a+1]]`` with weights ``w[...]`` (an aid >= ``indptr.size - 1`` has none).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba as nb
import numpy as np

from data_prep.dataset import Dataset, parse_types
from data_prep.progress import Progress

KEY_SHIFT = 1 << 31   # pair key = x * KEY_SHIFT + y (aids < 2**31)
MODES = {"time": 0, "type": 1, "unit": 2}


@dataclass
class CovisitGraph:
    indptr: np.ndarray   # int64[A+1] over aid space
    nbr: np.ndarray      # int32[N]
    w: np.ndarray        # float32[N]
    stats: dict = field(default_factory=dict)

    def neighbors(self, a: int) -> tuple[np.ndarray, np.ndarray]:
        if a < 0 or a >= self.indptr.shape[0] - 1:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        s, e = self.indptr[a], self.indptr[a + 1]
        return self.nbr[s:e], self.w[s:e]

    @staticmethod
    def empty() -> "CovisitGraph":
        return CovisitGraph(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))


# ---------------------------------------------------------------------------------------------
# Session-deduplicated weighted pairs of sessions s0..s1-1.
#   offsets int64[S+1], aid int32[E], ts int64[E], type_ uint8[E] (CSR dataset arrays)
#   type_ok bool[3]: event types taken; max_events: last N taken events per session
#   window_ms int64; mode 0 time / 1 type / 2 unit; type_w float64[3]; ts_min, ts_span (> 0)
#   lo, hi: only pairs with lo <= x < hi are emitted; cap: size of the output buffers
# Returns keys int64[n], w float32[n] (pairs of one session are contiguous, unique, key-sorted)
# and the number of events beyond max_events that were skipped.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _pairs_kernel(offsets, aid, ts, type_, s0, s1, type_ok, max_events, window_ms, mode, type_w,
                  ts_min, ts_span, lo, hi, cap):
    keys = np.empty(cap, np.int64)
    ws = np.empty(cap, np.float32)
    idx = np.empty(max_events, np.int64)
    lk = np.empty(max_events * max_events, np.int64)
    lw = np.empty(max_events * max_events, np.float32)
    n = 0
    skipped = 0
    for s in range(s0, s1):
        m = 0
        # last max_events taken events, kept in order
        tot = 0
        for e in range(offsets[s], offsets[s + 1]):
            if type_ok[type_[e]]:
                tot += 1
        if tot > max_events:
            skipped += tot - max_events
        skip = tot - max_events
        for e in range(offsets[s], offsets[s + 1]):
            if type_ok[type_[e]]:
                if skip > 0:
                    skip -= 1
                else:
                    idx[m] = e
                    m += 1
        nl = 0
        for a in range(m):
            ea = idx[a]
            x = aid[ea]
            if x < lo or x >= hi:
                continue
            for b in range(m):
                eb = idx[b]
                y = aid[eb]
                if y == x:
                    continue
                d = ts[ea] - ts[eb]
                if d < 0:
                    d = -d
                if d >= window_ms:
                    continue
                if mode == 0:
                    wt = 1.0 + 3.0 * (ts[ea] - ts_min) / ts_span
                elif mode == 1:
                    wt = type_w[type_[eb]]
                else:
                    wt = 1.0
                lk[nl] = np.int64(x) * KEY_SHIFT + np.int64(y)
                lw[nl] = wt
                nl += 1
        if nl == 0:
            continue
        order = np.argsort(lk[:nl])
        prev = -1
        for r in range(nl):
            kk = lk[order[r]]
            ww = lw[order[r]]
            if kk == prev:
                if ww > ws[n - 1]:
                    ws[n - 1] = ww
            else:
                keys[n] = kk
                ws[n] = ww
                n += 1
                prev = kk
    return keys[:n], ws[:n], skipped


# ---------------------------------------------------------------------------------------------
# Sum the weights of equal keys. keys int64[n] ascending, ws float32[n] (same order).
# Returns (unique keys ascending, their sums); sums are accumulated in float64, stored float32.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _sum_sorted_kernel(keys, ws):
    n = keys.shape[0]
    ok = np.empty(n, np.int64)
    ow = np.empty(n, np.float32)
    m = 0
    acc = 0.0
    for r in range(n):
        if m > 0 and keys[r] == ok[m - 1]:
            acc += ws[r]
        else:
            if m > 0:
                ow[m - 1] = acc
            ok[m] = keys[r]
            acc = ws[r]
            m += 1
    if m > 0:
        ow[m - 1] = acc
    return ok[:m], ow[:m]


def _reduce_kernel(keys: np.ndarray, ws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort (NumPy's vectorised sort) and sum equal keys -> (unique keys ascending, sums)."""
    order = np.argsort(keys)
    return _sum_sorted_kernel(keys[order], ws[order])


# ---------------------------------------------------------------------------------------------
# Top-N per row from key-sorted unique (key, weight): row x = key >> 31, col y = key & (2^31-1).
# Returns x int64[R] (rows present), counts int64[R] (kept per row), nbr int32[M], w float32[M]
# in row order, each row weight-descending then y ascending; dropped = pairs beyond top_n.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _topn_kernel(keys, ws, top_n):
    n = keys.shape[0]
    rows = np.empty(n, np.int64)
    counts = np.empty(n, np.int64)
    nbr = np.empty(n, np.int32)
    w = np.empty(nbr.shape[0], np.float32)
    R = 0
    M = 0
    dropped = 0
    i = 0
    while i < n:
        x = keys[i] // KEY_SHIFT
        j = i
        while j < n and keys[j] // KEY_SHIFT == x:
            j += 1
        # keys i..j-1 share x and are y-ascending; stable sort by -w keeps y ascending on ties
        order = np.argsort(-ws[i:j], kind="mergesort")
        c = min(top_n, j - i)
        for r in range(c):
            nbr[M] = np.int32(keys[i + order[r]] % KEY_SHIFT)
            w[M] = ws[i + order[r]]
            M += 1
        dropped += (j - i) - c
        rows[R] = x
        counts[R] = c
        R += 1
        i = j
    return rows[:R], counts[:R], nbr[:M], w[:M], dropped


def build_covisit(ds: Dataset, *, types=None, mode: str = "unit", window_ms: int = 24 * 3600 * 1000,
                  max_events: int = 30, top_n: int = 20, type_weight=(1.0, 6.0, 3.0),
                  n_parts: int = 1, chunk_pairs: int = 20_000_000, progress: bool = False,
                  name: str = "covisit") -> CovisitGraph:
    """Build one co-visitation graph from ``ds`` (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} (expected one of {', '.join(MODES)})")
    for pname, v in (("max_events", max_events), ("top_n", top_n), ("n_parts", n_parts), ("chunk_pairs", chunk_pairs)):
        if v < 1:
            raise ValueError(f"{pname}: must be >= 1, got {v}")
    if window_ms <= 0:
        raise ValueError(f"window_ms: must be > 0, got {window_ms}")
    codes = parse_types(types)
    type_ok = np.zeros(3, np.bool_)
    type_ok[list(codes)] = True
    offsets = np.ascontiguousarray(ds.offsets, np.int64)
    aid = np.ascontiguousarray(ds.aid, np.int32)
    ts = np.ascontiguousarray(ds.ts, np.int64)
    typ = np.ascontiguousarray(ds.type, np.uint8)
    tw = np.asarray(type_weight, np.float64)
    if ds.n_events == 0:
        g = CovisitGraph.empty()
        g.stats = {"name": name, "pairs": 0, "events_beyond_max_events": 0, "neighbors_beyond_top_n": 0}
        return g
    ts_min = int(ts.min())
    ts_span = float(max(int(ts.max()) - ts_min, 1))
    A = int(aid.max()) + 1
    # per-session pair upper bound -> session chunks of at most chunk_pairs pairs
    csum = np.concatenate(([0], np.cumsum(type_ok[typ], dtype=np.int64)))
    m = np.minimum(csum[offsets[1:]] - csum[offsets[:-1]], max_events)
    bound = m * (m - 1)
    cb = np.concatenate(([0], np.cumsum(bound)))
    bounds = [0]
    S = ds.n_sessions
    while bounds[-1] < S:
        s0 = bounds[-1]
        s1 = int(np.searchsorted(cb, cb[s0] + chunk_pairs, side="right")) - 1
        bounds.append(min(max(s1, s0 + 1), S))
    part_edges = np.linspace(0, A, n_parts + 1).astype(np.int64)
    rows_all, counts_all, nbr_all, w_all = [], [], [], []
    bar = Progress(name, n_parts * S, unit="sessions", quiet=not progress)
    skipped = 0
    dropped = 0
    n_pairs = 0
    for p in range(n_parts):
        lo, hi = int(part_edges[p]), int(part_edges[p + 1])
        runs = []  # reduced (key-sorted, unique) runs, oldest first
        for c in range(len(bounds) - 1):
            s0, s1 = bounds[c], bounds[c + 1]
            cap = int(cb[s1] - cb[s0])
            k_, w_, sk = _pairs_kernel(offsets, aid, ts, typ, s0, s1, type_ok, max_events, int(window_ms),
                                       MODES[mode], tw, ts_min, ts_span, lo, hi, cap)
            if p == 0:
                skipped += int(sk)
            runs.append(_reduce_kernel(k_, w_))
            # binary-counter merging: the newest run is merged into the one before it while it is
            # at least half that one's size, so every pair is re-sorted O(log chunks) times. (Merging
            # each chunk into one growing table re-sorted the whole table once per chunk: quadratic
            # in the sessions, 6x slower per session at full size than at 1/16.)
            while len(runs) > 1 and 2 * runs[-1][0].shape[0] >= runs[-2][0].shape[0]:
                (k1, w1), (k2, w2) = runs[-2], runs[-1]
                runs[-2:] = [_reduce_kernel(np.concatenate((k1, k2)), np.concatenate((w1, w2)))]
            bar.update(p * S + s1, f"part {p + 1}/{n_parts}")
        if len(runs) != 1:
            k_, w_ = _reduce_kernel(np.concatenate([r[0] for r in runs]) if runs else np.zeros(0, np.int64),
                                    np.concatenate([r[1] for r in runs]) if runs else np.zeros(0, np.float32))
        else:
            k_, w_ = runs[0]
        n_pairs += int(k_.shape[0])
        r, cnt, nbr, w, dr = _topn_kernel(k_, w_, int(top_n))
        dropped += int(dr)
        rows_all.append(r)
        counts_all.append(cnt)
        nbr_all.append(nbr)
        w_all.append(w)
    bar.close(n_parts * S)
    rows = np.concatenate(rows_all)
    counts = np.concatenate(counts_all)
    per_aid = np.zeros(A, np.int64)
    per_aid[rows] = counts
    indptr = np.zeros(A + 1, np.int64)
    np.cumsum(per_aid, out=indptr[1:])
    g = CovisitGraph(indptr, np.concatenate(nbr_all).astype(np.int32, copy=False),
                     np.concatenate(w_all).astype(np.float32, copy=False))
    g.stats = {"name": name, "mode": mode, "types": list(codes), "window_ms": int(window_ms),
               "max_events": int(max_events), "top_n": int(top_n), "pairs": n_pairs,
               "events_beyond_max_events": skipped, "neighbors_beyond_top_n": dropped,
               "edges": int(g.nbr.shape[0])}
    return g
