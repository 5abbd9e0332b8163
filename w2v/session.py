"""Session recommendations from a Word2Vec model: the one rule the service answers with and
``otto-eval`` scores (``w2v-session``, and the Word2Vec term of ``blend``).

The rule (:class:`SessionRule`; chosen by held-out score, see docs/ALGORITHM.md, "Session
recommendations", and bench/RESULTS.md, "Session rule") for a session of events ``e_0 .. e_{n-1}``,
oldest first:

* only the last ``max_events`` events count (all when ``None``); of those, event ``i`` gets the
  weight ``w_i = type_weights[type_i] * r_i`` with the recency ``r_i``

  - ``recency="decay"``: ``r_i = decay ** (n - 1 - i)``;
  - ``recency="log2"``: ``r_i = 2 ** (0.1 + 0.9 * p / (m - 1)) - 1`` for the ``p``-th (from 0) of
    the ``m`` counted events (1 when ``m = 1``);

  computed in float64;
* the query is ``q = sum_i w_i * v_i / ||v_i||`` over the counted events whose aid is in the
  vocabulary (an unknown aid keeps its position; a repeated aid counts once per occurrence;
  zero vectors contribute nothing), accumulated in float64 in event order and rounded to
  float32 once; when every contributing event has the same aid, the query is that aid's unit
  vector ``v / ||v||`` (the same direction, one float32 value whatever the weights), so sessions
  of one aid get one answer and :func:`recommend` computes it once per aid;
* the answer is the exact cosine top-``k`` of ``q`` (:func:`w2v.knn.topk`'s scores, order score
  descending then vocabulary row ascending), excluding every aid of the session when
  ``exclude_session``. A session without any known aid has no answer (``has = False``).

:func:`recommend` answers many sessions at once and returns exactly what :func:`knn.topk` returns
for each one: candidates come from the batched tiles (``knn.topk_batch``), are re-scored with the
scan's own arithmetic (``knn.scan_score``) and kept only when a bound on the difference between
the two kernels' scores proves that no other row can enter the top ``k``; otherwise (rare) that
session is scanned exactly. So the service (one session) and the evaluation (all test sessions)
give the same list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from data_prep.parallel import check_threads, run_ranges

from . import knn
from .keyed import KeyedVectors
from .knn import scan_score

__all__ = ["SessionRule", "SessionRecs", "SessionQueries", "DEFAULT_RULE", "event_weights", "log2_recency",
           "session_queries", "recommend"]

RECENCY = ("decay", "log2")


@dataclass(frozen=True)
class SessionRule:
    """Every knob of the session rule (see the module docstring)."""

    type_weights: tuple = (1.0, 6.0, 3.0)
    recency: str = "decay"
    decay: float = 0.8
    max_events: int | None = None
    exclude_session: bool = False

    def validate(self) -> "SessionRule":
        """Raise ``ValueError`` naming the first bad field; return self."""
        tw = tuple(self.type_weights)
        if len(tw) != 3 or any(not np.isfinite(w) or w < 0 for w in tw):
            raise ValueError(f"type_weights: expected three finite non-negative numbers, got {self.type_weights!r}")
        if self.recency not in RECENCY:
            raise ValueError(f"recency: expected one of {', '.join(RECENCY)}, got {self.recency!r}")
        if not (0.0 < self.decay <= 1.0):
            raise ValueError(f"decay: expected 0 < decay <= 1, got {self.decay!r}")
        if self.max_events is not None and (isinstance(self.max_events, bool) or int(self.max_events) < 1):
            raise ValueError(f"max_events: expected None or an integer >= 1, got {self.max_events!r}")
        return self


DEFAULT_RULE = SessionRule()


# The log2 recency of the p-th (from 0, oldest first) of m counted events, the one spelling of it
# (the session rule's recency="log2" and the history term of otto-eval's recommenders):
# 2 ** (0.1 + 0.9 p / (m - 1)) - 1 in float64, from 2^0.1 - 1 = 0.072 (oldest) to 1 (newest);
# 1 when m = 1. p, m: integers, 0 <= p < m.
@njit(cache=True, nogil=True)
def log2_recency(p, m):
    if m > 1:
        return 2.0 ** (0.1 + 0.9 * np.float64(p) / np.float64(m - 1)) - 1.0
    return 1.0


# out[i] = log2_recency(p[i], m[i]); p, m int64[E], out float64[E].
@njit(cache=True, nogil=True)
def _log2_recency_kernel(p, m, out):
    for i in range(p.shape[0]):
        out[i] = log2_recency(p[i], m[i])


def event_weights(offsets: np.ndarray, types: np.ndarray, rule: SessionRule = DEFAULT_RULE) -> np.ndarray:
    """``float64[E]``: the weight ``w_i`` of every event of the CSR sessions ``offsets`` (int64
    ``[S+1]``) with type codes ``types`` (``[E]``, 0..2); 0 for events before the last
    ``max_events`` of their session."""
    offsets = np.asarray(offsets, np.int64)
    types = np.asarray(types)
    lens = np.diff(offsets)
    E = int(offsets[-1]) if offsets.size else 0
    if types.shape != (E,):
        raise ValueError(f"types: shape {types.shape} does not match the {E} events of offsets")
    if E and (types.min() < 0 or types.max() > 2):
        raise ValueError("types: type codes must be 0 (clicks), 1 (carts) or 2 (orders)")
    L = np.repeat(lens, lens)
    from_end = L - 1 - (np.arange(E, dtype=np.int64) - np.repeat(offsets[:-1], lens))
    m = L if rule.max_events is None else np.minimum(L, int(rule.max_events))
    if rule.recency == "decay":
        r = np.power(np.float64(rule.decay), from_end.astype(np.float64))
    else:
        r = np.empty(E, np.float64)
        _log2_recency_kernel(m - 1 - from_end, m, r)
    w = np.asarray(rule.type_weights, np.float64)[types.astype(np.int64)] * r
    if rule.max_events is not None:
        w[from_end >= int(rule.max_events)] = 0.0
    return w


# Query vectors: out[s] = float32(sum_e weights[e] * inv[rows[e]] * vectors[rows[e]]) over the
# counted events e of session s (the last max_events, all when max_events = 0), in order, with
# rows[e] >= 0; accumulated in float64. When every contributing event (known row, f =
# weights[e] * inv[row] != 0) has the same row r, the query is instead float32(inv[r] * vectors[r])
# computed in float64: the same direction, one canonical value per row, and single[s] = r
# (otherwise -1), so sessions of one aid can share one answer.
#   offsets int64[S+1]; rows int64[E] (-1 = not in the vocabulary); weights float64[E] (>= 0);
#   vectors float32[V, D] C-contiguous; inv float32[V] (0 for zero rows); sessions lo..hi-1;
#   out float32[S, D]; has bool[S] (set: the session has at least one counted known event);
#   single int64[S].
# Degenerate: a session whose counted vectors or weights are all zero has a zero query (every
# score 0, so its top-k is the first k rows) and single = -1.
@njit(cache=True, nogil=True)
def _queries_kernel(lo, hi, offsets, rows, weights, max_events, vectors, inv, out, has, single):
    D = vectors.shape[1]
    acc = np.zeros(D, np.float64)
    for s in range(lo, hi):
        acc[:] = 0.0
        h = False
        one = -1      # the one contributing row so far (-2: more than one)
        e0 = offsets[s] if max_events == 0 else max(offsets[s], offsets[s + 1] - max_events)
        for e in range(e0, offsets[s + 1]):
            r = rows[e]
            if r < 0:
                continue
            h = True
            f = weights[e] * np.float64(inv[r])
            if f == 0.0:
                continue
            if one == -1:
                one = r
            elif one != r:
                one = -2
            for d in range(D):
                acc[d] += f * np.float64(vectors[r, d])
        has[s] = h
        if one >= 0:
            f = np.float64(inv[one])
            for d in range(D):
                acc[d] = f * np.float64(vectors[one, d])
            single[s] = one
        else:
            single[s] = -1
        for d in range(D):
            out[s, d] = np.float32(acc[d])


class SessionQueries(NamedTuple):
    """What :func:`session_queries` returns: ``queries`` float32[S, D] (the rule's query vectors),
    ``rows`` int64[E] (every event's vocabulary row, -1 unknown), ``has`` bool[S] (the session has
    a counted known event) and ``single`` int64[S] (the one row every contributing event has, whose
    unit vector is then the query; -1 otherwise)."""

    queries: np.ndarray
    rows: np.ndarray
    has: np.ndarray
    single: np.ndarray


def session_queries(kv: KeyedVectors, offsets, aids, types, rule: SessionRule = DEFAULT_RULE,
                    n_threads: int | None = None) -> SessionQueries:
    """The rule's query of every CSR session (see :class:`SessionQueries`)."""
    offsets = np.ascontiguousarray(offsets, np.int64)
    rows, _ = kv.lookup(aids)
    w = event_weights(offsets, types, rule)
    S = offsets.shape[0] - 1
    out = np.zeros((S, kv.vector_size), np.float32)
    has = np.zeros(S, np.bool_)
    single = np.full(S, -1, np.int64)
    run_ranges(S, check_threads(n_threads, "n_threads"), _queries_kernel, offsets, rows, w,
               int(rule.max_events or 0), kv.vectors, kv.inv_norms, out, has, single, min_per_range=256)
    return SessionQueries(out, rows, has, single)


@dataclass
class SessionRecs:
    """``aids``/``scores`` ``[S, k]`` (best first; ``-1``/``-inf`` padding, a whole row for a session
    with ``has = False``), ``has`` bool[S], ``unknown_events`` int (events whose aid is not in the
    vocabulary), ``exact_rescans`` int (sessions whose candidates could not be certified) and
    ``shared`` int (sessions of one aid that copied the answer of an earlier session of the same
    aid instead of being computed). ``sampled_recall``/``recall_sample``: set by a caller that
    checked approximate answers against the exact rule on a sample (``otto-eval``), else None/0."""

    aids: np.ndarray
    scores: np.ndarray
    has: np.ndarray
    unknown_events: int
    exact_rescans: int
    shared: int = 0
    sampled_recall: float | None = None
    recall_sample: int = 0

    def recall_info(self) -> dict:
        """``{"sampled_recall", "recall_sample"}`` when the answers were checked, else ``{}``."""
        return ({} if self.sampled_recall is None else
                {"sampled_recall": self.sampled_recall, "recall_sample": self.recall_sample})


# Certify batched candidates (see the module docstring). For session i (rows lo..hi-1 of the
# arrays): cand[i] int64[K] rows best first by the batched kernel (-1 padding), cand_s[i] float32[K]
# their batched scores; excl[eo[i]:eo[i+1]] int64 sorted rows to skip; queries float32[S, D] and
# q_scale float32[S] (1/||q||). The eligible candidates are re-scored with knn.scan_score and the
# best k (score desc, row asc, -inf/NaN dropped) written to out_r/out_s[i] (int64/float32 [S, k],
# pre-filled -1/-inf). ok[i] = True when the result is provably topk's: every row was a candidate
# (complete), or the k-th exact score t satisfies cand_s[i, K-1] + eps < t, so a row outside the
# candidates (batched score <= cand_s[i, K-1], exact score < that + eps) scores strictly below t.
@njit(cache=True, nogil=True)
def _certify_kernel(lo, hi, cand, cand_s, excl, eo, vectors, inv, queries, q_scale, complete, eps,
                    out_r, out_s, ok):
    K = cand.shape[1]
    k = out_r.shape[1]
    rows = np.empty(K, np.int64)
    sc = np.empty(K, np.float64)
    for i in range(lo, hi):
        n = 0
        for c in range(K):
            r = cand[i, c]
            if r < 0:
                continue
            skip = False
            for x in range(eo[i], eo[i + 1]):
                if excl[x] == r:
                    skip = True
                    break
            if skip:
                continue
            s = scan_score(queries[i], vectors, inv, q_scale[i], r)
            if not (s > -np.inf):  # -inf and NaN are never returned
                continue
            rows[n] = r
            sc[n] = -np.float64(s)
            n += 1
        order = np.argsort(rows[:n])
        rr = rows[:n][order]
        ss = sc[:n][order]
        o2 = np.argsort(ss, kind="mergesort")  # score desc; ties keep row order
        m = min(k, n)
        for t in range(m):
            out_r[i, t] = rr[o2[t]]
            out_s[i, t] = np.float32(-ss[o2[t]])
        if complete:
            ok[i] = True
        elif m < k or cand[i, K - 1] < 0:
            ok[i] = False
        else:
            ok[i] = np.float64(cand_s[i, K - 1]) + eps < -ss[o2[k - 1]]


# Candidates fetched beyond k + excluded rows (so the certificate usually holds).
MARGIN = 8


def _certificate_eps(D: int) -> float:
    """Bound on |batched score - scan score| for any (query, row): each kernel is within
    ``(D + 4) u`` of the real cosine (a float32 dot of D terms, ``gamma_D``, plus the roundings of
    the two inverse norms and two scalings; ``u = 2^-24``), doubled, plus an absolute 2^-100 for
    subnormal products. Finite vectors only; non-finite scores fail the test and are rescanned."""
    return (2.0 * D + 16.0) * 2.0 ** -24 + 2.0 ** -100


def recommend(kv: KeyedVectors, offsets, aids, types, k: int, rule: SessionRule = DEFAULT_RULE,
              n_threads: int | None = None, q_block: int = 65536, bulk=None, progress=None) -> SessionRecs:
    """The rule's top-``k`` for every CSR session (``offsets`` int64[S+1], ``aids``/``types`` [E]),
    equal to :func:`knn.topk` of each session's query with the session's rows excluded (when
    ``exclude_session``). ``q_block`` bounds the sessions held in one batch. ``bulk`` (optional,
    a ``w2v.ivf.BulkTopK`` over ``kv.vectors``) supplies the batched candidates; with its IVF
    method the answer is approximate: the best of the candidates by their exact scores, accepted
    without the certificate (docs/ALGORITHM.md, "Bulk top-k"). ``progress(done, total)``
    (optional) counts the sessions whose candidates were searched."""
    rule.validate()
    k = int(k)
    if k < 1:
        raise ValueError(f"k: must be >= 1 (got {k})")
    nt = check_threads(n_threads, "n_threads")
    offsets = np.ascontiguousarray(offsets, np.int64)
    queries, rows, has, single = session_queries(kv, offsets, aids, types, rule, nt)
    S = offsets.shape[0] - 1
    V, D = kv.vectors.shape
    out_a = np.full((S, k), -1, np.int64)
    out_s = np.full((S, k), -np.inf, np.float32)
    unknown = int((rows < 0).sum())
    # excluded rows per session: the distinct known rows of the whole session, sorted
    lens = np.diff(offsets)
    if rule.exclude_session and rows.size:
        sess = np.repeat(np.arange(S, dtype=np.int64), lens)
        known = rows >= 0
        key = np.unique(sess[known] * max(V, 1) + rows[known])
        ex_s, excl = key // max(V, 1), key % max(V, 1)
        n_ex = np.bincount(ex_s, minlength=S).astype(np.int64)
    else:
        excl, n_ex = np.zeros(0, np.int64), np.zeros(S, np.int64)
    eo = np.zeros(S + 1, np.int64)
    np.cumsum(n_ex, out=eo[1:])
    if V == 0 or not has.any():
        return SessionRecs(out_a, out_s, has, unknown, 0, 0)
    q_scale = knn.inverse_norms(queries)
    vec, inv = kv.vectors, kv.inv_norms
    eps = _certificate_eps(D)
    todo = np.flatnonzero(has)
    # sessions whose query is one row's unit vector and whose exclusions are that row (or none)
    # have the same answer: only the first of each row is computed, the others copy it
    alike = todo[single[todo] >= 0]
    if rule.exclude_session:
        alike = alike[n_ex[alike] == 1]
    _, first, which = np.unique(single[alike], return_index=True, return_inverse=True)
    leader = alike[first][which]
    todo = np.setdiff1d(todo, alike[leader != alike], assume_unique=True)
    rescan = []
    if todo.shape[0] <= 4:  # a few sessions (the service): the exact scan directly
        rescan, todo = todo.tolist(), todo[:0]
    n_direct = len(rescan)
    done, total = 0, int(todo.shape[0])
    # sessions with about the same number of excluded rows share a candidate count
    bucket = np.zeros(S, np.int64)
    pos = n_ex > 0
    bucket[pos] = 1 << np.ceil(np.log2(n_ex[pos])).astype(np.int64)
    for b in np.unique(bucket[todo]):
        grp = todo[bucket[todo] == b]
        K = min(V, k + int(b) + MARGIN)
        complete = K >= V or (bulk is not None and bulk.method != "exact")
        for g0 in range(0, grp.shape[0], q_block):
            sel = grp[g0:g0 + q_block]
            qs = np.ascontiguousarray(queries[sel])
            step = None if progress is None else (lambda d, _t, base=done: progress(base + d, total))
            cs, cr = (bulk.topk(qs, K, progress=step) if bulk is not None
                      else knn.topk_batch(vec, inv, qs, K, n_threads=nt, progress=step))
            done += int(sel.shape[0])
            sub_eo = np.zeros(sel.shape[0] + 1, np.int64)
            np.cumsum(n_ex[sel], out=sub_eo[1:])
            sub_ex = (np.concatenate([excl[eo[s]:eo[s + 1]] for s in sel]) if rule.exclude_session and excl.size
                      else np.zeros(0, np.int64))
            r_out = np.full((sel.shape[0], k), -1, np.int64)
            s_out = np.full((sel.shape[0], k), -np.inf, np.float32)
            ok = np.zeros(sel.shape[0], np.bool_)
            run_ranges(sel.shape[0], nt, _certify_kernel, cr, cs, sub_ex, sub_eo, vec, inv, qs,
                       q_scale[sel], complete, eps, r_out, s_out, ok, min_per_range=256)
            good = sel[ok]
            out_a[good] = r_out[ok]
            out_s[good] = s_out[ok]
            rescan.extend(sel[~ok].tolist())
    for s in rescan:
        sc, r = knn.topk(vec, inv, queries[s], k, exclude=excl[eo[s]:eo[s + 1]], n_threads=nt)
        out_a[s, :r.shape[0]] = r
        out_s[s, :r.shape[0]] = sc
    n_rescan = len(rescan) - n_direct
    out_a[alike] = out_a[leader]
    out_s[alike] = out_s[leader]
    valid = out_a >= 0
    out_a[valid] = kv.aids[out_a[valid]]
    return SessionRecs(out_a, out_s, has, unknown, n_rescan, int(alike.shape[0] - first.shape[0]))
