"""The model directory: ``.npy`` arrays plus a JSON sidecar, readable from any language.

==========================  ==========  ========  ==============================================
file                        dtype       shape     meaning
==========================  ==========  ========  ==============================================
``vectors.npy``             ``<f4``     [V, D]    input vectors (gensim ``wv.vectors``, syn0)
``output.npy``              ``<f4``     [V, D]    output vectors (gensim ``syn1neg``)
``aids.npy``                ``<i8``     [V]       aid of row i (vocabulary order)
``counts.npy``              ``<i8``     [V]       corpus count of row i
``popular.npy``             ``<i8``     [3, P]    aids by descending count per type (optional)
``popular_counts.npy``      ``<i8``     [3, P]    the matching counts (optional)
``neighbors.npy``           ``<i4``     [V, k]    top-k neighbour rows of row i (optional)
``neighbor_scores.npy``     ``<f4``     [V, k]    their cosine scores (optional)
``index.json``              JSON                  written last by ``otto-train index``
``meta.json``               JSON                  format version, config, corpus stats, losses
==========================  ==========  ========  ==============================================

Everything is loaded with ``mmap_mode="r"`` and ``allow_pickle=False``; docs/FORMATS.md is the
normative description.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.atomic import atomic_directory, atomic_file

FORMAT_NAME = "otto-w2v-model"
FORMAT_VERSION = 1
INDEX_FORMAT_NAME = "otto-neighbor-index"
INDEX_FORMAT_VERSION = 1


class ModelError(ValueError):
    """A model directory is missing, corrupt or inconsistent. The message names the file."""


@dataclass
class Model:
    """A loaded model directory. Arrays are read-only memory maps."""

    path: Path | None
    vectors: np.ndarray
    output: np.ndarray
    aids: np.ndarray
    counts: np.ndarray
    meta: dict
    popular: np.ndarray | None = None
    popular_counts: np.ndarray | None = None
    neighbors: np.ndarray | None = None
    neighbor_scores: np.ndarray | None = None
    index_meta: dict | None = None
    _row_of: dict | None = field(default=None, repr=False)

    @property
    def vocab_size(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def vector_size(self) -> int:
        return int(self.vectors.shape[1])


def _load(path: Path, dtype: str, ndim: int) -> np.ndarray:
    if not path.is_file():
        raise ModelError(f"{path}: missing")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ModelError(f"{path}: not a readable .npy array, possibly truncated or corrupt ({exc})") from None
    if arr.dtype != np.dtype(dtype):
        raise ModelError(f"{path}: dtype {arr.dtype.str} (expected {np.dtype(dtype).str})")
    if arr.ndim != ndim:
        raise ModelError(f"{path}: shape {arr.shape} (expected {ndim}-d)")
    return arr


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return obj


def load_model(path: str | os.PathLike) -> Model:
    """Open a model directory (memory-mapped), checking every file against the others."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: not a model directory (it does not exist or is not a directory)")
    meta = _read_json(path / "meta.json")
    if meta.get("format") != FORMAT_NAME:
        raise ModelError(f"{path / 'meta.json'}: not an {FORMAT_NAME} meta file (format={meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path / 'meta.json'}: format_version {meta.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
    vectors = _load(path / "vectors.npy", "<f4", 2)
    output = _load(path / "output.npy", "<f4", 2)
    aids = _load(path / "aids.npy", "<i8", 1)
    counts = _load(path / "counts.npy", "<i8", 1)
    V, D = vectors.shape
    if output.shape != (V, D):
        raise ModelError(f"{path / 'output.npy'}: shape {output.shape} does not match vectors.npy {vectors.shape}")
    for name, arr in (("aids.npy", aids), ("counts.npy", counts)):
        if arr.shape[0] != V:
            raise ModelError(f"{path / name}: length {arr.shape[0]} does not match vectors.npy rows ({V})")
    if meta.get("vocab_size", V) != V or meta.get("vector_size", D) != D:
        raise ModelError(f"{path / 'meta.json'}: vocab_size/vector_size {meta.get('vocab_size')}/{meta.get('vector_size')} do not match vectors.npy {vectors.shape}")
    model = Model(path, vectors, output, aids, counts, meta)
    if (path / "popular.npy").exists():
        model.popular = _load(path / "popular.npy", "<i8", 2)
        model.popular_counts = _load(path / "popular_counts.npy", "<i8", 2)
        if model.popular.shape[0] != 3 or model.popular_counts.shape != model.popular.shape:
            raise ModelError(f"{path / 'popular.npy'}: shape {model.popular.shape} (expected [3, P] matching popular_counts.npy)")
    if (path / "index.json").exists():
        imeta = _read_json(path / "index.json")
        if imeta.get("format") != INDEX_FORMAT_NAME or imeta.get("format_version") != INDEX_FORMAT_VERSION:
            raise ModelError(f"{path / 'index.json'}: not an {INDEX_FORMAT_NAME} v{INDEX_FORMAT_VERSION} file")
        nb = _load(path / "neighbors.npy", "<i4", 2)
        ns = _load(path / "neighbor_scores.npy", "<f4", 2)
        k = imeta.get("k")
        if nb.shape != (V, k) or ns.shape != (V, k):
            raise ModelError(f"{path / 'neighbors.npy'}: shapes {nb.shape}/{ns.shape} do not match [V={V}, k={k}] from index.json")
        model.neighbors, model.neighbor_scores, model.index_meta = nb, ns, imeta
    return model


def save_model(path: str | os.PathLike, vectors: np.ndarray, output: np.ndarray, aids: np.ndarray,
               counts: np.ndarray, meta: dict, *, popular: np.ndarray | None = None,
               popular_counts: np.ndarray | None = None, overwrite: bool = False) -> Path:
    """Write a model directory atomically (temporary directory, then rename)."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    output = np.ascontiguousarray(output, dtype="<f4")
    aids = np.ascontiguousarray(aids, dtype="<i8")
    counts = np.ascontiguousarray(counts, dtype="<i8")
    if vectors.ndim != 2 or output.shape != vectors.shape:
        raise ValueError(f"vectors/output: shapes {vectors.shape}/{output.shape} must be equal [V, D]")
    if aids.shape != (vectors.shape[0],) or counts.shape != aids.shape:
        raise ValueError(f"aids/counts: shapes {aids.shape}/{counts.shape} must be [V={vectors.shape[0]}]")
    meta = dict(meta)
    meta.update(format=FORMAT_NAME, format_version=FORMAT_VERSION,
                vocab_size=int(vectors.shape[0]), vector_size=int(vectors.shape[1]))
    path = Path(path)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        np.save(tmp / "vectors.npy", vectors, allow_pickle=False)
        np.save(tmp / "output.npy", output, allow_pickle=False)
        np.save(tmp / "aids.npy", aids, allow_pickle=False)
        np.save(tmp / "counts.npy", counts, allow_pickle=False)
        if popular is not None:
            np.save(tmp / "popular.npy", np.ascontiguousarray(popular, dtype="<i8"), allow_pickle=False)
            np.save(tmp / "popular_counts.npy", np.ascontiguousarray(popular_counts, dtype="<i8"), allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def save_index(path: str | os.PathLike, neighbors: np.ndarray, scores: np.ndarray, info: dict) -> None:
    """Add (or replace) the neighbour table of a model directory.

    The two arrays are written first, each atomically; ``index.json`` is written last, so a
    reader never sees a table without its sidecar or a sidecar describing other arrays.
    """
    path = Path(path)
    neighbors = np.ascontiguousarray(neighbors, dtype="<i4")
    scores = np.ascontiguousarray(scores, dtype="<f4")
    if (path / "index.json").exists():
        os.unlink(path / "index.json")
    with atomic_file(path / "neighbors.npy") as fh:
        np.save(fh, neighbors, allow_pickle=False)
    with atomic_file(path / "neighbor_scores.npy") as fh:
        np.save(fh, scores, allow_pickle=False)
    imeta = dict(info)
    imeta.update(format=INDEX_FORMAT_NAME, format_version=INDEX_FORMAT_VERSION, k=int(neighbors.shape[1]))
    with atomic_file(path / "index.json", "w") as fh:
        fh.write(json.dumps(imeta, indent=2) + "\n")


def popularity(aid: np.ndarray, type: np.ndarray, top: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Rank aids by event count per type: ``(aids int64[3, P], counts int64[3, P])``.

    Order: count descending, then aid ascending. ``P = min(top, distinct aids)``; an aid with
    no event of a type can still appear in that row with count 0 when fewer than P aids have one.
    """
    uniq, inv = np.unique(np.asarray(aid), return_inverse=True)
    P = min(int(top), uniq.shape[0])
    out = np.zeros((3, P), np.int64)
    out_c = np.zeros((3, P), np.int64)
    for t in range(3):
        c = np.bincount(inv[np.asarray(type) == t], minlength=uniq.shape[0]).astype(np.int64)
        order = np.lexsort((uniq, -c))[:P]
        out[t], out_c[t] = uniq[order], c[order]
    return out, out_c
