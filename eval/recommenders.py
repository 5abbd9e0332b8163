"""Session recommenders behind one batch interface.

``rec.fit(train: Dataset, model: Model | None) -> rec`` then
``rec.predict(test: Dataset, k=20) -> {0: int64[S, k], 1: ..., 2: ...}``: for every test session
(row order of ``test``), the ranked aids predicted for clicks (0), carts (1) and orders (2); ``-1``
pads a row that has fewer than ``k`` candidates (only when the whole catalogue is smaller than k).
After ``predict``, ``rec.limits`` counts what the recommender's limits dropped.

All history/graph recommenders share one Numba kernel (``_score_kernel``), parameterised by:

* history: each of the last ``max_hist`` events adds ``recency(pos) * type_weight[type]`` to its
  aid, with ``recency(pos) = 2**(0.1 + 0.9 * pos / (m - 1)) - 1`` (``w2v.session.log2_recency``;
  0.07 for the oldest of m events, 1 for the newest; 1 when m = 1), times ``hist_coef``;
* neighbour graphs in aid space (co-visitation, Word2Vec item neighbours), stacked in one CSR with
  a coefficient each: each distinct source aid ``a`` of the history (or only the last aid with
  ``last_only``) with source weight ``recency(last position of a)`` adds
  ``coef_g * source_weight * w(a, y) / max_y' w(a, y')`` to every neighbour ``y``;
* optionally one candidate list per session (the Word2Vec session rule of ``w2v.session`` in the
  blend): candidate ``y`` with score ``c`` adds ``coef * c / max c`` (positive scores only);
* ranking by score descending then aid ascending; free slots are filled from a fallback list
  (popular aids of the target type), skipping aids already chosen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numba as nb
import numpy as np

from data_prep.dataset import Dataset
from data_prep.parallel import check_threads, run_ranges
from data_prep.progress import Progress
from w2v.keyed import KeyedVectors
from w2v.model_io import popularity
from w2v.vocab import distinct_ids
from w2v.session import DEFAULT_RULE, SessionRule, log2_recency, recommend as session_recommend

from .covisit import CovisitGraph, build_covisit

NAMES = ("random", "popular", "history", "covisit", "w2v-item", "w2v-session", "blend")
DEFAULT_TYPE_WEIGHT = (1.0, 6.0, 3.0)


class Sessions(NamedTuple):
    """CSR sessions: ``offsets`` int64[S+1], ``aid`` int64[E] (>= 0), ``type_`` uint8[E]."""
    offsets: np.ndarray
    aid: np.ndarray
    type_: np.ndarray


class Scoring(NamedTuple):
    """``type_w`` float64[3]; ``hist_coef`` float64; ``max_hist`` int (>= 1); ``last_only`` bool;
    ``k`` int (>= 1); ``A`` int: aid space size (> every aid, neighbour and fallback aid)."""
    type_w: np.ndarray
    hist_coef: float
    max_hist: int
    last_only: bool
    k: int
    A: int


class Stacked(NamedTuple):
    """G graphs in one CSR: graph g's row ``a`` (``a < n_rows[g]``) is
    ``nbr[indptr[base[g] + a]:indptr[base[g] + a + 1]]`` with weights ``w``; ``coef`` float64[G]
    (a graph with coef 0 is skipped). base/n_rows int64[G], indptr int64[sum(n_rows + 1)],
    nbr int64[N], w float32[N]."""
    base: np.ndarray
    n_rows: np.ndarray
    indptr: np.ndarray
    nbr: np.ndarray
    w: np.ndarray
    coef: np.ndarray


class PerSession(NamedTuple):
    """One candidate list per session: ``nbr`` int64[S, n] (-1 = none), ``w`` float32[S, n],
    ``coef`` float64 (0: unused; then the arrays may be [S, 0])."""
    nbr: np.ndarray
    w: np.ndarray
    coef: float


# ---------------------------------------------------------------------------------------------
# Score candidates of every session and keep the top k (see the module docstring for the math).
#   ses: Sessions; sc: Scoring; g: Stacked; ps: PerSession; fill int64[F]: fallback aids in order
#   (all < A); sessions s_lo..s_hi-1 are scored into out int64[S, k] (pre-filled with -1; the
#   caller runs disjoint ranges on threads, each call has its own O(A) scratch)
# Returns out; -1 where fewer than k distinct candidates + fallback aids exist.
# Degenerate: empty session -> only fallback; rows/lists with max weight <= 0 add nothing; an aid
# >= n_rows[g] has no neighbours in graph g.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _score_kernel(s_lo, s_hi, ses, sc, g, ps, fill, out):
    offsets, aid, type_ = ses.offsets, ses.aid, ses.type_
    k, max_hist = sc.k, sc.max_hist
    score = np.zeros(sc.A, np.float64)
    srcw = np.zeros(sc.A, np.float64)
    seen = np.zeros(sc.A, np.bool_)
    touched = np.empty(sc.A, np.int64)
    for s in range(s_lo, s_hi):
        e1 = offsets[s + 1]
        e0 = max(offsets[s], e1 - max_hist)
        m = e1 - e0
        nt = 0
        # history
        for e in range(e0, e1):
            a = aid[e]
            rw = log2_recency(e - e0, m)
            if not seen[a]:
                seen[a] = True
                touched[nt] = a
                nt += 1
            score[a] += sc.hist_coef * rw * sc.type_w[type_[e]]
            if rw > srcw[a]:
                srcw[a] = rw
        n_src = nt
        # graphs
        for gi in range(g.coef.shape[0]):
            cg = g.coef[gi]
            if cg == 0.0:
                continue
            Ag = g.n_rows[gi]
            b = g.base[gi]
            for si in range(n_src):
                a = touched[si]
                sw = srcw[a]
                if sc.last_only:
                    if m == 0 or a != aid[e1 - 1]:
                        continue
                    sw = 1.0
                if a >= Ag:
                    continue
                r0 = g.indptr[b + a]
                r1 = g.indptr[b + a + 1]
                if r1 == r0:
                    continue
                mx = g.w[r0]
                for r in range(r0 + 1, r1):
                    if g.w[r] > mx:
                        mx = g.w[r]
                if mx <= 0:
                    continue
                for r in range(r0, r1):
                    y = g.nbr[r]
                    if g.w[r] <= 0:
                        continue
                    if not seen[y]:
                        seen[y] = True
                        touched[nt] = y
                        nt += 1
                    score[y] += cg * sw * g.w[r] / mx
        # the session's own candidate list
        if ps.coef != 0.0 and ps.nbr.shape[1] > 0:
            mx = -np.inf
            for c in range(ps.nbr.shape[1]):
                if ps.nbr[s, c] >= 0 and ps.w[s, c] > mx:
                    mx = ps.w[s, c]
            if mx > 0:
                for c in range(ps.nbr.shape[1]):
                    y = ps.nbr[s, c]
                    if y < 0 or ps.w[s, c] <= 0:
                        continue
                    if not seen[y]:
                        seen[y] = True
                        touched[nt] = y
                        nt += 1
                    score[y] += ps.coef * ps.w[s, c] / mx
        # rank: aid ascending, then stable sort by -score (ties keep aid order)
        cand = np.sort(touched[:nt])
        neg = np.empty(nt, np.float64)
        for i in range(nt):
            neg[i] = -score[cand[i]]
        order = np.argsort(neg, kind="mergesort")
        c = 0
        for i in range(nt):
            if c >= k:
                break
            if neg[order[i]] < 0.0:  # strictly positive score only
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


def stack_graphs(graphs) -> Stacked:
    """The graphs as one :class:`Stacked` CSR (``indptr`` of graph g shifted by the edges before it)."""
    n_rows = np.array([g.indptr.shape[0] - 1 for g in graphs], np.int64)
    base = np.zeros(len(graphs), np.int64)
    if len(graphs) > 1:
        np.cumsum(n_rows[:-1] + 1, out=base[1:])
    edges = np.array([g.nbr.shape[0] for g in graphs], np.int64)
    shift = np.concatenate(([0], np.cumsum(edges)[:-1])) if len(graphs) else np.zeros(0, np.int64)
    ip = [np.asarray(g.indptr, np.int64) + sh for g, sh in zip(graphs, shift)]

    def cat(parts, dt):
        return np.ascontiguousarray(np.concatenate(parts), dt) if parts else np.zeros(0, dt)

    return Stacked(base, n_rows, cat(ip, np.int64), cat([g.nbr for g in graphs], np.int64),
                   cat([g.w for g in graphs], np.float32), np.array([float(g.coef) for g in graphs], np.float64))


def score_sessions(test: Dataset, k: int, *, fill: np.ndarray, type_weight=DEFAULT_TYPE_WEIGHT,
                   hist_coef: float = 1.0, max_hist: int = 30, last_only: bool = False,
                   graphs: tuple[Graph, ...] = (), per_session: PerSession | None = None,
                   n_threads: int | None = None) -> tuple[np.ndarray, dict]:
    """Run ``_score_kernel`` on ``test``: ``(int64[S, k], limits)``; ``limits`` counts what
    ``max_hist`` dropped (``events_beyond_max_hist``)."""
    if k < 1 or max_hist < 1:
        raise ValueError(f"k and max_hist must be >= 1 (got {k}, {max_hist})")
    aid = np.ascontiguousarray(test.aid, np.int64)
    fill = np.ascontiguousarray(fill, np.int64)
    S = test.n_sessions
    if per_session is None:
        per_session = PerSession(np.full((S, 0), -1, np.int64), np.zeros((S, 0), np.float32), 0.0)
    per_session = PerSession(np.ascontiguousarray(per_session.nbr, np.int64),
                             np.ascontiguousarray(per_session.w, np.float32), float(per_session.coef))
    if per_session.nbr.shape[0] != S or per_session.w.shape != per_session.nbr.shape:
        raise ValueError(f"per_session: shapes {per_session.nbr.shape}/{per_session.w.shape} do not match [{S}, n]")
    A = 1
    for arr in (aid, fill, per_session.nbr, *(g.nbr for g in graphs)):
        if arr.size:
            A = max(A, int(arr.max()) + 1)
    ses = Sessions(np.ascontiguousarray(test.offsets, np.int64), aid, np.ascontiguousarray(test.type, np.uint8))
    sc = Scoring(np.asarray(type_weight, np.float64), float(hist_coef), int(max_hist), bool(last_only), int(k), int(A))
    out = np.full((S, k), -1, np.int64)
    # nogil kernel: threads share nothing but disjoint rows of out
    run_ranges(S, check_threads(n_threads, "n_threads"), _score_kernel, ses, sc, stack_graphs(list(graphs)),
               per_session, fill, out)
    limits = {"events_beyond_max_hist": int(np.maximum(test.lengths() - max_hist, 0).sum())}
    return out, limits


_POPULAR_LAST: list = []   # [(train, top, lists)]: the last answer of popular_lists


def popular_lists(train: Dataset, top: int = 100) -> np.ndarray:
    """int64[3, P]: ``w2v.model_io.popularity`` of the train events (count desc, aid asc),
    ``P = min(top, distinct aids)``. Every recommender's ``fit`` asks for it, so the last answer
    is kept and given again for the same ``train`` object (identity, never content; the object
    is held, so its id cannot be reused): ``otto-eval run`` fits seven recommenders on one split
    (2.4-7.7 s each at full size). The array is read-only."""
    for t, p, lists in _POPULAR_LAST:
        if t is train and p == top:
            return lists
    lists = popularity(np.asarray(train.aid), np.asarray(train.type), top)[0]
    lists.flags.writeable = False
    _POPULAR_LAST[:] = [(train, top, lists)]
    return lists


class SessionAnswers:
    """The Word2Vec session answers of one model (:func:`w2v.session.recommend`), for every
    recommender that uses them: the keyed vectors (inverse norms computed once), the bulk top-k
    (``w2v.ivf.BulkTopK`` with ``knn_method`` and ``ivf_params``; its IVF files are reused from the
    model directory when they match) built once, and the answers to the last ``keep`` (sessions,
    n, rule) asked for. ``w2v-session`` and ``blend`` ask for the same rule on the same sessions, so
    ``otto-eval run`` computes each answer once (``hits`` counts the answers served again).
    Sessions are recognised by identity (the same ``Dataset`` object), never by content.

    The model's neighbour table, when it has one, is given to the bulk top-k (its IVF searches are
    expanded through it, ``--ivf-expand-rounds``). An approximate answer is checked: for
    ``recall_sample`` sessions drawn with ``default_rng(seed)`` the exact answer (the service's,
    ``bulk=None``) is computed too, and the share of its aids the answer has is recorded in the
    answer (``SessionRecs.sampled_recall``, reported by ``w2v-session`` and ``blend``)."""

    def __init__(self, knn_method: str = "auto", ivf_params=None, keep: int = 2, progress: bool = False,
                 recall_sample: int = 2000, seed: int = 0):
        self.knn_method, self.ivf_params, self.keep, self.progress = knn_method, ivf_params, keep, progress
        self.recall_sample, self.seed = int(recall_sample), int(seed)
        self.model = self.kv = self._bulk = None
        self._memo: list = []
        self.hits = 0

    def bind(self, model) -> KeyedVectors:
        """Use ``model`` (a new model drops what was computed for the previous one)."""
        if model is not self.model:
            self.model, self.kv, self._bulk, self._memo = model, _keyed(model), None, []
        return self.kv

    def bulk(self):
        if self._bulk is None:
            from w2v.ivf import DEFAULTS, BulkTopK
            self._bulk = BulkTopK(self.kv.vectors, self.knn_method, self.ivf_params or DEFAULTS,
                                  model_dir=getattr(self.model, "path", None),
                                  table=getattr(self.model, "neighbors", None))
        return self._bulk

    def recommend(self, sessions: Dataset, n: int, rule: SessionRule, q_block: int = 65536):
        """``w2v.session.recommend`` of ``sessions`` with the bound model (a ``SessionRecs``)."""
        for s, nn, rr, res in self._memo:
            if s is sessions and nn == n and rr == rule:
                self.hits += 1
                return res
        bar = Progress("Word2Vec session answers", None, unit="sessions", quiet=not self.progress)
        res = session_recommend(self.kv, sessions.offsets, sessions.aid, sessions.type, n, rule,
                                q_block=q_block, bulk=self.bulk(), progress=bar.report)
        bar.close()
        if self.bulk().method != "exact" and self.recall_sample > 0:
            res.sampled_recall, res.recall_sample = self._recall(sessions, n, rule, res)
        self._memo = (self._memo + [(sessions, n, rule, res)])[-self.keep:]
        return res

    def _recall(self, sessions: Dataset, n: int, rule: SessionRule, res) -> tuple[float, int]:
        """Recall of the approximate answers ``res`` against the exact rule (the service's answer)
        on up to ``recall_sample`` of the sessions with a query, drawn with ``default_rng(seed)``:
        the share of the exact answers' aids that ``res`` has for the same sessions."""
        cand = np.flatnonzero(res.has)
        if cand.size == 0:
            return 1.0, 0
        pick = np.sort(np.random.default_rng(self.seed).choice(cand, min(self.recall_sample, cand.size),
                                                               replace=False))
        sub = sessions.take(pick)
        exact = session_recommend(self.kv, sub.offsets, sub.aid, sub.type, n, rule)
        hit = total = 0
        for a, b in zip(res.aids[pick], exact.aids):
            want = b[b >= 0]
            total += want.size
            hit += np.isin(want, a[a >= 0]).sum()
        return (float(hit / total) if total else 1.0), int(pick.size)


class Recommender:
    """Base: ``fit`` on a train dataset (and a Word2Vec model where needed), then ``predict``.
    A recommender that needs a model reads its vectors and session answers through
    ``self.answers`` (a :class:`SessionAnswers`, shared when one is given to :func:`make`)."""

    name = "base"
    needs_model = False
    answers: SessionAnswers | None = None

    def fit(self, train: Dataset, model=None) -> "Recommender":
        if self.needs_model and model is None:
            raise ValueError(f"{self.name}: needs a Word2Vec model")
        self.model = model
        if self.needs_model:
            self.answers = self.answers or SessionAnswers()
            self.kv = self.answers.bind(model)
        else:
            self.kv = None
        self.popular = popular_lists(train)
        self.limits = {}
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
        self.catalogue = distinct_ids(np.asarray(train.aid))
        self.limits = {}
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
        res = {}
        for t in range(3):
            res[t], self.limits = score_sessions(test, k, fill=self.popular[t], type_weight=self.type_weight,
                                                 max_hist=self.max_hist)
        return res


@dataclass
class CovisitParams:
    """The co-visitation graphs' knobs (``otto-eval predict``/``run`` flags derive from it).

    max_events         last events of a train session that form pairs (older ones are counted
                       as dropped).
    top_n              neighbours kept per aid and graph.
    n_parts            passes over aid slices (more passes, less memory; never changes the result
                       but for the float32 rounding of non-integer weight sums).
    chunk_pairs        pairs accumulated per step; bounds memory, never changes the result (but
                       for the same rounding).
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
        return self._predict(test, k)

    def _predict(self, test, k, per_session: PerSession | None = None):
        res = {}
        for t in range(3):
            res[t], self.limits = score_sessions(test, k, fill=self.popular[t], type_weight=self.params.type_weight,
                                                 hist_coef=self.hist_coef, max_hist=self.params.max_events,
                                                 graphs=tuple(self._graphs(t)), per_session=per_session)
        return res

    def info(self):
        return {name: g.stats for name, g in (self.graphs or {}).items()}


def _keyed(model) -> KeyedVectors:
    return model if isinstance(model, KeyedVectors) else KeyedVectors.from_model(model)


def w2v_graph(model, query_aids: np.ndarray, n: int = 20, n_threads: int | None = None) -> tuple[Graph, dict]:
    """Word2Vec cosine neighbours (aid space) of ``query_aids``; ``model`` is a loaded model or
    its ``KeyedVectors``.

    Uses the model's neighbour table when it exists and holds at least ``n`` columns; otherwise
    computes the exact top-n (excluding the query's own row) with ``w2v.knn.topk_batch`` for the
    queried aids only. Aids outside the vocabulary get no neighbours (counted).
    """
    from w2v.knn import topk_batch
    kv = _keyed(model)
    q = np.unique(np.asarray(query_aids, np.int64))
    rows, known = kv.lookup(q)
    q, rows = q[known], rows[known]
    stats = {"queried_aids": int(known.shape[0]), "aids_in_vocab": int(q.size)}
    if kv.table_k >= n:
        nbr_rows = np.asarray(kv.neighbor_rows[rows, :n], np.int64)
        sc = np.asarray(kv.neighbor_scores[rows, :n], np.float32)
        stats["source"] = "model neighbour table"
    else:
        vec = kv.vectors
        sc, nbr_rows = topk_batch(vec, kv.inv_norms, vec[rows], n, exclude_self=rows, n_threads=n_threads)
        nbr_rows = np.asarray(nbr_rows, np.int64)
        sc = np.asarray(sc, np.float32)
        stats["source"] = "exact top-k computed for the queried aids"
    valid = nbr_rows >= 0
    A = int(q.max()) + 1 if q.size else 0
    counts = np.zeros(A, np.int64)
    counts[q] = valid.sum(axis=1)
    indptr = np.zeros(A + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    nbr = kv.aids[nbr_rows[valid]]  # q is ascending (np.unique), so rows are in indptr order
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
            g, self.stats = w2v_graph(self.kv, np.asarray(test.aid)[ends], self.n_neighbors)
        res = {}
        for t in range(3):
            res[t], self.limits = score_sessions(test, k, fill=self.popular[t], hist_coef=0.0, last_only=True,
                                                 graphs=(g,))
        return res

    def info(self):
        return getattr(self, "stats", {})


class W2VSessionRec(Recommender):
    """The service's session answer (``w2v.session.recommend`` with ``rule``): cosine top-k to the
    weighted sum of the session's unit vectors. Sessions with no known aid, and free slots, get the
    popular list of the target type."""

    name = "w2v-session"
    needs_model = True

    def __init__(self, rule: SessionRule = DEFAULT_RULE, q_block: int = 65536, answers: SessionAnswers | None = None):
        self.rule = rule.validate()
        self.q_block = q_block
        self.answers = answers

    def predict(self, test, k=20):
        r = self.answers.recommend(test, k, self.rule, self.q_block)
        res = {}
        for t in range(3):
            # the list as ranked, then the popular aids not already in it
            res[t], _ = score_sessions(test, k, fill=self.popular[t], hist_coef=0.0, max_hist=1,
                                       per_session=PerSession(r.aids, _rank_weights(r.aids), 1.0))
        self.stats = {"sessions_without_vocab_event": int((~r.has).sum()), "unknown_events": r.unknown_events,
                      "exact_rescans": r.exact_rescans, "shared_answers": r.shared, **r.recall_info(),
                      **self.answers.bulk().info()}
        self.limits = {"events_beyond_max_events": int(np.maximum(test.lengths() - self.rule.max_events, 0).sum())
                       if self.rule.max_events else 0}
        return res

    def info(self):
        return getattr(self, "stats", {})


def _rank_weights(aids: np.ndarray) -> np.ndarray:
    """float32 weights that keep a ranked list's order in ``_score_kernel`` (k, k-1, ..., 1)."""
    k = aids.shape[1]
    w = np.broadcast_to(np.arange(k, 0, -1, dtype=np.float32), aids.shape).copy()
    w[aids < 0] = 0
    return w


class BlendRec(CovisitRec):
    """Our best: the co-visitation recommender (history first, then co-visitation neighbours)
    plus the Word2Vec session answer (``w2v.session.recommend``, its top ``n_neighbors`` with their
    cosine scores), weighted by ``w2v_coef``; see the module docstring."""

    name = "blend"
    needs_model = True

    def __init__(self, params: CovisitParams | None = None, hist_coef: float = 10.0, w2v_coef: float = 0.05,
                 n_neighbors: int = 20, progress: bool = False, graphs=None, rule: SessionRule = DEFAULT_RULE,
                 answers: SessionAnswers | None = None):
        super().__init__(params, hist_coef, progress, graphs)
        self.answers = answers
        self.w2v_coef = w2v_coef
        self.n_neighbors = n_neighbors
        self.rule = rule.validate()

    def predict(self, test, k=20):
        r = self.answers.recommend(test, self.n_neighbors, self.rule)
        self.w2v_stats = {"sessions_without_vocab_event": int((~r.has).sum()), "exact_rescans": r.exact_rescans,
                          "shared_answers": r.shared, **r.recall_info(), **self.answers.bulk().info()}
        return self._predict(test, k, per_session=PerSession(r.aids, r.scores, self.w2v_coef))

    def info(self):
        d = super().info()
        d["w2v"] = getattr(self, "w2v_stats", {})
        return d


def make(name: str, *, seed: int = 0, covisit_graphs=None, covisit_params: CovisitParams | None = None,
         progress: bool = False, w2v_coef: float = 0.05, w2v: Graph | None = None,
         answers: SessionAnswers | None = None) -> Recommender:
    """A recommender by name (one of ``NAMES``). ``covisit_graphs`` (from ``build_covisit_set``),
    ``w2v`` (from ``w2v_graph``, used by ``w2v-item``) and ``answers`` (a :class:`SessionAnswers`,
    used by ``w2v-session`` and ``blend``; carries the bulk top-k method) are shared
    precomputations; ``w2v`` must cover every aid of the sessions predicted for."""
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
        return W2VSessionRec(answers=answers)
    if name == "blend":
        return BlendRec(covisit_params, progress=progress, graphs=covisit_graphs, w2v_coef=w2v_coef,
                        answers=answers)
    raise ValueError(f"recommender: unknown name {name!r} (expected one of {', '.join(NAMES)})")


def add_tuning_flags(parser) -> None:
    """The recommender knobs shared by ``otto-eval predict`` and ``otto-eval run``."""
    from data_prep.flags import add_config_flags
    parser.add_argument("--w2v-coef", type=float, default=0.05, metavar="X",
                        help="weight of the Word2Vec session answer in the blend (default: 0.05, chosen on an "
                             "independent synthetic set; see bench/RESULTS.md, 'Session rule')")
    add_config_flags(parser.add_argument_group("co-visitation graphs"), CovisitParams,
                     metavars={"type_weight": "CLICKS,CARTS,ORDERS"})
    from w2v.index import add_method_flags
    add_method_flags(parser, table=False)  # --method and --ivf-*: the session answer's bulk top-k


def tuning_from_flags(args) -> tuple[CovisitParams, float]:
    """The validated ``CovisitParams`` and blend coefficient of :func:`add_tuning_flags`' flags."""
    from data_prep.command import UsageError
    from data_prep.flags import config_from_args
    if not 0 <= args.w2v_coef < float("inf"):
        raise UsageError(f"--w2v-coef: must be a number >= 0, got {args.w2v_coef}")
    return config_from_args(CovisitParams, args), args.w2v_coef
