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
from typing import NamedTuple

import numpy as np
from numba import njit

from data_prep.atomic import atomic_directory, check_output
from data_prep.csr import select_events
from data_prep.dataset import ARRAYS, Dataset, dataset_meta, write_dataset

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


# ------------------------------------------------------------------------------- chunked passes
# Every pass reads the dataset in chunks of whole sessions (``chunk_events`` events at most, one
# session larger than that is a chunk of its own) with plain reads, not memory maps, so the
# resident memory is bounded by a chunk plus per-session arrays (8 bytes x a few per session)
# plus the test part (the sessions of the last ``days`` days), whatever the dataset's size.

# first[s] / last[s] = min / max ts of session s (sessions lo..hi-1 of the chunk; base = offsets
# of the chunk's first event). offsets: int64 [n + 1] (global positions); ts: int64 chunk.
# Empty sessions keep the fill values. Degenerate: n = 0.
@njit(cache=True, nogil=True)
def _ts_range_kernel(offsets, ts, first, last):
    base = offsets[0]
    for s in range(offsets.shape[0] - 1):
        lo = offsets[s] - base
        hi = offsets[s + 1] - base
        for e in range(lo, hi):
            t = ts[e]
            if t < first[s]:
                first[s] = t
            if t > last[s]:
                last[s] = t


# count[s] = events of session s with ts < cut_ts (0 for a test session); returns the number of
# events of non-test sessions at or after the cut (dropped from train).
@njit(cache=True, nogil=True)
def _train_count_kernel(offsets, ts, is_test, cut_ts, count):
    base = offsets[0]
    after = 0
    for s in range(offsets.shape[0] - 1):
        if is_test[s]:
            continue
        c = 0
        for e in range(offsets[s] - base, offsets[s + 1] - base):
            if ts[e] < cut_ts:
                c += 1
            else:
                after += 1
        count[s] = c
    return after


# Copy the train events of the chunk (sessions with keep[s]: their events with ts < cut_ts, in
# order) to out_aid/out_ts/out_type; returns how many were written.
@njit(cache=True, nogil=True)
def _train_take_kernel(offsets, aid, ts, typ, keep, cut_ts, out_aid, out_ts, out_type):
    base = offsets[0]
    n = 0
    for s in range(offsets.shape[0] - 1):
        if not keep[s]:
            continue
        for e in range(offsets[s] - base, offsets[s + 1] - base):
            if ts[e] < cut_ts:
                out_aid[n] = aid[e]
                out_ts[n] = ts[e]
                out_type[n] = typ[e]
                n += 1
    return n


