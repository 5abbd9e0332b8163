"""Reading and writing OTTO session JSONL for the evaluation.

Large files go through the project's columnar reader (``data_prep.reader.convert`` into a
temporary dataset directory, then loaded into memory) and JSONL writer
(``data_prep.reader.export``). The small pure-Python paths below are used only when that module
is not importable; they accept and produce exactly the same format.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from data_prep.atomic import atomic_file
from data_prep.dataset import TYPE_CODES, TYPE_NAMES, Dataset

try:  # the fast columnar reader/writer
    from data_prep import reader as _reader
except ImportError:  # pragma: no cover - only while data_prep.reader is absent
    _reader = None


class SessionsError(ValueError):
    """A session JSONL file is malformed; the message names the file and line."""


def _in_memory(ds: Dataset) -> Dataset:
    return Dataset(np.array(ds.session_ids), np.array(ds.offsets), np.array(ds.aid), np.array(ds.ts),
                   np.array(ds.type), meta={k: v for k, v in ds.meta.items()})


def read_sessions(path: str | os.PathLike) -> Dataset:
    """Read an OTTO session JSONL file into an in-memory ``Dataset``."""
    path = Path(path)
    if not path.is_file():
        raise OSError(f"{path}: no such file")
    if _reader is not None and hasattr(_reader, "convert"):
        try:  # beside the input (same disk), else the system temporary directory
            tmp = Path(tempfile.mkdtemp(prefix=".otto-eval-read-", dir=path.parent))
        except OSError:
            tmp = Path(tempfile.mkdtemp(prefix="otto-eval-read-"))
        try:
            _reader.convert(path, tmp / "ds", quiet=True)
            return _in_memory(Dataset.open(tmp / "ds"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _read_sessions_py(path)  # pragma: no cover


def _read_sessions_py(path: Path) -> Dataset:
    sids, lens, aid, ts, typ = [], [], [], [], []
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                events = obj["events"]
                sids.append(int(obj["session"]))
                for e in events:
                    aid.append(int(e["aid"]))
                    ts.append(int(e["ts"]))
                    typ.append(TYPE_CODES[e["type"]])
                lens.append(len(events))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise SessionsError(f"{path}:{lineno}: malformed session line ({exc!r})") from None
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(np.array(lens, np.int64), out=offsets[1:])
    return Dataset(np.array(sids, np.int64), offsets, np.array(aid, np.int32), np.array(ts, np.int64),
                   np.array(typ, np.uint8))


def write_sessions(ds: Dataset, path: str | os.PathLike) -> None:
    """Write ``ds`` as OTTO JSONL (one session per line, events in order), atomically."""
    if _reader is not None and hasattr(_reader, "export"):
        _reader.export(ds, path, quiet=True)
        return
    _write_sessions_py(ds, path)  # pragma: no cover


def _write_sessions_py(ds: Dataset, path) -> None:
    names = TYPE_NAMES
    with atomic_file(path, "w") as fh:
        for i in range(ds.n_sessions):
            a, b = int(ds.offsets[i]), int(ds.offsets[i + 1])
            ev = ",".join(f'{{"aid":{int(x)},"ts":{int(t)},"type":"{names[int(y)]}"}}'
                          for x, t, y in zip(ds.aid[a:b], ds.ts[a:b], ds.type[a:b]))
            fh.write(f'{{"session":{int(ds.session_ids[i])},"events":[{ev}]}}\n')
