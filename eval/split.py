"""The official OTTO train/test split (otto-de/recsys-dataset ``testset.py`` + ``labels.py``).

1. ``cut_ts = max(ts) - days * 86_400_000``.
2. A session whose first event is at or after ``cut_ts`` is a test session. Every other session is
   trimmed to its events with ``ts < cut_ts`` and stays in train if at least ``min_train_len``
   events remain (the official script keeps train sessions with >= 2 events).
3. Test events whose aid never occurs in the kept train sessions are dropped; test sessions left
   with fewer than 2 events are dropped.
4. Each remaining test session of length n is cut after ``k`` events, ``k`` uniform in
   ``[1, n-1]`` (seeded), so at least one event is kept and at least one follows.
5. Labels: the first click after the cut, the distinct carts after it, the distinct orders after it.

Differences from the official script, on purpose: its ``random`` draw sequence is not
reproduced (our cuts come from ``numpy.random.default_rng(seed)``); a session starting exactly at
``cut_ts`` is a test session here (the official script trims it to nothing); and a next click on
aid 0 is kept as a label (the official ``if prev_labels[label]`` loses it).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.atomic import atomic_directory, check_output
from data_prep.csr import select_events
from data_prep.dataset import Dataset, write_dataset

from .labels import Labels, labels_from_cut, write_labels
from .sessions_io import write_sessions

DAY_MS = 86_400_000


@dataclass(frozen=True)
class SplitParams:
    """The official split's knobs, validated once (``otto-eval split`` and ``run`` flags derive from it).

    days           length of the test period in days, counted back from the last timestamp.
    seed           seed of the random cut points of the test sessions.
    min_train_len  drop train sessions left with fewer events after trimming (the official script
                   keeps >= 2).
    """

    days: float = 7.0
    seed: int = 42
    min_train_len: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.days, bool) or not isinstance(self.days, (int, float)) or not 0 < self.days < float("inf"):
            raise ValueError(f"days: must be a number > 0, got {self.days!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: must be an integer >= 0, got {self.seed!r}")
        if isinstance(self.min_train_len, bool) or not isinstance(self.min_train_len, int) or self.min_train_len < 1:
            raise ValueError(f"min_train_len: must be >= 1, got {self.min_train_len!r}")


@dataclass
class SplitResult:
    train: Dataset
    test_full: Dataset
    test: Dataset          # the cut sessions
    labels: Labels
    stats: dict


def _select_events(ds: Dataset, emask: np.ndarray, min_len: int) -> tuple[Dataset, int]:
    """Keep events where ``emask``; then sessions with at least ``min_len`` kept events.

    Returns the in-memory dataset and the number of sessions dropped for being too short.
    """
    sel = select_events(ds.offsets, emask, min_len)
    e = sel.events
    out = Dataset(np.ascontiguousarray(ds.session_ids[sel.sessions]), sel.offsets, np.ascontiguousarray(ds.aid[e]),
                  np.ascontiguousarray(ds.ts[e]), np.ascontiguousarray(ds.type[e]))
    return out, int((~sel.sessions).sum())


def split_dataset(ds: Dataset, days: float = 7, seed: int = 42, min_train_len: int = 2) -> SplitResult:
    """Split ``ds`` by the official OTTO protocol (see the module docstring). Pure, seeded."""
    SplitParams(days, seed, min_train_len)  # validates
    if ds.n_events == 0:
        raise ValueError(f"{ds.path or 'dataset'}: has no events, nothing to split")
    ts = np.asarray(ds.ts)
    lens = ds.lengths()
    nonempty = lens > 0
    max_ts = int(ts.max())
    cut_ts = max_ts - int(round(days * DAY_MS))
    first = np.full(ds.n_sessions, np.iinfo(np.int64).max, np.int64)
    first[nonempty] = np.minimum.reduceat(ts, ds.offsets[:-1][nonempty])
    is_test = first >= cut_ts
    is_test &= nonempty
    ev_test = np.repeat(is_test, lens)
    # train: events before the cut of non-test sessions
    train, train_short = _select_events(ds, (~ev_test) & (ts < cut_ts), min_train_len)
    train_short -= int(is_test.sum())  # test sessions have no train events; they are not "short"
    train_short -= int((~nonempty).sum())
    # known aids
    max_aid = int(np.asarray(ds.aid).max())
    known = np.zeros(max_aid + 1, bool)
    known[train.aid] = True
    test_raw, _ = _select_events(ds, ev_test, 1)
    keep = known[test_raw.aid]
    test_full, test_short = _select_events(test_raw, keep, 2)
    rng = np.random.default_rng(seed)
    tl = test_full.lengths()
    cut = rng.integers(1, tl) if tl.size else np.zeros(0, np.int64)  # uniform in [1, n-1]
    cut = cut.astype(np.int64)
    emask = np.arange(test_full.n_events) < np.repeat(test_full.offsets[:-1] + cut, tl)
    test, _ = _select_events(test_full, emask, 1)
    labels = labels_from_cut(test_full.session_ids, test_full.offsets, test_full.aid, test_full.type, cut)
    stats = {
        "days": days, "seed": int(seed), "min_train_len": int(min_train_len),
        "max_ts": max_ts, "cut_ts": int(cut_ts),
        "sessions_in": ds.n_sessions, "events_in": ds.n_events,
        "empty_sessions_dropped": int((~nonempty).sum()),
        "train_sessions": train.n_sessions, "train_events": train.n_events,
        "train_sessions_dropped_short": int(max(train_short, 0)),
        "train_events_after_cut_dropped": int(((~ev_test) & (ts >= cut_ts)).sum()),
        "test_sessions_raw": int(is_test.sum()),
        "test_events_unknown_aid_dropped": int((~keep).sum()),
        "test_sessions_dropped_short": int(test_short),
        "test_sessions": test_full.n_sessions, "test_events_full": test_full.n_events,
        "test_events_kept": test.n_events,
        "labels": {"clicks": int((labels.clicks >= 0).sum()),
                   "carts_sessions": int((np.diff(labels.cart_offsets) > 0).sum()),
                   "orders_sessions": int((np.diff(labels.order_offsets) > 0).sum()),
                   "carts": int(labels.carts.size), "orders": int(labels.orders.size)},
    }
    return SplitResult(train, test_full, test, labels, stats)


def write_split(result: SplitResult, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``train/``, the three JSONL files and ``split.json`` into ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        r = result
        write_dataset(tmp / "train", r.train.session_ids, r.train.offsets, r.train.aid, r.train.ts,
                      r.train.type, extra_meta={"split": r.stats})
        write_sessions(r.test_full, tmp / "test_sessions_full.jsonl")
        write_sessions(r.test, tmp / "test_sessions.jsonl")
        write_labels(r.labels, tmp / "test_labels.jsonl")
        (tmp / "split.json").write_text(json.dumps(r.stats, indent=2) + "\n", encoding="utf-8")
    return out_dir


# ------------------------------------------------------------------------------------------ CLI
def require_nonempty(stats: dict, days: float) -> None:
    """An empty side of a split is an error, not a result."""
    if not stats["train_sessions"]:
        raise ValueError(f"split: 0 train sessions: the test period (--days {days:g}) covers the whole dataset")
    if not stats["test_sessions"]:
        raise ValueError(f"split: 0 test sessions with at least two known events in the last {days:g} days "
                         "(dataset too small, or --days too short)")


def summary(stats: dict) -> str:
    """The one-line summary of a split."""
    s = stats
    return (f"train {s['train_sessions']:,} sessions / {s['train_events']:,} events; "
            f"test {s['test_sessions']:,} sessions ({s['test_events_unknown_aid_dropped']:,} unknown-aid events and "
            f"{s['test_sessions_dropped_short']:,} short sessions dropped)")


def register(sub) -> None:
    from data_prep.flags import add_config_flags
    p = sub.add_parser(
        "split", help="official OTTO train/test split with cut test sessions and labels",
        description="Split a dataset by the official OTTO protocol: the last DAYS days become test sessions, "
                    "each cut at a random point; writes OUT_DIR/train/ (dataset), test_sessions_full.jsonl, "
                    "test_sessions.jsonl, test_labels.jsonl and split.json (counts of everything dropped). "
                    "An empty train or test side is an error.")
    p.add_argument("dataset", metavar="DATASET", help="dataset directory (otto-prep convert output)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output directory (created atomically)")
    add_config_flags(p, SplitParams)
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--quiet", action="store_true", help="print nothing on stderr")
    p.set_defaults(func=_cmd_split)


def _cmd_split(args) -> int:
    from data_prep.flags import config_from_args
    params = config_from_args(SplitParams, args)
    check_output(args.out_dir, (args.dataset,))
    out = Path(args.out_dir)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    ds = Dataset.open(args.dataset)
    res = split_dataset(ds, days=params.days, seed=params.seed, min_train_len=params.min_train_len)
    require_nonempty(res.stats, params.days)
    write_split(res, out, overwrite=args.overwrite)
    if not args.quiet:
        print(f"split: {summary(res.stats)} -> {out}", file=sys.stderr)
    return 0
