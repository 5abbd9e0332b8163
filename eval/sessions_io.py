"""Reading and writing OTTO session JSONL for the evaluation.

Both directions use the project's columnar reader and writer: ``data_prep.reader.convert`` into a
temporary dataset directory (then loaded into memory) and ``data_prep.reader.export``. Invalid
input is reported by the reader, naming the file and line.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from data_prep import reader
from data_prep.atomic import scratch_directory
from data_prep.dataset import Dataset


def _in_memory(ds: Dataset) -> Dataset:
    return Dataset(np.array(ds.session_ids), np.array(ds.offsets), np.array(ds.aid), np.array(ds.ts),
                   np.array(ds.type), meta={k: v for k, v in ds.meta.items()})


def read_sessions(path: str | os.PathLike) -> Dataset:
    """Read an OTTO session JSONL file into an in-memory ``Dataset``."""
    path = Path(path)
    if not path.is_file():
        raise OSError(f"{path}: no such file")
    # the columnar copy goes in scratch space beside the input (same disk, else the system
    # temporary directory); a killed run's copy is removed by the next read of the same file
    with scratch_directory(path) as tmp:
        reader.convert(path, tmp / "ds", quiet=True)
        return _in_memory(Dataset.open(tmp / "ds"))


def write_sessions(ds: Dataset, path: str | os.PathLike) -> None:
    """Write ``ds`` as OTTO JSONL (one session per line, events in order), atomically."""
    reader.export(ds, path, quiet=True)