def _read(arr: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``arr[lo:hi]`` as an in-memory copy, read with a plain read when ``arr`` is a memory map
    (so the pages never count in this process's resident memory)."""
    if isinstance(arr, np.memmap) and arr.filename is not None:
        with open(arr.filename, "rb") as fh:
            fh.seek(arr.offset + lo * arr.dtype.itemsize)
            out = np.fromfile(fh, dtype=arr.dtype, count=hi - lo)
        if out.shape[0] != hi - lo:
            raise OSError(f"{arr.filename}: truncated (expected {hi - lo} values from position {lo})")
        return out
    return np.array(arr[lo:hi])


def _chunks(offsets: np.ndarray, chunk_events: int):
    """(session lo, session hi) ranges of whole sessions with about chunk_events events each."""
    S = offsets.shape[0] - 1
    lo = 0
    while lo < S:
        hi = int(np.searchsorted(offsets, offsets[lo] + chunk_events, side="right")) - 1
        hi = min(S, max(hi, lo + 1))
        yield lo, hi
        lo = hi


class _Plan(NamedTuple):
    cut_ts: int
    max_ts: int
    nonempty: np.ndarray      # bool [S]
    is_test: np.ndarray       # bool [S]
    keep: np.ndarray          # bool [S]: stays in train
    train_lens: np.ndarray    # int64 [kept sessions]
    after_cut: int            # events of non-test sessions dropped at the cut


def _plan(ds: Dataset, days: float, min_train_len: int, chunk_events: int, say) -> _Plan:
    """Passes 1-2 over ts: per-session first/last ts, the cut, test sessions, train lengths."""
    offsets = np.asarray(ds.offsets, np.int64)
    S = ds.n_sessions
    first = np.full(S, np.iinfo(np.int64).max, np.int64)
    last = np.full(S, np.iinfo(np.int64).min, np.int64)
    for lo, hi in _chunks(offsets, chunk_events):
        _ts_range_kernel(offsets[lo:hi + 1], _read(ds.ts, int(offsets[lo]), int(offsets[hi])), first[lo:hi], last[lo:hi])
    say("pass 1/3 (time range)", S, S)
    nonempty = np.diff(offsets) > 0
    max_ts = int(last[nonempty].max())
    cut_ts = max_ts - int(round(days * DAY_MS))
    is_test = nonempty & (first >= cut_ts)
    del first, last
    count = np.zeros(S, np.int64)
    after = 0
    for lo, hi in _chunks(offsets, chunk_events):
        after += _train_count_kernel(offsets[lo:hi + 1], _read(ds.ts, int(offsets[lo]), int(offsets[hi])),
                                     is_test[lo:hi], cut_ts, count[lo:hi])
    say("pass 2/3 (train lengths)", S, S)
    keep = count >= min_train_len
    return _Plan(cut_ts, max_ts, nonempty, is_test, keep, count[keep], int(after))


def _pass3(ds: Dataset, plan: _Plan, chunk_events: int, say):
    """Pass 3: yields each chunk's train events (aid, ts, type); afterwards the generator's
    return value is (test_raw Dataset of the test sessions, known bool [max aid + 1])."""
    offsets = np.asarray(ds.offsets, np.int64)
    S = ds.n_sessions
    known = np.zeros(0, bool)
    parts = {"sid": [], "len": [], "aid": [], "ts": [], "type": []}
    for lo, hi in _chunks(offsets, chunk_events):
        a, b = int(offsets[lo]), int(offsets[hi])
        aid, ts, typ = _read(ds.aid, a, b), _read(ds.ts, a, b), _read(ds.type, a, b)
        off = offsets[lo:hi + 1]
        keep = plan.keep[lo:hi]
        n_out = int(np.diff(off)[keep].sum())
        oa, ot, oy = np.empty(n_out, aid.dtype), np.empty(n_out, ts.dtype), np.empty(n_out, typ.dtype)
        n = _train_take_kernel(off, aid, ts, typ, keep, plan.cut_ts, oa, ot, oy)
        oa, ot, oy = oa[:n], ot[:n], oy[:n]
        if n:
            top = int(oa.max()) + 1
            if top > known.shape[0]:
                known = np.concatenate([known, np.zeros(top - known.shape[0], bool)])
            known[oa] = True
        yield oa, ot, oy
        test = plan.is_test[lo:hi]
        if test.any():
            lens = np.diff(off)
            ev = np.repeat(test, lens)
            parts["sid"].append(_read(ds.session_ids, lo, hi)[test])
            parts["len"].append(lens[test])
            parts["aid"].append(aid[ev])
            parts["ts"].append(ts[ev])
            parts["type"].append(typ[ev])
        say("pass 3/3 (train events, test sessions)", hi, S)
    cat = {k: np.concatenate(v) if v else np.zeros(0, d) for (k, v), d in
           zip(parts.items(), (np.int64, np.int64, np.int32, np.int64, np.uint8))}
    toff = np.zeros(cat["len"].shape[0] + 1, np.int64)
    np.cumsum(cat["len"], out=toff[1:])
    return Dataset(cat["sid"], toff, cat["aid"].astype(np.int32), cat["ts"], cat["type"]), known


def _test_part(test_raw: Dataset, known: np.ndarray, seed: int):
    """Steps 3-5 of the module docstring on the (in-memory) test sessions."""
    aid = np.asarray(test_raw.aid, np.int64)
    keep = np.zeros(aid.shape[0], bool)
    inside = aid < known.shape[0]
    keep[inside] = known[aid[inside]]
    test_full, test_short = _select_events(test_raw, keep, 2)
    rng = np.random.default_rng(seed)
    tl = test_full.lengths()
    cut = rng.integers(1, tl) if tl.size else np.zeros(0, np.int64)  # uniform in [1, n-1]
    cut = cut.astype(np.int64)
    emask = np.arange(test_full.n_events) < np.repeat(test_full.offsets[:-1] + cut, tl)
    test, _ = _select_events(test_full, emask, 1)
    labels = labels_from_cut(test_full.session_ids, test_full.offsets, test_full.aid, test_full.type, cut)
    return test_full, test, labels, int((~keep).sum()), int(test_short)


def _stats(ds, days, seed, min_train_len, plan, n_train_sessions, n_train_events, test_full, test, labels,
           unknown, test_short) -> dict:
    dropped_short = int((~plan.keep & ~plan.is_test & plan.nonempty).sum())
    return {
        "days": days, "seed": int(seed), "min_train_len": int(min_train_len),
        "max_ts": plan.max_ts, "cut_ts": int(plan.cut_ts),
        "sessions_in": ds.n_sessions, "events_in": ds.n_events,
        "empty_sessions_dropped": int((~plan.nonempty).sum()),
        "train_sessions": int(n_train_sessions), "train_events": int(n_train_events),
        "train_sessions_dropped_short": dropped_short,
        "train_events_after_cut_dropped": plan.after_cut,
        "test_sessions_raw": int(plan.is_test.sum()),
        "test_events_unknown_aid_dropped": unknown,
        "test_sessions_dropped_short": test_short,
        "test_sessions": test_full.n_sessions, "test_events_full": test_full.n_events,
        "test_events_kept": test.n_events,
        "labels": {"clicks": int((labels.clicks >= 0).sum()),
                   "carts_sessions": int((np.diff(labels.cart_offsets) > 0).sum()),
                   "orders_sessions": int((np.diff(labels.order_offsets) > 0).sum()),
                   "carts": int(labels.carts.size), "orders": int(labels.orders.size)},
    }


def _check(ds: Dataset, days: float, seed: int, min_train_len: int) -> None:
    SplitParams(days, seed, min_train_len)  # validates
    if ds.n_events == 0:
        raise ValueError(f"{ds.path or 'dataset'}: has no events, nothing to split")


def _quiet(stage, done, total):
    return None


CHUNK_EVENTS = 8_000_000  # events per chunk of the passes: ~100 MB of input columns at a time


def split_dataset(ds: Dataset, days: float = 7, seed: int = 42, min_train_len: int = 2,
                  chunk_events: int = CHUNK_EVENTS) -> SplitResult:
    """Split ``ds`` by the official OTTO protocol (see the module docstring), in memory. Seeded;
    the result does not depend on ``chunk_events``."""
    _check(ds, days, seed, min_train_len)
    plan = _plan(ds, days, min_train_len, chunk_events, _quiet)
    gen = _pass3(ds, plan, chunk_events, _quiet)
    cols = [[], [], []]
    while True:
        try:
            for c, a in zip(cols, next(gen)):
                c.append(a)
        except StopIteration as stop:
            test_raw, known = stop.value
            break
    offsets = np.zeros(plan.train_lens.shape[0] + 1, np.int64)
    np.cumsum(plan.train_lens, out=offsets[1:])
    sids = np.asarray(ds.session_ids)[plan.keep]
    train = Dataset(np.ascontiguousarray(sids, np.int64), offsets,
                    *(np.concatenate(c) if c else np.zeros(0, d) for c, d in zip(cols, (np.int32, np.int64, np.uint8))))
    test_full, test, labels, unknown, short = _test_part(test_raw, known, seed)
    stats = _stats(ds, days, seed, min_train_len, plan, train.n_sessions, train.n_events, test_full, test, labels,
                   unknown, short)
    return SplitResult(train, test_full, test, labels, stats)


def write_split(result: SplitResult, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``train/``, the three JSONL files and ``split.json`` into ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        r = result
        write_dataset(tmp / "train", r.train.session_ids, r.train.offsets, r.train.aid, r.train.ts,
                      r.train.type, extra_meta={"split": r.stats})
        _write_test_files(r.test_full, r.test, r.labels, r.stats, tmp)
    return out_dir


def _write_test_files(test_full, test, labels, stats, tmp: Path) -> None:
    write_sessions(test_full, tmp / "test_sessions_full.jsonl")
    write_sessions(test, tmp / "test_sessions.jsonl")
    write_labels(labels, tmp / "test_labels.jsonl")
    (tmp / "split.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")


class _NpyAppender:
    """A 1-d ``.npy`` file of known length written chunk by chunk (header first)."""

    def __init__(self, path: Path, dtype, n: int):
        self.fh = open(path, "wb")
        self.path, self.n, self.written = path, int(n), 0
        np.lib.format.write_array_header_1_0(self.fh, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                        "shape": (self.n,)})
        self.dtype = np.dtype(dtype)

    def append(self, arr: np.ndarray) -> None:
        np.ascontiguousarray(arr, self.dtype).tofile(self.fh)
        self.written += arr.shape[0]

    def close(self) -> None:
        self.fh.close()
        if self.written != self.n:
            raise RuntimeError(f"{self.path}: wrote {self.written} values, expected {self.n}")


def split_to_directory(ds: Dataset, out_dir: str | os.PathLike, days: float = 7, seed: int = 42,
                       min_train_len: int = 2, *, overwrite: bool = False, chunk_events: int = CHUNK_EVENTS,
                       progress=None, require: bool = True) -> dict:
    """``write_split(split_dataset(...))`` in bounded memory: the train events go from the input
    to ``OUT_DIR/train/*.npy`` chunk by chunk, never all in memory (the files are identical).
    ``progress(stage, done, total)`` after each chunk. With ``require`` an empty train or test
    side raises ValueError and nothing is written. Returns the split statistics."""
    _check(ds, days, seed, min_train_len)
    say = progress or _quiet
    plan = _plan(ds, days, min_train_len, chunk_events, say)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        tdir = tmp / "train"
        tdir.mkdir()
        n_ev = int(plan.train_lens.sum())
        offsets = np.zeros(plan.train_lens.shape[0] + 1, np.int64)
        np.cumsum(plan.train_lens, out=offsets[1:])
        np.save(tdir / "offsets.npy", offsets, allow_pickle=False)
        sids = np.ascontiguousarray(np.asarray(ds.session_ids)[plan.keep], np.int64)
        np.save(tdir / "session_ids.npy", sids, allow_pickle=False)
        n_sessions = sids.shape[0]
        del offsets, sids
        cols = [_NpyAppender(tdir / f"{name}.npy", ARRAYS[name], n_ev) for name in ("aid", "ts", "type")]
        type_counts = np.zeros(3, np.int64)
        gen = _pass3(ds, plan, chunk_events, say)
        try:
            while True:
                chunk = next(gen)
                for c, a in zip(cols, chunk):
                    c.append(a)
                type_counts += np.bincount(chunk[2], minlength=3)[:3]
        except StopIteration as stop:
            test_raw, known = stop.value
        for c in cols:
            c.close()
        test_full, test, labels, unknown, short = _test_part(test_raw, known, seed)
        stats = _stats(ds, days, seed, min_train_len, plan, n_sessions, n_ev, test_full, test, labels, unknown, short)
        if require:
            require_nonempty(stats, days)
        meta = dataset_meta(n_sessions, n_ev, type_counts, extra={"split": stats})
        (tdir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        Dataset.open(tdir)  # the written train dataset validates as any other
        say("writing the test sessions and labels", 0, 1)
        _write_test_files(test_full, test, labels, stats, tmp)
    return stats


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
    from data_prep.flags import add_config_flags, add_run_flags
    p = sub.add_parser(
        "split", help="official OTTO train/test split with cut test sessions and labels",
        description="Split a dataset by the official OTTO protocol: the last DAYS days become test sessions, "
                    "each cut at a random point; writes OUT_DIR/train/ (dataset), test_sessions_full.jsonl, "
                    "test_sessions.jsonl, test_labels.jsonl and split.json (counts of everything dropped). "
                    "An empty train or test side is an error.")
    p.add_argument("dataset", metavar="DATASET", help="dataset directory (otto-prep convert output)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output directory (created atomically)")
    add_config_flags(p, SplitParams)
    add_run_flags(p, overwrite="OUT_DIR", quiet=True)
    p.set_defaults(func=_cmd_split)


def _progress(quiet: bool):
    """The split's ``progress(stage, done, total)``: one ``data_prep.progress.Progress`` per pass
    (silent for short passes)."""
    from data_prep.progress import Progress
    cur = {}

    def say(stage, done, total):
        if cur.get("stage") != stage:
            if cur.get("bar") is not None:
                cur["bar"].close()
            cur.update(stage=stage, bar=Progress(f"split: {stage}", total, unit="sessions", quiet=quiet))
        cur["bar"].update(done)

    return say


def _cmd_split(args) -> int:
    from data_prep.flags import config_from_args
    params = config_from_args(SplitParams, args)
    check_output(args.out_dir, (args.dataset,))
    out = Path(args.out_dir)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    ds = Dataset.open(args.dataset)
    stats = split_to_directory(ds, out, days=params.days, seed=params.seed, min_train_len=params.min_train_len,
                               overwrite=args.overwrite, progress=_progress(args.quiet))
    if not args.quiet:
        print(f"split: {summary(stats)} -> {out}", file=sys.stderr)
    return 0
