"""The columnar OTTO dataset: a directory of little-endian ``.npy`` arrays in CSR layout.

Layout (documented byte for byte in docs/FORMATS.md):

==================  ========  =========  ===============================================
file                dtype     shape      meaning
==================  ========  =========  ===============================================
``session_ids.npy`` ``<i8``   [S]        session id of row i, unique, in source order
``offsets.npy``     ``<i8``   [S+1]      events of session i are ``offsets[i]:offsets[i+1]``
``aid.npy``         ``<i4``   [E]        article id of each event
``ts.npy``          ``<i8``   [E]        timestamp in milliseconds, as in the source
``type.npy``        ``|u1``   [E]        0 clicks, 1 carts, 2 orders
``meta.json``       JSON                 format version, counts, source, bad lines
==================  ========  =========  ===============================================

Arrays are opened with ``mmap_mode="r"`` and ``allow_pickle=False``, so opening a dataset of
any size costs no memory until the pages are touched.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .atomic import atomic_directory

FORMAT_NAME = "otto-dataset"
FORMAT_VERSION = 1
TYPE_NAMES: tuple[str, str, str] = ("clicks", "carts", "orders")
TYPE_CODES: dict[str, int] = {name: code for code, name in enumerate(TYPE_NAMES)}

# name -> (dtype, description of its length)
ARRAYS: dict[str, np.dtype] = {
    "session_ids": np.dtype("<i8"),
    "offsets": np.dtype("<i8"),
    "aid": np.dtype("<i4"),
    "ts": np.dtype("<i8"),
    "type": np.dtype("|u1"),
}


class DatasetError(ValueError):
    """A dataset directory is missing, corrupt or inconsistent. The message names the file."""


def parse_types(types: str | Iterable[str | int] | None) -> tuple[int, ...]:
    """Turn ``"carts,orders"``, ``["orders"]`` or ``[1, 2]`` into sorted type codes.

    ``None`` means all three types. Unknown names raise ``ValueError`` naming the value.
    """
    if types is None:
        return (0, 1, 2)
    if isinstance(types, str):
        types = [t for t in types.split(",") if t.strip()]
    codes = set()
    for t in types:
        if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
            if not 0 <= int(t) <= 2:
                raise ValueError(f"types: unknown event type code {t!r} (expected 0, 1 or 2)")
            codes.add(int(t))
        else:
            name = str(t).strip()
            if name not in TYPE_CODES:
                raise ValueError(f"types: unknown event type {name!r} (expected one of {', '.join(TYPE_NAMES)})")
            codes.add(TYPE_CODES[name])
    if not codes:
        raise ValueError("types: no event type given")
    return tuple(sorted(codes))


@dataclass(frozen=True)
class Session:
    """One session: its id and zero-copy views of its events."""

    session_id: int
    aid: np.ndarray
    ts: np.ndarray
    type: np.ndarray

    def __len__(self) -> int:
        return int(self.aid.shape[0])


class Dataset:
    """Sessions in CSR layout, backed by memory-mapped arrays (or plain arrays in memory).

    ``Dataset.open(path)`` validates the directory; ``Dataset(...)`` wraps arrays directly
    (used for filtered views and tests) and validates them the same way.
    """

    def __init__(self, session_ids: np.ndarray, offsets: np.ndarray, aid: np.ndarray,
                 ts: np.ndarray, type: np.ndarray, meta: dict | None = None,
                 path: Path | None = None):
        self.session_ids = session_ids
        self.offsets = offsets
        self.aid = aid
        self.ts = ts
        self.type = type
        self.path = path
        self.meta = dict(meta) if meta else {}
        self._validate()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike) -> "Dataset":
        """Open a dataset directory written by ``write_dataset`` (memory-mapped, read-only)."""
        path = Path(path)
        if not path.is_dir():
            raise DatasetError(f"{path}: not a dataset directory (it does not exist or is not a directory)")
        meta_path = path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(f"{meta_path}: missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{meta_path}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise DatasetError(f"{meta_path}: not an {FORMAT_NAME} meta file (format={meta.get('format') if isinstance(meta, dict) else None!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{meta_path}: format_version {meta.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
        arrays = {}
        for name, dtype in ARRAYS.items():
            arrays[name] = _load_array(path / f"{name}.npy", dtype)
        return cls(meta=meta, path=path, **arrays)

    def _validate(self) -> None:
        where = str(self.path) if self.path is not None else "<in-memory dataset>"
        for name, dtype in ARRAYS.items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.ndim != 1:
                raise DatasetError(f"{where}/{name}.npy: expected a 1-d array")
            if arr.dtype != dtype:
                raise DatasetError(f"{where}/{name}.npy: dtype {arr.dtype.str} (expected {dtype.str})")
        S = self.session_ids.shape[0]
        E = self.aid.shape[0]
        if self.offsets.shape[0] != S + 1:
            raise DatasetError(f"{where}/offsets.npy: length {self.offsets.shape[0]} (expected sessions+1 = {S + 1})")
        for name in ("ts", "type"):
            if getattr(self, name).shape[0] != E:
                raise DatasetError(f"{where}/{name}.npy: length {getattr(self, name).shape[0]} (expected events = {E}, the length of aid.npy)")
        if self.offsets[0] != 0:
            raise DatasetError(f"{where}/offsets.npy: offsets[0] = {int(self.offsets[0])} (expected 0)")
        if self.offsets[-1] != E:
            raise DatasetError(f"{where}/offsets.npy: offsets[-1] = {int(self.offsets[-1])} (expected events = {E})")
        if S and np.any(np.diff(self.offsets) < 0):
            bad = int(np.argmax(np.diff(self.offsets) < 0))
            raise DatasetError(f"{where}/offsets.npy: offsets decrease at session row {bad}")
        if E and int(self.type.max()) > 2:
            raise DatasetError(f"{where}/type.npy: type code {int(self.type.max())} (expected 0, 1 or 2)")
        if "n_sessions" in self.meta and self.meta["n_sessions"] != S:
            raise DatasetError(f"{where}/meta.json: n_sessions {self.meta['n_sessions']} does not match session_ids.npy ({S})")
        if "n_events" in self.meta and self.meta["n_events"] != E:
            raise DatasetError(f"{where}/meta.json: n_events {self.meta['n_events']} does not match aid.npy ({E})")

    # ------------------------------------------------------------------ access
    @property
    def n_sessions(self) -> int:
        return int(self.session_ids.shape[0])

    @property
    def n_events(self) -> int:
        return int(self.aid.shape[0])

    def __len__(self) -> int:
        return self.n_sessions

    def __repr__(self) -> str:
        return f"Dataset(sessions={self.n_sessions}, events={self.n_events}, path={str(self.path) if self.path else None!r})"

    def lengths(self) -> np.ndarray:
        """Events per session, int64 [S]."""
        return np.diff(self.offsets)

    def session(self, i: int) -> Session:
        """Row ``i`` (0-based position, not the session id) as zero-copy views."""
        if not -self.n_sessions <= i < self.n_sessions:
            raise IndexError(f"session row {i} out of range for {self.n_sessions} sessions")
        i %= max(self.n_sessions, 1)
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return Session(int(self.session_ids[i]), self.aid[a:b], self.ts[a:b], self.type[a:b])

    def __iter__(self):
        for i in range(self.n_sessions):
            yield self.session(i)

    def type_counts(self) -> dict[str, int]:
        counts = np.bincount(self.type, minlength=3) if self.n_events else np.zeros(3, np.int64)
        return {name: int(counts[c]) for c, name in enumerate(TYPE_NAMES)}

    # ------------------------------------------------------------------ filters
    def filter(self, types: str | Sequence[str | int] | None = None, min_len: int = 1) -> "Dataset":
        """Keep only events of ``types``, then only sessions with at least ``min_len`` of them.

        Returns an in-memory ``Dataset`` holding copies of the selected events only (the
        source arrays are streamed once; nothing of the unselected part is copied).
        """
        if min_len < 0:
            raise ValueError(f"min_len: must be >= 0, got {min_len}")
        codes = parse_types(types)
        if codes == (0, 1, 2):
            keep = None
            lens = self.lengths()
        else:
            keep = np.isin(self.type, np.array(codes, dtype=np.uint8))
            csum = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
            lens = csum[self.offsets[1:]] - csum[self.offsets[:-1]]
        sel = lens >= max(min_len, 1) if min_len > 0 else np.ones(self.n_sessions, bool)
        if keep is None and sel.all():
            return self
        # event mask = type kept AND session selected
        sess_of_event = np.repeat(sel, self.lengths())
        emask = sess_of_event if keep is None else (sess_of_event & keep)
        new_lens = lens[sel]
        offsets = np.zeros(int(sel.sum()) + 1, dtype=np.int64)
        np.cumsum(new_lens, out=offsets[1:])
        meta = {k: v for k, v in self.meta.items() if k not in ("n_sessions", "n_events", "counts")}
        meta["filter"] = {"types": [TYPE_NAMES[c] for c in codes], "min_len": int(min_len)}
        return Dataset(np.ascontiguousarray(self.session_ids[sel]), offsets,
                       np.ascontiguousarray(self.aid[emask]), np.ascontiguousarray(self.ts[emask]),
                       np.ascontiguousarray(self.type[emask]), meta=meta)

    def take(self, rows: np.ndarray) -> "Dataset":
        """The sessions at the given row positions (in that order), as an in-memory dataset."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lens = ends - starts
        offsets = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        idx = np.repeat(starts - offsets[:-1], lens) + np.arange(offsets[-1], dtype=np.int64)
        meta = {k: v for k, v in self.meta.items() if k not in ("n_sessions", "n_events", "counts")}
        return Dataset(np.ascontiguousarray(self.session_ids[rows]), offsets, self.aid[idx],
                       self.ts[idx], self.type[idx], meta=meta)


