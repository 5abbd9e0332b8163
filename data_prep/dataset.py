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

from . import checks
from .atomic import atomic_directory
from .csr import select_events
from .npyio import FormatError, check_fields, load_npy, read_json, release_pages

FORMAT_NAME = "otto-dataset"
FORMAT_VERSION = 1
TYPE_NAMES: tuple[str, str, str] = ("clicks", "carts", "orders")
TYPE_CODES: dict[str, int] = {name: code for code, name in enumerate(TYPE_NAMES)}

# name -> dtype of each array file (lengths: see the table above)
ARRAYS: dict[str, np.dtype] = {
    "session_ids": np.dtype("<i8"),
    "offsets": np.dtype("<i8"),
    "aid": np.dtype("<i4"),
    "ts": np.dtype("<i8"),
    "type": np.dtype("|u1"),
}


class DatasetError(FormatError):
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
    (used for filtered views and tests) and validates them the same way, except that session ids
    may repeat in memory (evaluation prefixes do); ``open`` and ``write_dataset`` require them
    unique. ``check_values=False``
    skips the value scans (structure is always checked); it is meant for subsets of a dataset
    that was already checked, such as ``filter``'s result.
    """

    def __init__(self, session_ids: np.ndarray, offsets: np.ndarray, aid: np.ndarray,
                 ts: np.ndarray, type: np.ndarray, meta: dict | None = None,
                 path: Path | None = None, check_values: bool = True):
        self.session_ids = session_ids
        self.offsets = offsets
        self.aid = aid
        self.ts = ts
        self.type = type
        self.path = path
        self.meta = dict(meta) if meta else {}
        self._validate(check_values)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike) -> "Dataset":
        """Open a dataset directory written by ``write_dataset`` (memory-mapped, read-only).

        Every file is checked (``validate_meta``, ``Dataset._validate``): a one-line
        ``DatasetError`` names the file and the first problem found.
        """
        path = Path(path)
        if not path.is_dir():
            raise DatasetError(f"{path}: not a dataset directory (it does not exist or is not a directory)")
        meta = read_json(path / "meta.json", error=DatasetError)
        validate_meta(meta, path / "meta.json")
        arrays = {name: load_npy(path / f"{name}.npy", dtype, 1, error=DatasetError) for name, dtype in ARRAYS.items()}
        ds = cls(meta=meta, path=path, **arrays)
        ds._check_unique_ids()
        return ds

    def _validate(self, check_values: bool = True) -> None:
        """Shapes, dtypes and CSR structure always; with ``check_values`` also every value rule of
        docs/FORMATS.md section 1 (one pass over each array, no temporaries)."""
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
        if "n_sessions" in self.meta and self.meta["n_sessions"] != S:
            raise DatasetError(f"{where}/meta.json: n_sessions {self.meta['n_sessions']} does not match session_ids.npy ({S})")
        if "n_events" in self.meta and self.meta["n_events"] != E:
            raise DatasetError(f"{where}/meta.json: n_events {self.meta['n_events']} does not match aid.npy ({E})")
        if not check_values:
            return
        bad = checks.first_descent(self.offsets, False)
        if bad >= 0:
            raise DatasetError(f"{where}/offsets.npy: offsets decrease at session row {bad - 1}")
        bad = checks.first_outside(self.type, 0, 3)
        if bad >= 0:
            raise DatasetError(f"{where}/type.npy: event {bad}: type code {int(self.type[bad])} (expected 0, 1 or 2)")
        bad = checks.first_below(self.aid, 0)
        if bad >= 0:
            raise DatasetError(f"{where}/aid.npy: event {bad}: aid {int(self.aid[bad])} is negative")
        bad = checks.first_below(self.session_ids, 0)
        if bad >= 0:
            raise DatasetError(f"{where}/session_ids.npy: row {bad}: session id {int(self.session_ids[bad])} is negative")

    def _check_unique_ids(self) -> None:
        """Session ids of a dataset *directory* are unique (in-memory views such as evaluation
        prefixes may repeat them, so the constructor does not require it)."""
        where = self.path
        i, j = checks.first_repeat(self.session_ids)
        if j >= 0:
            raise DatasetError(f"{where}/session_ids.npy: row {j}: duplicate session id {int(self.session_ids[j])} (first at row {i})")

    def release_pages(self) -> int:
        """Drop the pages of this dataset's memory-mapped arrays from the process's resident set
        (:func:`data_prep.npyio.release_pages`); they are read again, unchanged, when next used.
        For long runs that read a large dataset in phases. Returns the bytes of mapping released
        (0 for arrays in memory)."""
        return release_pages(self.session_ids, self.offsets, self.aid, self.ts, self.type)

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
        if codes == (0, 1, 2) and (min_len == 0 or self.lengths().min(initial=min_len) >= min_len):
            return self  # nothing to drop
        keep = (np.ones(self.n_events, bool) if codes == (0, 1, 2)
                else np.isin(self.type, np.array(codes, dtype=np.uint8)))
        sel = select_events(self.offsets, keep, min_len)
        meta = {k: v for k, v in self.meta.items() if k not in ("n_sessions", "n_events", "counts")}
        meta["filter"] = {"types": [TYPE_NAMES[c] for c in codes], "min_len": int(min_len)}
        e = sel.events
        return Dataset(np.ascontiguousarray(self.session_ids[sel.sessions]), sel.offsets,
                       np.ascontiguousarray(self.aid[e]), np.ascontiguousarray(self.ts[e]),
                       np.ascontiguousarray(self.type[e]), meta=meta, check_values=False)

    def take(self, rows: np.ndarray) -> "Dataset":
        """The sessions at the given row positions (in that order), as an in-memory dataset.

        A row given twice appears twice, with its session id (resampling); the values were checked
        when this dataset was built, so they are not scanned again."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lens = ends - starts
        offsets = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        idx = np.repeat(starts - offsets[:-1], lens) + np.arange(offsets[-1], dtype=np.int64)
        meta = {k: v for k, v in self.meta.items() if k not in ("n_sessions", "n_events", "counts")}
        return Dataset(np.ascontiguousarray(self.session_ids[rows]), offsets, self.aid[idx],
                       self.ts[idx], self.type[idx], meta=meta, check_values=False)


