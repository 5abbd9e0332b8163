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

Computed with Numba, in chunks of sessions (at most ``chunk_pairs`` pairs emitted per chunk):

1. each chunk emits its session-deduplicated pair keys ``x * 2**31 + y`` with their weights;
2. the chunk's pairs are sorted by a stable LSD radix sort over the significant key bits only (the
   bits of the largest aid, in y and in x) and equal keys are summed (float64, stored float32);
   the sort being stable, one key's weights are summed in emission order, so the sums do not
   depend on any library's sort algorithm;
3. the reduced runs are merged in chunk order by linear merges that sum the two weights of a key
   in both (float64, stored float32): binary-counter merging (the newest run into the one before
   it while it is at least half that one's size), then the remaining runs, newest first, with
   float64 sums rounded to float32 once at the end.

Steps 1-2 run on ``n_threads`` threads (nogil kernels, at most ``n_threads`` chunks in flight, so
memory stays about ``n_threads`` x ``chunk_pairs`` pairs plus the merged table); step 3 runs on the
calling thread in chunk order, so the result is the same for every ``n_threads`` (the top-N
selection then runs on ``n_threads`` slices of whole rows). ``n_parts``
passes each keep only the rows with ``x`` in one slice of the aid range, so the merged table of a
pass holds roughly 1/n_parts of the distinct pairs. ``chunk_pairs`` and ``n_parts`` change which
partial sums are rounded to float32, so non-integer (``mode="time"``) weights may differ by float32
rounding between settings; integer weights are exact. What the limits drop is counted in
``CovisitGraph.stats``: events beyond ``max_events`` and neighbours beyond ``top_n``.

The result is a CSR graph over aid space: the neighbours of aid a are
``nbr[indptr[a]:indptr[a+1]]`` with weights ``w[...]`` (an aid >= ``indptr.size - 1`` has none).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba as nb
import numpy as np

from data_prep.dataset import Dataset, parse_types
from data_prep.parallel import check_threads, iter_in_order, run_tasks
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
# Per session: its u <= max_events distinct aids are sorted (insertion sort) and every taken event
# gets the rank of its aid; a pair's largest weight is kept in a u x u table indexed by the two
# ranks, which is then read row by row, so the output is key-sorted without sorting the pairs.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _pairs_kernel(offsets, aid, ts, type_, s0, s1, type_ok, max_events, window_ms, mode, type_w,
                  ts_min, ts_span, lo, hi, cap):
    keys = np.empty(cap, np.int64)
    ws = np.empty(cap, np.float32)
    idx = np.empty(max_events, np.int64)
    rank = np.empty(max_events, np.int64)
    uniq = np.empty(max_events, np.int64)
    best = np.empty(max_events * max_events, np.float32)
    seen = np.zeros(max_events * max_events, np.int64)  # session stamp s + 1 of the table cells set
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
        # distinct aids ascending (uniq[:u]) and the rank of each taken event's aid
        u = 0
        for a in range(m):
            x = np.int64(aid[idx[a]])
            r = u
            while r > 0 and uniq[r - 1] > x:
                r -= 1
            if r > 0 and uniq[r - 1] == x:
                continue
            for q in range(u, r, -1):
                uniq[q] = uniq[q - 1]
            uniq[r] = x
            u += 1
        for a in range(m):
            x = np.int64(aid[idx[a]])
            lo_r = 0
            hi_r = u - 1
            while lo_r < hi_r:
                mid = (lo_r + hi_r) // 2
                if uniq[mid] < x:
                    lo_r = mid + 1
                else:
                    hi_r = mid
            rank[a] = lo_r
        stamp = s + 1
        for a in range(m):
            ea = idx[a]
            x = aid[ea]
            if x < lo or x >= hi:
                continue
            row = rank[a] * u
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
                ww = np.float32(wt)
                cell = row + rank[b]
                if seen[cell] != stamp:
                    seen[cell] = stamp
                    best[cell] = ww
                elif ww > best[cell]:
                    best[cell] = ww
        for i in range(u):
            x = uniq[i]
            if x < lo or x >= hi:
                continue
            for j in range(u):
                cell = i * u + j
                if seen[cell] == stamp:
                    keys[n] = x * KEY_SHIFT + uniq[j]
                    ws[n] = best[cell]
                    n += 1
    return keys[:n], ws[:n], skipped