def _load_array(path: Path, dtype: np.dtype) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable .npy array; the file may be truncated or corrupt ({exc})") from None
    if arr.dtype != dtype:
        raise DatasetError(f"{path}: dtype {arr.dtype.str} (expected {dtype.str})")
    if arr.ndim != 1:
        raise DatasetError(f"{path}: shape {arr.shape} (expected 1-d)")
    return arr


def write_dataset(out_dir: str | os.PathLike, session_ids: np.ndarray, offsets: np.ndarray,
                  aid: np.ndarray, ts: np.ndarray, type: np.ndarray, *, source: dict | None = None,
                  bad_lines_skipped: int = 0, extra_meta: dict | None = None,
                  overwrite: bool = False) -> Path:
    """Validate the arrays and write them as a dataset directory, atomically.

    ``source`` is ``{"name": file name, "size": bytes}`` of the input, when there is one.
    """
    arrays = {"session_ids": session_ids, "offsets": offsets, "aid": aid, "ts": ts, "type": type}
    arrays = {k: np.ascontiguousarray(v, dtype=ARRAYS[k]) for k, v in arrays.items()}
    ds = Dataset(**arrays)  # validates shapes and offsets
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "n_sessions": ds.n_sessions,
        "n_events": ds.n_events,
        "counts": ds.type_counts(),
        "source": source,
        "bad_lines_skipped": int(bad_lines_skipped),
    }
    if extra_meta:
        meta.update(extra_meta)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out_dir