META_FIELDS = {
    "format": ("str", True),
    "format_version": ("int", True),
    "n_sessions": ("count", False),
    "n_events": ("count", False),
    "counts": ("object", False),
    "source": ("object|null", False),
    "bad_lines_skipped": ("count", False),
    "bad_line_examples": ("array", False),
}


def validate_meta(meta: dict, where: str | os.PathLike = "meta.json") -> None:
    """Check a dataset ``meta.json`` object: format name and version, then the type of every
    known field (``META_FIELDS``); a ``DatasetError`` names the file and the field."""
    if meta.get("format") != FORMAT_NAME:
        raise DatasetError(f"{where}: not an {FORMAT_NAME} meta file (format={meta.get('format')!r})")
    check_fields(meta, META_FIELDS, where, error=DatasetError)
    if meta["format_version"] != FORMAT_VERSION:
        raise DatasetError(f"{where}: format_version {meta['format_version']!r} is not supported (expected {FORMAT_VERSION})")
    if "counts" in meta:
        check_fields(meta["counts"], {t: ("count", True) for t in TYPE_NAMES}, where,
                     error=DatasetError, prefix="counts.")


def dataset_meta(n_sessions: int, n_events: int, counts: dict[str, int] | Sequence[int], *,
                 source: dict | None = None, bad_lines_skipped: int = 0,
                 extra: dict | None = None) -> dict:
    """The ``meta.json`` object of a dataset (docs/FORMATS.md section 1); every writer builds it here.

    ``counts``: events per type, as ``{"clicks": n, ...}`` or ``[n_clicks, n_carts, n_orders]``;
    ``extra`` keys are added last (e.g. ``bad_line_examples``, ``split``).
    """
    if not isinstance(counts, dict):
        counts = {name: int(counts[c]) for c, name in enumerate(TYPE_NAMES)}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "n_sessions": int(n_sessions),
        "n_events": int(n_events),
        "counts": {name: int(counts[name]) for name in TYPE_NAMES},
        "source": source,
        "bad_lines_skipped": int(bad_lines_skipped),
    }
    if extra:
        meta.update(extra)
    return meta


def write_dataset(out_dir: str | os.PathLike, session_ids: np.ndarray, offsets: np.ndarray,
                  aid: np.ndarray, ts: np.ndarray, type: np.ndarray, *, source: dict | None = None,
                  bad_lines_skipped: int = 0, extra_meta: dict | None = None,
                  overwrite: bool = False) -> Path:
    """Validate the arrays and write them as a dataset directory, atomically.

    ``source`` is ``{"name": file name, "size": bytes}`` of the input, when there is one.
    """
    arrays = {"session_ids": session_ids, "offsets": offsets, "aid": aid, "ts": ts, "type": type}
    arrays = {k: np.ascontiguousarray(v, dtype=ARRAYS[k]) for k, v in arrays.items()}
    out_dir = Path(out_dir)
    ds = Dataset(**arrays, path=out_dir)  # validates shapes, offsets and values; errors name out_dir
    ds._check_unique_ids()
    meta = dataset_meta(ds.n_sessions, ds.n_events, ds.type_counts(), source=source,
                        bad_lines_skipped=bad_lines_skipped, extra=extra_meta)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out_dir
