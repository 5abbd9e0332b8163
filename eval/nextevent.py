"""Next-item protocols: the original study's (second-to-last -> last) pairs, and next-click at
every position of full test sessions.

Original study: keep events of ``types`` (its setting: orders only), keep sessions with at least
``min_len`` of them (its setting: more than 2 orders, ``min_len=3``), train on every sequence
without its last item, and test on the pairs (second-to-last aid -> last aid). The pairs are
sampled without replacement into disjoint test and validation sets (seeded). A recommender sees
a one-event session made of the query aid and is scored with recall@k (hit rate) and MRR@k on the
ranked list of the target's event type.

Next click at every position: for every cut point of every full test session (keep the first p
events, 1 <= p <= n-1), the target is the first click after the cut (the OTTO clicks label);
positions without a later click are skipped. The recommender sees the last ``max_hist`` events
of the kept prefix and is scored on its clicks list.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from data_prep.csr import offsets_from_lengths, select_events
from data_prep.dataset import Dataset, parse_types

from .metrics import rank_metrics


@dataclass
class PairSplit:
    train: Dataset
    test_query: np.ndarray    # int64[T] second-to-last aid
    test_target: np.ndarray   # int64[T] last aid
    test_type: np.ndarray     # uint8[T] type of the last event
    valid_query: np.ndarray
    valid_target: np.ndarray
    valid_type: np.ndarray
    stats: dict


@dataclass(frozen=True)
class PairParams:
    """The original study's pair protocol (``otto-eval pairs`` flags and ``run``'s ``--ne-*`` derive from it).

    types       comma-separated event types kept (the study: orders).
    min_len     minimum kept events per session (the study: 3, i.e. more than two orders).
    test_size   fraction of the eligible sessions whose last pair is a test pair.
    valid_size  fraction whose last pair is a validation pair (disjoint from the test pairs).
    """

    types: str = "orders"
    min_len: int = 3
    test_size: float = 0.1
    valid_size: float = 0.1

    def __post_init__(self) -> None:
        parse_types(self.types)
        if isinstance(self.min_len, bool) or not isinstance(self.min_len, int) or self.min_len < 2:
            raise ValueError(f"min_len: must be >= 2 (a pair needs two events), got {self.min_len!r}")
        for name in ("test_size", "valid_size"):
            _count(getattr(self, name), 0, name)
        if all(isinstance(x, float) for x in (self.test_size, self.valid_size)) and self.test_size + self.valid_size > 1:
            raise ValueError(f"test_size: test_size + valid_size must be <= 1, got {self.test_size} + {self.valid_size}")


def _count(size, n: int, name: str) -> int:
    if isinstance(size, float) and not isinstance(size, bool):
        if not 0 <= size <= 1:
            raise ValueError(f"{name}: a fraction must lie in [0, 1], got {size}")
        return int(round(size * n))
    if int(size) < 0:
        raise ValueError(f"{name}: must be >= 0, got {size}")
    return int(size)


def pair_split(ds: Dataset, types="orders", min_len: int = 3, test_size: float | int = 0.1,
               valid_size: float | int = 0.1, seed: int = 0) -> PairSplit:
    """The original study's split (see the module docstring). ``*_size``: a fraction of the
    eligible sessions (float) or a count (int); together they may not exceed the sessions."""
    PairParams(types, min_len, test_size, valid_size)  # validates
    f = ds.filter(types, min_len)
    n = f.n_sessions
    n_test, n_valid = _count(test_size, n, "test_size"), _count(valid_size, n, "valid_size")
    if n_test + n_valid > n:
        raise ValueError(f"test_size + valid_size: {n_test} + {n_valid} pairs requested but only {n} sessions "
                         f"have at least {min_len} events of types {types}")
    ends = f.offsets[1:]
    last, prev = ends - 1, ends - 2
    aid = np.asarray(f.aid, np.int64)
    # train: every sequence without its last item
    keep = np.ones(f.n_events, bool)
    keep[last] = False
    sel = select_events(f.offsets, keep, 0)
    train = Dataset(f.session_ids.copy(), sel.offsets, np.ascontiguousarray(f.aid[keep]),
                    np.ascontiguousarray(f.ts[keep]), np.ascontiguousarray(f.type[keep]))
    perm = np.random.default_rng(seed).permutation(n)
    ti, vi = perm[:n_test], perm[n_test:n_test + n_valid]
    typ = np.asarray(f.type)
    stats = {"types": [int(t) for t in parse_types(types)], "min_len": int(min_len), "seed": int(seed),
             "sessions_in": ds.n_sessions, "eligible_sessions": n, "train_events": train.n_events,
             "test_pairs": int(ti.size), "valid_pairs": int(vi.size),
             "test_pairs_repeat": int((aid[prev[ti]] == aid[last[ti]]).sum())}
    return PairSplit(train, aid[prev[ti]], aid[last[ti]], typ[last[ti]], aid[prev[vi]], aid[last[vi]],
                     typ[last[vi]], stats)


def query_sessions(query: np.ndarray, qtype: np.ndarray) -> Dataset:
    """One-event sessions (ids 0..n-1) holding each query aid (ts 0, type ``qtype``)."""
    n = query.shape[0]
    return Dataset(np.arange(n, dtype=np.int64), np.arange(n + 1, dtype=np.int64),
                   np.asarray(query, np.int32), np.zeros(n, np.int64), np.asarray(qtype, np.uint8))


def eval_pairs(rec, query: np.ndarray, target: np.ndarray, ttype: np.ndarray, ks=(20,),
               query_type: int | None = None) -> dict:
    """recall@k and MRR@k of a fitted recommender on (query -> target) pairs, for each k.

    The query session's event has type ``query_type`` (default: the target's type) and the
    ranked list used is the one for the target's type."""
    kmax = max(ks)
    qt = ttype if query_type is None else np.full(query.shape[0], query_type, np.uint8)
    preds = rec.predict(query_sessions(query, qt), kmax)
    p = np.full((query.shape[0], kmax), -1, np.int64)
    for t in range(3):
        sel = ttype == t
        p[sel] = preds[t][sel]
    return {int(k): rank_metrics(p, target, k) for k in ks}


