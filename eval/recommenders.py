"""Session recommenders behind one batch interface.

``rec.fit(train: Dataset, model: Model | None) -> rec`` then
``rec.predict(test: Dataset, k=20) -> {0: int64[S, k], 1: ..., 2: ...}``: for every test session
(row order of ``test``), the ranked aids predicted for clicks (0), carts (1) and orders (2); ``-1``
pads a row that has fewer than ``k`` candidates (only when the whole catalogue is smaller than k).

All history/graph recommenders share one Numba kernel (``_score_kernel``), parameterised by:

* history: each of the last ``max_hist`` events adds ``recency(pos) * type_weight[type]`` to its
  aid, with ``recency(pos) = 2**(0.1 + 0.9 * pos / (m - 1)) - 1`` (0.07 for the oldest of m events,
  1 for the newest; 1 when m = 1), times ``hist_coef``;
* up to three neighbour graphs in aid space (co-visitation, Word2Vec): each distinct source aid
  ``a`` of the history (or only the last aid with ``last_only``) with source weight
  ``recency(last position of a)`` adds ``coef_g * source_weight * w(a, y) / max_y' w(a, y')`` to
  every neighbour ``y``;
* ranking by score descending then aid ascending; free slots are filled from a fallback list
  (popular aids of the target type), skipping aids already chosen.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba as nb
import numpy as np

from data_prep.dataset import Dataset

from .covisit import CovisitGraph, build_covisit

NAMES = ("random", "popular", "history", "covisit", "w2v-item", "w2v-session", "blend")
DEFAULT_TYPE_WEIGHT = (1.0, 6.0, 3.0)


# ---------------------------------------------------------------------------------------------
# Score candidates of every session and keep the top k (see the module docstring for the math).
#   offsets int64[S+1], aid int64[E] (>= 0, < A), type_ uint8[E]: the sessions (CSR)
#   type_w float64[3]; hist_coef float64; max_hist int (>= 1); last_only bool
#   three graphs, each passed as (indptr int64[Ag+1], nbr int64[N], w float32[N], coef float64);
#   an aid >= Ag has no neighbours; a graph with coef 0 is skipped.
#   fill int64[F]: fallback aids in order (all < A); k >= 1; A: aid space size (> every aid and
#   every neighbour); sessions s_lo..s_hi-1 are scored into out int64[S, k] (pre-filled with -1;
#   the caller runs disjoint ranges on threads, each call has its own O(A) scratch)
# Returns out; -1 where fewer than k distinct candidates + fallback aids exist.
# Degenerate: empty session -> only fallback; graph rows with max weight <= 0 add nothing.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _score_kernel(offsets, aid, type_, type_w, hist_coef, max_hist, last_only,
                  ip0, nb0, w0, c0, ip1, nb1, w1, c1, ip2, nb2, w2, c2, fill, k, A, s_lo, s_hi, out):
    score = np.zeros(A, np.float64)
    srcw = np.zeros(A, np.float64)
    seen = np.zeros(A, np.bool_)
    touched = np.empty(A, np.int64)
    for s in range(s_lo, s_hi):
        e1 = offsets[s + 1]
        e0 = max(offsets[s], e1 - max_hist)
        m = e1 - e0
        nt = 0
        # history
        for e in range(e0, e1):
            a = aid[e]
            if m > 1:
                rw = 2.0 ** (0.1 + 0.9 * (e - e0) / (m - 1)) - 1.0
            else:
                rw = 1.0
            if not seen[a]:
                seen[a] = True
                touched[nt] = a
                nt += 1
            score[a] += hist_coef * rw * type_w[type_[e]]
            if rw > srcw[a]:
                srcw[a] = rw
        n_src = nt
        # graphs
        for g in range(3):
            if g == 0:
                ip, nbr, ww, cg = ip0, nb0, w0, c0
            elif g == 1:
                ip, nbr, ww, cg = ip1, nb1, w1, c1
            else:
                ip, nbr, ww, cg = ip2, nb2, w2, c2
            if cg == 0.0:
                continue
            Ag = ip.shape[0] - 1
            for si in range(n_src):
                a = touched[si]
                sw = srcw[a]
                if last_only:
                    if m == 0 or a != aid[e1 - 1]:
                        continue
                    sw = 1.0
                if a >= Ag:
                    continue
                r0 = ip[a]
                r1 = ip[a + 1]
                if r1 == r0:
                    continue
                mx = ww[r0]
                for r in range(r0 + 1, r1):
                    if ww[r] > mx:
                        mx = ww[r]
                if mx <= 0:
                    continue
                for r in range(r0, r1):
                    y = nbr[r]
                    if ww[r] <= 0:
                        continue
                    if not seen[y]:
                        seen[y] = True
                        touched[nt] = y
                        nt += 1
                    score[y] += cg * sw * ww[r] / mx
        # rank: aid ascending, then stable sort by -score (ties keep aid order)
        cand = np.sort(touched[:nt])
        sc = np.empty(nt, np.float64)
        for i in range(nt):
            sc[i] = -score[cand[i]]
        order = np.argsort(sc, kind="mergesort")
        c = 0
        for i in range(nt):
            if c >= k:
                break
            if sc[order[i]] < 0.0:  # strictly positive score only
                out[s, c] = cand[order[i]]
                c += 1
        f = 0
        while c < k and f < fill.shape[0]:
            a = fill[f]
            f += 1
            dup = False
            for q in range(c):
                if out[s, q] == a:
                    dup = True
                    break
            if not dup:
                out[s, c] = a
                c += 1
        for i in range(nt):
            a = touched[i]
            score[a] = 0.0
            srcw[a] = 0.0
            seen[a] = False
    return out


# ---------------------------------------------------------------------------------------------
# Session vectors: out[s] = sum_e weights[e] * inv[rows[e]] * vectors[rows[e]] over the events e of
# session s with rows[e] >= 0 and weights[e] > 0.
#   offsets int64[S+1], rows int64[E] (-1 = not in vocabulary), weights float32[E],
#   vectors float32[V, D] C-contiguous, inv float32[V] (0 for zero vectors), out float32[S, D] zeroed.
# Returns has bool[S]: the session had at least one such event (a session whose vectors are all
# zero still "has" one; its vector stays 0 and its top-k is then all-ties, ranked by row).
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _session_vectors_kernel(offsets, rows, weights, vectors, inv, out):
    S = offsets.shape[0] - 1
    D = vectors.shape[1]
    has = np.zeros(S, np.bool_)
    for s in range(S):
        for e in range(offsets[s], offsets[s + 1]):
            r = rows[e]
            if r < 0 or weights[e] <= 0:
                continue
            has[s] = True
            f = weights[e] * inv[r]
            for d in range(D):
                out[s, d] += f * vectors[r, d]
    return has


# What the ``max_hist`` limit dropped, summed over calls of ``score_sessions`` (one call per target
# type, so each dropped event is counted once per type); ``run`` reads and resets it per recommender.
LIMIT_COUNTS: dict[str, int] = {}

_EMPTY_IP = np.zeros(1, np.int64)
_EMPTY_NB = np.zeros(0, np.int64)
_EMPTY_W = np.zeros(0, np.float32)


@dataclass
class Graph:
    """A neighbour graph over aid space (CSR) and its coefficient in the score."""
    indptr: np.ndarray
    nbr: np.ndarray
    w: np.ndarray
    coef: float = 1.0

    @staticmethod
    def of(g: CovisitGraph, coef: float) -> "Graph":
        return Graph(g.indptr, g.nbr.astype(np.int64), g.w, coef)


def score_sessions(test: Dataset, k: int, *, fill: np.ndarray, type_weight=DEFAULT_TYPE_WEIGHT,
                   hist_coef: float = 1.0, max_hist: int = 30, last_only: bool = False,
                   graphs: tuple[Graph, ...] = (), n_threads: int | None = None) -> np.ndarray:
    """Run ``_score_kernel`` on ``test``; returns int64[S, k]."""
    if len(graphs) > 3:
        raise ValueError("graphs: at most three")
    if k < 1 or max_hist < 1:
        raise ValueError(f"k and max_hist must be >= 1 (got {k}, {max_hist})")
    aid = np.ascontiguousarray(test.aid, np.int64)
    fill = np.ascontiguousarray(fill, np.int64)
    A = 1
    for arr in (aid, fill, *(g.nbr for g in graphs)):
        if arr.size:
            A = max(A, int(arr.max()) + 1)
    gs = list(graphs) + [Graph(_EMPTY_IP, _EMPTY_NB, _EMPTY_W, 0.0)] * (3 - len(graphs))
    args = []
    for g in gs:
        args += [np.ascontiguousarray(g.indptr, np.int64), np.ascontiguousarray(g.nbr, np.int64),
                 np.ascontiguousarray(g.w, np.float32), float(g.coef)]
    nt = n_threads or nb.get_num_threads()
    n_blocks = max(1, min(nt, test.n_sessions))
    dropped = int(np.maximum(test.lengths() - max_hist, 0).sum())
    LIMIT_COUNTS["events_beyond_max_hist"] = LIMIT_COUNTS.get("events_beyond_max_hist", 0) + dropped
    S = test.n_sessions
    out = np.full((S, k), -1, np.int64)
    common = (np.ascontiguousarray(test.offsets, np.int64), aid, np.ascontiguousarray(test.type, np.uint8),
              np.asarray(type_weight, np.float64), float(hist_coef), int(max_hist), bool(last_only),
              *args, fill, int(k), int(A))
    bounds = [S * b // n_blocks for b in range(n_blocks + 1)]
    if n_blocks == 1:
        _score_kernel(*common, 0, S, out)
    else:  # nogil kernel: threads share nothing but disjoint rows of out
        with ThreadPoolExecutor(n_blocks) as pool:
            list(pool.map(lambda b: _score_kernel(*common, bounds[b], bounds[b + 1], out), range(n_blocks)))
    return out


def popular_lists(train: Dataset, top: int = 100) -> np.ndarray:
    """int64[3, top]: aids by event count per type (count desc, aid asc); short rows filled
    with the most frequent aids overall, so every row has min(top, distinct aids) entries."""
    aid = np.asarray(train.aid, np.int64)
    typ = np.asarray(train.type)
    if aid.size == 0:
        return np.zeros((3, 0), np.int64)
    uniq, inv = np.unique(aid, return_inverse=True)
    P = min(top, uniq.shape[0])
    total = np.bincount(inv, minlength=uniq.shape[0])
    out = np.zeros((3, P), np.int64)
    for t in range(3):
        c = np.bincount(inv[typ == t], minlength=uniq.shape[0])
        order = np.lexsort((uniq, -total, -c))[:P]
        out[t] = uniq[order]
    return out


class Recommender:
    """Base: ``fit`` on a train dataset (and a Word2Vec model where needed), then ``predict``."""

    name = "base"
    needs_model = False

    def fit(self, train: Dataset, model=None) -> "Recommender":
        if self.needs_model and model is None:
            raise ValueError(f"{self.name}: needs a Word2Vec model")
        self.model = model
        self.popular = popular_lists(train)
        return self

    def predict(self, test: Dataset, k: int = 20) -> dict[int, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def info(self) -> dict:
        return {}


class RandomRec(Recommender):
    """k distinct aids drawn uniformly from the train catalogue, per session (seeded)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, train, model=None):
        self.catalogue = np.unique(np.asarray(train.aid, np.int64))
        return self

    def predict(self, test, k=20):
        rng = np.random.default_rng(self.seed)
        V = self.catalogue.shape[0]
        S = test.n_sessions
        out = np.full((S, k), -1, np.int64)
        if V:
            perm = rng.permutation(self.catalogue)
            start = rng.integers(0, V, S)
            kk = min(k, V)
            out[:, :kk] = perm[(start[:, None] + np.arange(kk)[None, :]) % V]
        return {t: out for t in range(3)}