# ---------------------------------------------------------------------------------------------
# Stable LSD radix sort of pair keys, carrying their weights.
#   keys int64[n]: x * 2**31 + y with 0 <= x, y < 2**nbits (nbits = bits of the largest aid, 0..31)
#   ws float32[n]: the weight of each key (same order)
# Sorts by the significant bits only: the nbits low bits of y (bit 0 up), then the nbits bits of x
# (bit 31 up), RADIX_BITS bits per pass, ping-ponging between the inputs and one scratch pair. A
# pass whose digit is the same for every key is skipped (all digit histograms are counted in one
# read first). Stable: equal keys keep their input order. Returns the sorted (keys, ws): the input
# arrays or the scratch pair, the other one holding garbage. Degenerate: n <= 1 or nbits = 0 (every
# key 0) returns the inputs unchanged.
# ---------------------------------------------------------------------------------------------
RADIX_BITS = 11


@nb.njit(cache=True, nogil=True)
def _radix_sort_kernel(keys, ws, nbits):
    n = keys.shape[0]
    per = (nbits + RADIX_BITS - 1) // RADIX_BITS
    P = 2 * per
    shifts = np.empty(P, np.int64)
    masks = np.empty(P, np.int64)
    for f in range(2):
        for d in range(per):
            shifts[f * per + d] = 31 * f + d * RADIX_BITS
            masks[f * per + d] = (np.int64(1) << min(RADIX_BITS, nbits - d * RADIX_BITS)) - 1
    if n <= 1 or P == 0:
        return keys, ws
    B = 1 << RADIX_BITS
    hist = np.zeros((P, B), np.int64)
    for i in range(n):
        k = keys[i]
        for p in range(P):
            hist[p, (k >> shifts[p]) & masks[p]] += 1
    src_k, src_w = keys, ws
    dst_k = np.empty(n, np.int64)
    dst_w = np.empty(n, np.float32)
    for p in range(P):
        sh = shifts[p]
        mk = masks[p]
        h = hist[p]
        if h[(src_k[0] >> sh) & mk] == n:
            continue  # one digit value: this pass would not move anything
        tot = 0
        for b in range(B):
            c = h[b]
            h[b] = tot
            tot += c
        for i in range(n):
            k = src_k[i]
            d = (k >> sh) & mk
            j = h[d]
            h[d] = j + 1
            dst_k[j] = k
            dst_w[j] = src_w[i]
        src_k, dst_k = dst_k, src_k
        src_w, dst_w = dst_w, src_w
    return src_k, src_w


# ---------------------------------------------------------------------------------------------
# Sum the weights of equal keys. keys int64[n] ascending, ws float32[n] (same order).
# Returns (unique keys ascending int64[m], their sums float32[m]), freshly allocated at size m;
# each sum is accumulated in float64 in input order and stored float32. Degenerate: n = 0 -> m = 0.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _sum_sorted_kernel(keys, ws):
    n = keys.shape[0]
    m = 0
    for r in range(n):
        if r == 0 or keys[r] != keys[r - 1]:
            m += 1
    ok = np.empty(m, np.int64)
    ow = np.empty(m, np.float32)
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
    return ok, ow


# ---------------------------------------------------------------------------------------------
# One chunk's pairs reduced: radix sort (above) then sum equal keys. keys int64[n], ws float32[n]
# as emitted (both used as sort buffers); nbits as for the sort. Returns (unique keys ascending
# int64[m], sums float32[m]). Because the sort is stable, the weights of one key are summed in the
# order they were emitted (sessions in order), whatever the platform's sort algorithms.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _reduce_kernel(keys, ws, nbits):
    sk, sw = _radix_sort_kernel(keys, ws, nbits)
    return _sum_sorted_kernel(sk, sw)


# ---------------------------------------------------------------------------------------------
# Linear merge of two runs of key-ascending unique keys, summing the weights of a key in both:
#   k1 int64[n1], w1 float[n1]; k2 int64[n2], w2 float[n2] (float32 or float64 each)
#   ok int64[>= n1 + n2], ow float32 or float64 [>= n1 + n2]: the output buffers
# Writes the m = |keys1 U keys2| merged keys ascending to ok[:m] and returns m. A key in both runs
# gets float64(w1) + float64(w2) stored in ow's dtype (for float32 exactly what sorting the
# concatenation and summing in float64 gives); a key in one run keeps its weight (cast to ow's
# dtype; adding 0.0 changes nothing but the sign of a -0.0). Degenerate: an empty run gives a copy
# of the other.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _merge_kernel(k1, w1, k2, w2, ok, ow):
    n1 = k1.shape[0]
    n2 = k2.shape[0]
    i = 0
    j = 0
    m = 0
    while i < n1 and j < n2:
        # branch-free (selects): the two runs interleave unpredictably
        a = k1[i]
        b = k2[j]
        ta = a <= b
        tb = b <= a
        ok[m] = min(a, b)
        ow[m] = (np.float64(w1[i]) if ta else 0.0) + (np.float64(w2[j]) if tb else 0.0)
        i += ta
        j += tb
        m += 1
    while i < n1:
        ok[m] = k1[i]
        ow[m] = w1[i]
        i += 1
        m += 1
    while j < n2:
        ok[m] = k2[j]
        ow[m] = w2[j]
        j += 1
        m += 1
    return m


