"""Metrics: the OTTO weighted recall@20 and next-item recall@k / MRR@k.

OTTO (micro-averaged, as otto-de/recsys-dataset ``evaluate.py``)::

    R_t   = sum_s |distinct(pred_t(s)[:k]) ∩ truth_t(s)|  /  sum_s min(k, |truth_t(s)|)
    total = 0.10 R_clicks + 0.30 R_carts + 0.60 R_orders

``truth_clicks(s)`` is the one next click. Sessions with an empty truth for a type do not count
for that type; a session with labels but no prediction row counts as zero hits; a prediction row
for a session without labels is ignored; the first ``k`` predictions are taken before duplicates
are removed; when a (session, type) appears on several submission rows the last one wins (as
in the official evaluator, which overwrites a dict). A type with no truth at all has recall 0.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from data_prep.dataset import TYPE_NAMES

from .labels import Labels
from .submission import Submission

WEIGHTS = {"clicks": 0.10, "carts": 0.30, "orders": 0.60}


# ---------------------------------------------------------------------------------------------
# Hits of ranked predictions against truth sets.
#   truth_off int64[S+1], truth int64[T]: truth of label row i, ascending & distinct (CSR)
#   pred_row int64[S]: submission row predicting label row i, -1 when none
#   pred_off int64[R+1], pred int64[N]: ranked predictions of each submission row (CSR)
#   k: cutoff (>= 0)
# hits[i] = |distinct(pred[row][:k]) ∩ truth_i|, 0 when pred_row[i] == -1 or truth_i is empty.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _hits_kernel(truth_off, truth, pred_row, pred_off, pred, k):
    S = truth_off.shape[0] - 1
    hits = np.zeros(S, np.int64)
    for i in range(S):
        r = pred_row[i]
        t0 = truth_off[i]
        t1 = truth_off[i + 1]
        if r < 0 or t1 == t0:
            continue
        p0 = pred_off[r]
        p1 = min(pred_off[r + 1], p0 + k)
        h = 0
        for j in range(p0, p1):
            a = pred[j]
            dup = False
            for q in range(p0, j):
                if pred[q] == a:
                    dup = True
                    break
            if dup:
                continue
            lo = t0
            hi = t1
            while lo < hi:  # binary search in the sorted truth
                mid = (lo + hi) >> 1
                if truth[mid] < a:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < t1 and truth[lo] == a:
                h += 1
        hits[i] = h
    return hits


def _truth_csr(labels: Labels, t: int) -> tuple[np.ndarray, np.ndarray]:
    if t == 0:
        has = labels.clicks >= 0
        off = np.zeros(len(labels) + 1, np.int64)
        np.cumsum(has, out=off[1:])
        return off, np.ascontiguousarray(labels.clicks[has])
    if t == 1:
        return labels.cart_offsets, labels.carts
    return labels.order_offsets, labels.orders


def _rows_for(labels: Labels, sub: Submission, t: int) -> np.ndarray:
    """Submission row of each label session for type ``t`` (last duplicate wins), -1 if none."""
    rows = np.flatnonzero(sub.types == t)
    sids = sub.session_ids[rows]
    # stable sort by sid; the last of a run of equal sids is the last row in file order
    order = np.argsort(sids, kind="stable")
    sids, rows = sids[order], rows[order]
    last = np.ones(sids.shape[0], bool)
    last[:-1] = sids[1:] != sids[:-1]
    sids, rows = sids[last], rows[last]
    pos = np.searchsorted(sids, labels.session_ids)
    pos_c = np.minimum(pos, max(sids.shape[0] - 1, 0))
    found = (pos < sids.shape[0]) & (sids[pos_c] == labels.session_ids) if sids.size else np.zeros(len(labels), bool)
    out = np.full(len(labels), -1, np.int64)
    out[found] = rows[pos_c[found]]
    return out


def score(labels: Labels, sub: Submission, k: int = 20, weights: dict | None = None,
          detail: bool = False) -> dict:
    """OTTO weighted recall@k of ``sub`` against ``labels``.

    Returns ``{"clicks", "carts", "orders", "total"}`` (floats); with ``detail`` also
    ``"hits"`` and ``"truths"`` (the numerators and denominators per type) and
    ``"sessions_without_prediction"``.
    """
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    weights = WEIGHTS if weights is None else weights
    out: dict = {}
    hits_d, truth_d, missing = {}, {}, {}
    pred_off = np.ascontiguousarray(sub.offsets, np.int64)
    pred = np.ascontiguousarray(sub.aids, np.int64)
    for t, name in enumerate(TYPE_NAMES):
        toff, truth = _truth_csr(labels, t)
        rows = _rows_for(labels, sub, t)
        h = _hits_kernel(np.ascontiguousarray(toff), np.ascontiguousarray(truth, np.int64), rows, pred_off, pred, int(k))
        denom = int(np.minimum(np.diff(toff), k).sum())
        hits_d[name] = int(h.sum())
        truth_d[name] = denom
        missing[name] = int(((rows < 0) & (np.diff(toff) > 0)).sum())
        out[name] = hits_d[name] / denom if denom else 0.0
    out["total"] = sum(weights[n] * out[n] for n in TYPE_NAMES)
    if detail:
        out["hits"] = hits_d
        out["truths"] = truth_d
        out["sessions_without_prediction"] = missing
    return out


def score_curve(labels: Labels, sub: Submission, ks=range(1, 21)) -> dict[str, list[float]]:
    """Per-type and total recall@k for each k in ``ks`` (for recall@k plots)."""
    curves: dict[str, list[float]] = {n: [] for n in (*TYPE_NAMES, "total")}
    for k in ks:
        s = score(labels, sub, k=k)
        for n in curves:
            curves[n].append(s[n])
    return curves


def rank_metrics(preds: np.ndarray, targets: np.ndarray, k: int = 20) -> dict:
    """Next-item recall@k (hit rate) and MRR@k.

    ``preds`` int64[N, >=k] ranked (-1 = empty slot), ``targets`` int64[N]. The rank of a hit is
    the position of the first occurrence of the target; MRR adds 1/rank for hits, 0 otherwise.
    With N = 0 both metrics are 0 and ``n`` is 0.
    """
    preds = np.asarray(preds)
    targets = np.asarray(targets)
    if preds.ndim != 2 or preds.shape[0] != targets.shape[0]:
        raise ValueError(f"preds/targets: shapes {preds.shape}/{targets.shape} do not match")
    n = int(targets.shape[0])
    if n == 0:
        return {"recall": 0.0, "mrr": 0.0, "n": 0, "k": int(k)}
    p = preds[:, :k]
    match = (p == targets[:, None]) & (targets[:, None] >= 0)
    hit = match.any(axis=1)
    rank = np.argmax(match, axis=1) + 1
    return {"recall": float(hit.mean()), "mrr": float(np.where(hit, 1.0 / rank, 0.0).mean()), "n": n, "k": int(k)}