class PopularRec(Recommender):
    """The most frequent aids of each target type in train (``per_type``) or overall."""

    name = "popular"

    def __init__(self, per_type: bool = True):
        self.per_type = per_type

    def predict(self, test, k=20):
        S = test.n_sessions
        res = {}
        for t in range(3):
            row = self.popular[t if self.per_type else 0][:k]
            out = np.full((S, k), -1, np.int64)
            out[:, :row.shape[0]] = row
            res[t] = out
        return res


class HistoryRec(Recommender):
    """Revisits: the session's own aids by recency- and type-weighted score, then popular."""

    name = "history"

    def __init__(self, type_weight=DEFAULT_TYPE_WEIGHT, max_hist: int = 30):
        self.type_weight = type_weight
        self.max_hist = max_hist

    def predict(self, test, k=20):
        return {t: score_sessions(test, k, fill=self.popular[t], type_weight=self.type_weight,
                                  max_hist=self.max_hist) for t in range(3)}


@dataclass
class CovisitParams:
    """The co-visitation graphs' knobs (``otto-eval predict``/``run`` flags derive from it).

    max_events         last events of a train session that form pairs (older ones are counted
                       as dropped).
    top_n              neighbours kept per aid and graph.
    n_parts            passes over aid slices (more passes, less memory; never changes the result).
    chunk_pairs        pairs accumulated per step; bounds memory, never changes the result.
    clicks_window_ms   largest time gap, in ms, of a pair in the clicks and carts-orders graphs.
    buy2buy_window_ms  largest time gap, in ms, of a pair in the buy2buy graph.
    type_weight        weight of a clicked, carted and ordered neighbour in the carts-orders graph.
    """

    max_events: int = 30
    top_n: int = 20
    n_parts: int = 1
    chunk_pairs: int = 20_000_000
    clicks_window_ms: int = 24 * 3600 * 1000
    buy2buy_window_ms: int = 14 * 24 * 3600 * 1000
    type_weight: tuple = DEFAULT_TYPE_WEIGHT

    def __post_init__(self) -> None:
        for name in ("max_events", "top_n", "n_parts", "chunk_pairs", "clicks_window_ms", "buy2buy_window_ms"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {v!r}")
        w = self.type_weight
        if len(w) != 3 or any(not 0 <= x < float("inf") for x in w):
            raise ValueError(f"type_weight: expected three non-negative numbers (clicks, carts, orders), got {w!r}")


def build_covisit_set(train: Dataset, p: CovisitParams, progress: bool = False) -> dict[str, CovisitGraph]:
    """The three classic graphs: time-weighted clicks, type-weighted carts-orders, buy2buy."""
    common = dict(max_events=p.max_events, top_n=p.top_n, n_parts=p.n_parts, chunk_pairs=p.chunk_pairs,
                  progress=progress)
    return {
        "clicks": build_covisit(train, mode="time", window_ms=p.clicks_window_ms, name="covisit-clicks", **common),
        "carts_orders": build_covisit(train, mode="type", window_ms=p.clicks_window_ms, type_weight=p.type_weight,
                                      name="covisit-carts-orders", **common),
        "buy2buy": build_covisit(train, types="carts,orders", mode="unit", window_ms=p.buy2buy_window_ms,
                                 name="covisit-buy2buy", **common),
    }


class CovisitRec(Recommender):
    """History first (large ``hist_coef``), then co-visitation neighbours of the history:
    clicks from the time-weighted graph, carts/orders from carts-orders + buy2buy."""

    name = "covisit"

    def __init__(self, params: CovisitParams | None = None, hist_coef: float = 10.0, progress: bool = False,
                 graphs: dict[str, CovisitGraph] | None = None):
        self.params = params or CovisitParams()
        self.hist_coef = hist_coef
        self.progress = progress
        self.graphs = graphs

    def fit(self, train, model=None):
        super().fit(train, model)
        if self.graphs is None:
            self.graphs = build_covisit_set(train, self.params, self.progress)
        return self

    def _graphs(self, t: int) -> list[Graph]:
        g = self.graphs
        if t == 0:
            return [Graph.of(g["clicks"], 1.0)]
        return [Graph.of(g["carts_orders"], 1.0), Graph.of(g["buy2buy"], 1.0)]

    def predict(self, test, k=20):
        return {t: score_sessions(test, k, fill=self.popular[t], type_weight=self.params.type_weight,
                                  hist_coef=self.hist_coef, max_hist=self.params.max_events,
                                  graphs=tuple(self._graphs(t))) for t in range(3)}

    def info(self):
        return {name: g.stats for name, g in (self.graphs or {}).items()}


def _aid_lookup(aids: np.ndarray) -> np.ndarray:
    """Dense aid -> model row table (-1 = not in the vocabulary)."""
    aids = np.asarray(aids, np.int64)
    table = np.full(int(aids.max()) + 1 if aids.size else 1, -1, np.int64)
    table[aids] = np.arange(aids.shape[0])
    return table


def w2v_graph(model, query_aids: np.ndarray, n: int = 20, n_threads: int | None = None) -> tuple[Graph, dict]:
    """Word2Vec cosine neighbours (aid space) of ``query_aids``.

    Uses the model's neighbour table when it exists and holds at least ``n`` columns; otherwise
    computes the exact top-n (excluding the query's own row) with ``w2v.knn.topk_batch`` for the
    queried aids only. Aids outside the vocabulary get no neighbours (counted).
    """
    aids = np.asarray(model.aids, np.int64)
    table = _aid_lookup(aids)
    q = np.unique(np.asarray(query_aids, np.int64))
    q = q[q < table.shape[0]]
    rows = table[q]
    known = rows >= 0
    q, rows = q[known], rows[known]
    stats = {"queried_aids": int(np.unique(query_aids).size), "aids_in_vocab": int(q.size)}
    if model.neighbors is not None and model.neighbors.shape[1] >= n:
        nbr_rows = np.asarray(model.neighbors[rows, :n], np.int64)
        sc = np.asarray(model.neighbor_scores[rows, :n], np.float32)
        stats["source"] = "model neighbour table"
    else:
        from w2v.knn import inverse_norms, topk_batch
        vec = np.asarray(model.vectors, np.float32)
        sc, nbr_rows = topk_batch(vec, inverse_norms(vec), vec[rows], n, exclude_self=rows, n_threads=n_threads)
        nbr_rows = np.asarray(nbr_rows, np.int64)
        sc = np.asarray(sc, np.float32)
        stats["source"] = "exact top-k computed for the queried aids"
    valid = nbr_rows >= 0
    A = int(q.max()) + 1 if q.size else 0
    counts = np.zeros(A, np.int64)
    counts[q] = valid.sum(axis=1)
    indptr = np.zeros(A + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    nbr = aids[nbr_rows[valid]]  # q is ascending (np.unique), so rows are in indptr order
    w = sc[valid]
    return Graph(indptr, nbr, w.astype(np.float32), 1.0), stats


class W2VItemRec(Recommender):
    """The original service: the Word2Vec neighbours of the session's last aid, then popular."""

    name = "w2v-item"
    needs_model = True

    def __init__(self, n_neighbors: int = 20, graph: Graph | None = None):
        self.n_neighbors = n_neighbors
        self.graph = graph  # precomputed neighbours (w2v_graph) covering every aid predicted for

    def predict(self, test, k=20):
        ends = np.asarray(test.offsets[1:])[test.lengths() > 0] - 1
        if self.graph is not None:
            g, self.stats = self.graph, {"source": "precomputed"}
        else:
            g, self.stats = w2v_graph(self.model, np.asarray(test.aid)[ends], self.n_neighbors)
        return {t: score_sessions(test, k, fill=self.popular[t], hist_coef=0.0, last_only=True,
                                  graphs=(g,)) for t in range(3)}

    def info(self):
        return getattr(self, "stats", {})


class W2VSessionRec(Recommender):
    """Cosine top-k to the session vector: the recency- and type-weighted mean of the unit
    vectors of the session's last ``max_hist`` in-vocabulary events. Sessions with no
    in-vocabulary event get the popular list."""

    name = "w2v-session"
    needs_model = True

    def __init__(self, type_weight=DEFAULT_TYPE_WEIGHT, max_hist: int = 30, q_block: int = 65536):
        self.type_weight = np.asarray(type_weight, np.float64)
        self.max_hist = max_hist
        self.q_block = q_block

    def fit(self, train, model=None):
        from w2v.knn import inverse_norms
        super().fit(train, model)
        self.vec = np.ascontiguousarray(model.vectors, np.float32)
        self.inv = inverse_norms(self.vec)  # once per model, shared by session_vectors and predict
        return self

    def session_vectors(self, test: Dataset) -> tuple[np.ndarray, np.ndarray]:
        """float32[S, D] unnormalised session vectors and bool[S] (has an in-vocabulary event)."""
        vec, inv = self.vec, self.inv
        table = _aid_lookup(self.model.aids)
        aid = np.asarray(test.aid, np.int64)
        row = np.where(aid < table.shape[0], table[np.minimum(aid, table.shape[0] - 1)], -1)
        lens = test.lengths()
        L = np.repeat(lens, lens)
        from_end = L - 1 - (np.arange(test.n_events) - np.repeat(test.offsets[:-1], lens))
        m = np.minimum(L, self.max_hist)
        p = (m - 1 - from_end).astype(np.float64)
        rw = np.where(m > 1, 2.0 ** (0.1 + 0.9 * p / np.maximum(m - 1, 1)) - 1.0, 1.0)
        w = np.where(from_end < self.max_hist, rw * self.type_weight[np.asarray(test.type)], 0.0)
        out = np.zeros((test.n_sessions, vec.shape[1]), np.float32)
        has = _session_vectors_kernel(np.ascontiguousarray(test.offsets, np.int64), row, w.astype(np.float32),
                                      vec, inv, out)
        return out, has

    def predict(self, test, k=20):
        from w2v.knn import topk_batch
        qv, has = self.session_vectors(test)
        vec, inv = self.vec, self.inv
        aids = np.asarray(self.model.aids, np.int64)
        S = test.n_sessions
        res = {t: np.full((S, k), -1, np.int64) for t in range(3)}
        qi = np.flatnonzero(has)
        kk = min(k, vec.shape[0])
        for b in range(0, qi.shape[0], self.q_block):
            sel = qi[b:b + self.q_block]
            _, r = topk_batch(vec, inv, np.ascontiguousarray(qv[sel]), kk)
            r = np.asarray(r, np.int64)
            a = np.where(r >= 0, aids[np.maximum(r, 0)], -1)
            for t in range(3):
                res[t][sel, :kk] = a
        for t in range(3):
            row = self.popular[t][:k]
            res[t][~has, :row.shape[0]] = row
        self.stats = {"sessions_without_vocab_event": int((~has).sum()),
                      "events_beyond_max_hist": int(np.maximum(test.lengths() - self.max_hist, 0).sum())}
        return res

    def info(self):
        return getattr(self, "stats", {})


class BlendRec(CovisitRec):
    """Our best: the co-visitation recommender (history first, then co-visitation neighbours)
    plus the Word2Vec neighbours of every history aid, weighted by ``w2v_coef``.

    The default 0.05 was chosen on an independent synthetic set (200k sessions, generator seed 1,
    split seed 7) from {0.05, 0.1, 0.2, 0.5}: larger weights let cosine neighbours displace
    co-visited aids and lose recall; at 0.05 they mostly rank the slots co-visitation leaves empty
    and break its ties."""

    name = "blend"
    needs_model = True

    def __init__(self, params: CovisitParams | None = None, hist_coef: float = 10.0, w2v_coef: float = 0.05,
                 n_neighbors: int = 20, progress: bool = False, graphs=None, w2v: Graph | None = None):
        super().__init__(params, hist_coef, progress, graphs)
        self.w2v_coef = w2v_coef
        self.n_neighbors = n_neighbors
        self.w2v = w2v  # precomputed neighbours (w2v_graph) covering every aid predicted for

    def predict(self, test, k=20):
        if self.w2v is not None:
            g, self.w2v_stats = self.w2v, {"source": "precomputed"}
        else:
            g, self.w2v_stats = w2v_graph(self.model, np.asarray(test.aid), self.n_neighbors)
        g = Graph(g.indptr, g.nbr, g.w, self.w2v_coef)
        return {t: score_sessions(test, k, fill=self.popular[t], type_weight=self.params.type_weight,
                                  hist_coef=self.hist_coef, max_hist=self.params.max_events,
                                  graphs=tuple(self._graphs(t) + [g])) for t in range(3)}

    def info(self):
        d = super().info()
        d["w2v"] = getattr(self, "w2v_stats", {})
        return d


def make(name: str, *, seed: int = 0, covisit_graphs=None, covisit_params: CovisitParams | None = None,
         progress: bool = False, w2v_coef: float = 0.05, w2v: Graph | None = None) -> Recommender:
    """A recommender by name (one of ``NAMES``). ``covisit_graphs`` (from ``build_covisit_set``)
    and ``w2v`` (from ``w2v_graph``) are shared precomputations; ``w2v`` must cover every aid
    of the sessions predicted for."""
    if name == "random":
        return RandomRec(seed)
    if name == "popular":
        return PopularRec()
    if name == "history":
        return HistoryRec()
    if name == "covisit":
        return CovisitRec(covisit_params, progress=progress, graphs=covisit_graphs)
    if name == "w2v-item":
        return W2VItemRec(graph=w2v)
    if name == "w2v-session":
        return W2VSessionRec()
    if name == "blend":
        return BlendRec(covisit_params, progress=progress, graphs=covisit_graphs, w2v_coef=w2v_coef, w2v=w2v)
    raise ValueError(f"recommender: unknown name {name!r} (expected one of {', '.join(NAMES)})")


def add_tuning_flags(parser) -> None:
    """The recommender knobs shared by ``otto-eval predict`` and ``otto-eval run``."""
    from data_prep.flags import add_config_flags
    parser.add_argument("--w2v-coef", type=float, default=0.05, metavar="X",
                        help="weight of the Word2Vec neighbours in the blend (default: 0.05, chosen on an independent "
                             "synthetic set; see bench/RESULTS.md, section 6)")
    add_config_flags(parser.add_argument_group("co-visitation graphs"), CovisitParams,
                     metavars={"type_weight": "CLICKS,CARTS,ORDERS"})


def tuning_from_flags(args) -> tuple[CovisitParams, float]:
    """The validated ``CovisitParams`` and blend coefficient of :func:`add_tuning_flags`' flags."""
    from data_prep.command import UsageError
    from data_prep.flags import config_from_args
    if not 0 <= args.w2v_coef < float("inf"):
        raise UsageError(f"--w2v-coef: must be a number >= 0, got {args.w2v_coef}")
    return config_from_args(CovisitParams, args), args.w2v_coef