# Output buffers of a merge: int64[n] and [n] of like's dtype (like: any array, e.g. empty).
# Allocated by Numba (plain malloc) rather than NumPy: NumPy asks for transparent huge pages on
# large arrays, and on a machine with fragmented memory the page faults then stall on compaction
# (measured on 2M full-size sessions under load: the merges took twice as long on NumPy buffers).
@nb.njit(cache=True, nogil=True)
def _alloc_kernel(n, like):
    return np.empty(n, np.int64), np.empty(n, like.dtype)


def _merge(a, b, dtype=np.float32):
    """:func:`_merge_kernel` of runs ``a`` and ``b`` (each ``(keys, weights)``), weights of
    ``dtype``: views of the merged size on buffers of ``n1 + n2`` (the few slots duplicates leave
    unused are not copied away)."""
    ok, ow = _alloc_kernel(a[0].shape[0] + b[0].shape[0], np.zeros(0, dtype))
    m = _merge_kernel(a[0], a[1], b[0], b[1], ok, ow)
    return ok[:m], ow[:m]


# ---------------------------------------------------------------------------------------------
# Top-N per row from key-sorted unique (key, weight): row x = key >> 31, col y = key & (2^31-1).
#   keys int64[n] ascending, ws float32[n]; top_n >= 1
# Returns x int64[R] (rows present), counts int64[R] (kept per row), nbr int32[M], w float32[M]
# in row order, each row weight-descending then y ascending; dropped = pairs beyond top_n.
# The order is that of a stable sort of -w (NaN last): each row's pairs, y ascending, are inserted
# into a best-first buffer of top_n, after every kept pair of weight >= theirs, so ties keep y
# ascending. A first pass counts R and M (outputs allocated at their size). Degenerate: n = 0.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _topn_kernel(keys, ws, top_n):
    n = keys.shape[0]
    R = 0
    M = 0
    i = 0
    while i < n:
        x = keys[i] // KEY_SHIFT
        j = i + 1
        while j < n and keys[j] // KEY_SHIFT == x:
            j += 1
        R += 1
        M += min(top_n, j - i)
        i = j
    rows = np.empty(R, np.int64)
    counts = np.empty(R, np.int64)
    nbr = np.empty(M, np.int32)
    w = np.empty(M, np.float32)
    bw = np.empty(top_n, np.float32)
    by = np.empty(top_n, np.int64)
    R = 0
    M = 0
    dropped = 0
    i = 0
    while i < n:
        x = keys[i] // KEY_SHIFT
        c = 0
        j = i
        while j < n and keys[j] // KEY_SHIFT == x:
            v = ws[j]
            # v goes before a kept weight b when v > b, or when b is NaN and v is not
            if c == top_n:
                b = bw[c - 1]
                if not (v > b or (b != b and v == v)):
                    j += 1
                    continue
                q = c - 1
            else:
                q = c
                c += 1
            while q > 0 and (v > bw[q - 1] or (bw[q - 1] != bw[q - 1] and v == v)):
                bw[q] = bw[q - 1]
                by[q] = by[q - 1]
                q -= 1
            bw[q] = v
            by[q] = keys[j] % KEY_SHIFT
            j += 1
        for r in range(c):
            nbr[M] = np.int32(by[r])
            w[M] = bw[r]
            M += 1
        dropped += (j - i) - c
        rows[R] = x
        counts[R] = c
        R += 1
        i = j
    return rows, counts, nbr, w, dropped