# ---------------------------------------------------------------------------------------------
# First click strictly after each event, within its session.
#   offsets int64[S+1], aid int32/int64[E], type_ uint8[E]
# Returns int64[E]: aid of the first click at index > e in e's session, -1 if none.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _next_click_kernel(offsets, aid, type_):
    E = aid.shape[0]
    out = np.full(E, -1, np.int64)
    for s in range(offsets.shape[0] - 1):
        nxt = -1
        for e in range(offsets[s + 1] - 1, offsets[s] - 1, -1):
            out[e] = nxt
            if type_[e] == 0:
                nxt = aid[e]
    return out


def prefix_sessions(full: Dataset, max_hist: int = 30, max_sessions: int | None = None,
                    seed: int = 0) -> tuple[Dataset, np.ndarray, dict]:
    """Every cut of every session (or of ``max_sessions`` sessions sampled without replacement,
    seeded) with a later click: returns (prefix dataset, target click aids, stats).

    Prefix j holds the last ``max_hist`` kept events of its cut; its session id is the source
    session's id (ids repeat)."""
    if max_hist < 1:
        raise ValueError(f"max_hist: must be >= 1, got {max_hist}")
    rows = np.arange(full.n_sessions)
    if max_sessions is not None and max_sessions < full.n_sessions:
        rows = np.sort(np.random.default_rng(seed).choice(full.n_sessions, max_sessions, replace=False))
    sub = full.take(rows) if rows.size != full.n_sessions else full
    off = np.ascontiguousarray(sub.offsets, np.int64)
    nxt = _next_click_kernel(off, np.ascontiguousarray(sub.aid), np.ascontiguousarray(sub.type))
    e = np.flatnonzero(nxt >= 0)          # cut right after event e
    lens = sub.lengths()
    sess = np.repeat(np.arange(sub.n_sessions), lens)[e]
    start = np.maximum(off[sess], e + 1 - max_hist)
    plen = e + 1 - start
    offsets = offsets_from_lengths(plen)
    idx = np.repeat(start - offsets[:-1], plen) + np.arange(offsets[-1], dtype=np.int64)
    pre = Dataset(np.asarray(sub.session_ids, np.int64)[sess], offsets, np.ascontiguousarray(sub.aid[idx]),
                  np.ascontiguousarray(sub.ts[idx]), np.ascontiguousarray(sub.type[idx]))
    stats = {"sessions": int(sub.n_sessions), "sessions_total": int(full.n_sessions),
             "positions": int(e.size), "positions_without_later_click": int(sub.n_events - e.size),
             "max_hist": int(max_hist)}
    return pre, nxt[e], stats


def eval_next_click(rec, pre: Dataset, targets: np.ndarray, k: int = 20, batch: int = 500_000) -> dict:
    """recall@k and MRR@k of ``rec``'s clicks list on prefix sessions (batched)."""
    parts = []
    for b in range(0, pre.n_sessions, batch):
        rows = np.arange(b, min(b + batch, pre.n_sessions))
        part = pre.take(rows) if rows.size != pre.n_sessions else pre
        parts.append(rec.predict(part, k)[0])
    p = np.concatenate(parts) if parts else np.zeros((0, k), np.int64)
    return rank_metrics(p, targets, k)