def _topn(keys: np.ndarray, ws: np.ndarray, top_n: int, n_threads: int):
    """:func:`_topn_kernel` on ``n_threads`` slices of whole rows (split near equal pair counts),
    concatenated: the same result as one call."""
    n = keys.shape[0]
    cuts = [0]
    for t in range(1, n_threads):
        pos = n * t // n_threads
        if pos <= cuts[-1] or pos >= n:
            continue
        start = int(np.searchsorted(keys, (keys[pos] // KEY_SHIFT) * KEY_SHIFT))  # the row's first pair
        if start > cuts[-1]:
            cuts.append(start)
    cuts.append(n)
    out = [None] * (len(cuts) - 1)

    def part(t):
        out[t] = _topn_kernel(keys[cuts[t]:cuts[t + 1]], ws[cuts[t]:cuts[t + 1]], top_n)

    run_tasks(part, [(t,) for t in range(len(out))])
    return (*(np.concatenate([o[f] for o in out]) for f in range(4)), sum(int(o[4]) for o in out))


# ---------------------------------------------------------------------------------------------
# Cumulative pair bound: cb int64[S+1], cb[0] = 0, cb[s+1] = cb[s] + m_s (m_s - 1) with m_s the
# taken events of session s (type_ok[type_]) capped at max_events: the most pairs the sessions
# before s+1 can emit. offsets int64[S+1], type_ uint8[E], type_ok bool[3]. Degenerate: S = 0.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _bound_kernel(offsets, type_, type_ok, max_events):
    S = offsets.shape[0] - 1
    cb = np.empty(S + 1, np.int64)
    cb[0] = 0
    for s in range(S):
        t = 0
        for e in range(offsets[s], offsets[s + 1]):
            if type_ok[type_[e]]:
                t += 1
        m = min(t, max_events)
        cb[s + 1] = cb[s] + m * (m - 1)
    return cb


def build_covisit(ds: Dataset, *, types=None, mode: str = "unit", window_ms: int = 24 * 3600 * 1000,
                  max_events: int = 30, top_n: int = 20, type_weight=(1.0, 6.0, 3.0),
                  n_parts: int = 1, chunk_pairs: int = 20_000_000, n_threads: int | None = None,
                  progress: bool = False, name: str = "covisit") -> CovisitGraph:
    """Build one co-visitation graph from ``ds`` (see the module docstring). ``n_threads``
    (None: all CPUs) reduces that many chunks at once; it never changes the result."""
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} (expected one of {', '.join(MODES)})")
    for pname, v in (("max_events", max_events), ("top_n", top_n), ("n_parts", n_parts), ("chunk_pairs", chunk_pairs)):
        if v < 1:
            raise ValueError(f"{pname}: must be >= 1, got {v}")
    if window_ms <= 0:
        raise ValueError(f"window_ms: must be > 0, got {window_ms}")
    n_threads = check_threads(n_threads, "n_threads")
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
    nbits = (A - 1).bit_length()  # x, y < 2**nbits: the bits the radix sort looks at
    # per-session pair upper bound -> session chunks of at most chunk_pairs pairs
    cb = _bound_kernel(offsets, typ, type_ok, max_events)
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

        def chunk(c, lo=lo, hi=hi):
            # nogil kernels only: chunks run concurrently on the pool's threads
            s0, s1 = bounds[c], bounds[c + 1]
            cap = int(cb[s1] - cb[s0])
            k_, w_, sk = _pairs_kernel(offsets, aid, ts, typ, s0, s1, type_ok, max_events, int(window_ms),
                                       MODES[mode], tw, ts_min, ts_span, lo, hi, cap)
            return _reduce_kernel(k_, w_, nbits), int(sk)

        runs = []  # reduced (key-sorted, unique) runs, oldest first
        for c, (run, sk) in enumerate(iter_in_order(chunk, len(bounds) - 1, n_threads)):
            if p == 0:
                skipped += sk
            runs.append(run)
            # binary-counter merging (in chunk order, on this thread): the newest run is merged
            # into the one before it while it is at least half that one's size, so every pair is
            # merged O(log chunks) times. (Merging each chunk into one growing table was quadratic
            # in the sessions.)
            while len(runs) > 1 and 2 * runs[-1][0].shape[0] >= runs[-2][0].shape[0]:
                runs[-2:] = [_merge(runs[-2], runs[-1])]
            bar.update(p * S + bounds[c + 1], f"part {p + 1}/{n_parts}")
        # the remaining runs (sizes at least halving, oldest first), merged newest first with
        # float64 sums, rounded to float32 once in the last merge
        k_, w_ = runs.pop()
        while runs:
            k_, w_ = _merge(runs.pop(), (k_, w_), np.float64 if runs else np.float32)
        n_pairs += int(k_.shape[0])
        r, cnt, nbr, w, dr = _topn(k_, w_, int(top_n), n_threads)
        del k_, w_
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
