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

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep import checks
from data_prep.atomic import atomic_directory, atomic_files, named_write_errors
from data_prep.npyio import FormatError, check_fields, load_npy, read_json, release_pages

from .vocab import dense_ids, distinct_ids

FORMAT_NAME = "otto-w2v-model"
FORMAT_VERSION = 1
INDEX_FORMAT_NAME = "otto-neighbor-index"
INDEX_FORMAT_VERSION = 1


class ModelError(FormatError):
    """A model directory is missing, corrupt or inconsistent. The message names the file."""


class NeighborIndexError(ModelError):
    """The neighbour table of a model directory (``index.json``, ``neighbors.npy``,
    ``neighbor_scores.npy``) is corrupt or does not match the model."""


META_FIELDS = {
    "format": ("str", True),
    "format_version": ("int", True),
    "vocab_size": ("positive", True),
    "vector_size": ("positive", True),
    "config": ("object", False),
    "stats": ("object", False),
    "epoch_losses": ("array", False),
    "history": ("array", False),
    "epochs_trained": ("count", False),
    "train_seconds": ("number", False),
    "random_state": ("object", False),
}

INDEX_FIELDS = {
    "format": ("str", True),
    "format_version": ("int", True),
    "k": ("positive", True),
    "vocab_size": ("positive", False),
    "vector_size": ("positive", False),
}


@dataclass
class Model:
    """A loaded model directory. Arrays are read-only memory maps."""

    path: Path | None
    vectors: np.ndarray
    output: np.ndarray | None  # None when loaded with keep_output=False
    aids: np.ndarray
    counts: np.ndarray
    meta: dict
    popular: np.ndarray | None = None
    popular_counts: np.ndarray | None = None
    neighbors: np.ndarray | None = None
    neighbor_scores: np.ndarray | None = None
    index_meta: dict | None = None

    @property
    def vocab_size(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def vector_size(self) -> int:
        return int(self.vectors.shape[1])


def _finite(where: Path, name: str, arr: np.ndarray) -> None:
    bad = checks.first_nonfinite(arr.reshape(-1))
    if bad >= 0:
        r, c = divmod(bad, arr.shape[1])
        raise ModelError(f"{where / name}: row {r}, column {c}: {float(arr[r, c])} (every value must be finite)")


def validate_arrays(where: Path, vectors: np.ndarray, output: np.ndarray, aids: np.ndarray,
                    counts: np.ndarray, popular: np.ndarray | None = None,
                    popular_counts: np.ndarray | None = None, *, output_values: bool = True) -> None:
    """The value rules of a model directory (docs/FORMATS.md section 2), for ``load_model`` and
    ``save_model`` alike: ``V >= 1`` rows, ``D >= 1`` dimensions, matching shapes, finite
    vectors, non-negative unique aids, non-negative counts and popularity. One pass over each
    array; a ``ModelError`` names the file, the row and the value. ``output_values=False``:
    ``output.npy``'s shape is checked but its values are not read (for readers that never use
    them)."""
    V, D = vectors.shape
    if V < 1:
        raise ModelError(f"{where / 'vectors.npy'}: 0 rows (an empty vocabulary; nothing was trained)")
    if D < 1:
        raise ModelError(f"{where / 'vectors.npy'}: shape {vectors.shape}: vectors of dimension 0")
    if output.shape != (V, D):
        raise ModelError(f"{where / 'output.npy'}: shape {output.shape} does not match vectors.npy {vectors.shape}")
    for name, arr in (("aids.npy", aids), ("counts.npy", counts)):
        if arr.shape != (V,):
            raise ModelError(f"{where / name}: length {arr.shape[0]} does not match vectors.npy rows ({V})")
    _finite(where, "vectors.npy", vectors)
    if output_values:
        _finite(where, "output.npy", output)
    bad = checks.first_below(aids, 0)
    if bad >= 0:
        raise ModelError(f"{where / 'aids.npy'}: row {bad}: aid {int(aids[bad])} is negative")
    i, j = checks.first_repeat(aids)
    if j >= 0:
        raise ModelError(f"{where / 'aids.npy'}: row {j}: duplicate aid {int(aids[j])} (first at row {i})")
    bad = checks.first_below(counts, 0)
    if bad >= 0:
        raise ModelError(f"{where / 'counts.npy'}: row {bad}: count {int(counts[bad])} is negative")
    if popular is not None:
        if popular.ndim != 2 or popular.shape[0] != 3 or popular_counts is None or popular_counts.shape != popular.shape:
            shapes = f"{popular.shape}/{None if popular_counts is None else popular_counts.shape}"
            raise ModelError(f"{where / 'popular.npy'}: shapes {shapes} of popular.npy/popular_counts.npy (expected equal [3, P])")
        for name, arr in (("popular.npy", popular), ("popular_counts.npy", popular_counts)):
            bad = checks.first_below(arr.reshape(-1), 0)
            if bad >= 0:
                r, c = divmod(bad, arr.shape[1])
                raise ModelError(f"{where / name}: row {r}, column {c}: {int(arr[r, c])} is negative")


def validate_neighbors(where: Path, neighbors: np.ndarray, scores: np.ndarray, V: int, k: int) -> None:
    """Neighbour table rules (docs/FORMATS.md section 3): both ``[V, k]``, rows in ``[-1, V)``
    (-1 is padding), scores without NaN or +inf (-inf is the padding score)."""
    for name, arr in (("neighbors.npy", neighbors), ("neighbor_scores.npy", scores)):
        if arr.shape != (V, k):
            raise NeighborIndexError(f"{where / name}: shape {arr.shape} does not match [V={V}, k={k}] "
                                     "(V from vectors.npy, k from index.json)")
    bad = checks.first_outside(neighbors.reshape(-1), -1, V)
    if bad >= 0:
        r, c = divmod(bad, k)
        raise NeighborIndexError(f"{where / 'neighbors.npy'}: row {r}, column {c}: neighbour row {int(neighbors[r, c])} "
                                 f"is outside [-1, {V}) (-1 pads, 0..{V - 1} are rows of vectors.npy)")
    bad = checks.first_nan_or_posinf(scores.reshape(-1))
    if bad >= 0:
        r, c = divmod(bad, k)
        raise NeighborIndexError(f"{where / 'neighbor_scores.npy'}: row {r}, column {c}: score {float(scores[r, c])} "
                                 "(expected a number, or -inf for padding)")


def _load_index(path: Path, V: int, D: int, release_checked: bool = False):
    imeta = read_json(path / "index.json", error=NeighborIndexError)
    if imeta.get("format") != INDEX_FORMAT_NAME or imeta.get("format_version") != INDEX_FORMAT_VERSION:
        raise NeighborIndexError(f"{path / 'index.json'}: not an {INDEX_FORMAT_NAME} v{INDEX_FORMAT_VERSION} file "
                                 f"(format={imeta.get('format')!r}, format_version={imeta.get('format_version')!r})")
    check_fields(imeta, INDEX_FIELDS, path / "index.json", error=NeighborIndexError)
    for key, have in (("vocab_size", V), ("vector_size", D)):
        if key in imeta and imeta[key] != have:
            raise NeighborIndexError(f"{path / 'index.json'}: \"{key}\" {imeta[key]} does not match vectors.npy {(V, D)} "
                                     "(the table was built for another model; rebuild it with otto-train index)")
    k = imeta["k"]
    nb = load_npy(path / "neighbors.npy", "<i4", 2, error=NeighborIndexError)
    ns = load_npy(path / "neighbor_scores.npy", "<f4", 2, error=NeighborIndexError)
    validate_neighbors(path, nb, ns, V, k)
    if release_checked:
        release_pages(nb, ns)
    return nb, ns, imeta


def load_model(path: str | os.PathLike, *, keep_output: bool = True, release_checked: bool = False) -> Model:
    """Open a model directory (memory-mapped), checking every file against its format and the others.

    Every rule of docs/FORMATS.md sections 2-3 is checked here, once, for every consumer (CLIs,
    evaluation, the service): a ``ModelError`` (``NeighborIndexError`` for the neighbour table)
    names the file and the first problem. Cost: one sequential read of every array (measured in
    docs/FORMATS.md, "Validation on load"). ``keep_output=False``, for readers of the input
    vectors only (the service, the evaluation): ``output.npy`` is neither kept (``Model.output``
    is None) nor read; its header, dtype, shape and length are still checked, so a truncated or
    mismatched file is refused, but its values, which such a reader never uses, are not scanned
    (at full size that is 4 * V * D = 464 MB less to read before the service is ready).
    ``release_checked=True``, for a long-running reader that uses few of the pages again (the
    service): the model's arrays are released from the resident set
    (``data_prep.npyio.release_pages``) once checked and the table's once checked, so the checks
    never hold more than one of the two resident (at full size 493 MB at most instead of 783 MB;
    the values are unchanged and read again from the page cache when used).
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: not a model directory (it does not exist or is not a directory)")
    meta = read_json(path / "meta.json", error=ModelError)
    if meta.get("format") != FORMAT_NAME:
        raise ModelError(f"{path / 'meta.json'}: not an {FORMAT_NAME} meta file (format={meta.get('format')!r})")
    check_fields(meta, META_FIELDS, path / "meta.json", error=ModelError)
    if meta["format_version"] != FORMAT_VERSION:
        raise ModelError(f"{path / 'meta.json'}: format_version {meta['format_version']!r} is not supported (expected {FORMAT_VERSION})")
    vectors = load_npy(path / "vectors.npy", "<f4", 2, error=ModelError)
    output = load_npy(path / "output.npy", "<f4", 2, error=ModelError)
    aids = load_npy(path / "aids.npy", "<i8", 1, error=ModelError)
    counts = load_npy(path / "counts.npy", "<i8", 1, error=ModelError)
    popular = popular_counts = None
    if (path / "popular.npy").exists() or (path / "popular_counts.npy").exists():
        popular = load_npy(path / "popular.npy", "<i8", 2, error=ModelError)
        popular_counts = load_npy(path / "popular_counts.npy", "<i8", 2, error=ModelError)
    V, D = vectors.shape
    validate_arrays(path, vectors, output, aids, counts, popular, popular_counts, output_values=keep_output)
    if meta["vocab_size"] != V or meta["vector_size"] != D:
        raise ModelError(f"{path / 'meta.json'}: vocab_size/vector_size {meta['vocab_size']}/{meta['vector_size']} "
                         f"do not match vectors.npy {vectors.shape}")
    if not keep_output:
        output = None  # header checked, values never read: nothing of it becomes resident
    if release_checked:
        release_pages(vectors, output, aids, counts, popular, popular_counts)
    model = Model(path, vectors, output, aids, counts, meta, popular=popular, popular_counts=popular_counts)
    if (path / "index.json").exists():
        model.neighbors, model.neighbor_scores, model.index_meta = _load_index(path, V, D, release_checked)
    return model


def save_model(path: str | os.PathLike, vectors: np.ndarray, output: np.ndarray, aids: np.ndarray,
               counts: np.ndarray, meta: dict, *, popular: np.ndarray | None = None,
               popular_counts: np.ndarray | None = None, overwrite: bool = False,
               inputs: tuple = ()) -> Path:
    """Write a model directory atomically (temporary directory, then swap).

    The arrays must satisfy the rules ``load_model`` checks (``validate_arrays``): a model that
    could not be loaded is never written. ``inputs``: paths this model was computed from, which
    ``path`` must not be, contain or lie inside (``data_prep.atomic.check_output``).
    """
    path = Path(path)
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    output = np.ascontiguousarray(output, dtype="<f4")
    aids = np.ascontiguousarray(aids, dtype="<i8")
    counts = np.ascontiguousarray(counts, dtype="<i8")
    if vectors.ndim != 2 or output.shape != vectors.shape:
        raise ValueError(f"vectors/output: shapes {vectors.shape}/{output.shape} must be equal [V, D]")
    if aids.shape != (vectors.shape[0],) or counts.shape != aids.shape:
        raise ValueError(f"aids/counts: shapes {aids.shape}/{counts.shape} must be [V={vectors.shape[0]}]")
    if popular is not None:
        popular = np.ascontiguousarray(popular, dtype="<i8")
        popular_counts = np.ascontiguousarray(popular_counts, dtype="<i8")
    validate_arrays(path, vectors, output, aids, counts, popular, popular_counts)
    meta = dict(meta)
    meta.update(format=FORMAT_NAME, format_version=FORMAT_VERSION,
                vocab_size=int(vectors.shape[0]), vector_size=int(vectors.shape[1]))
    with atomic_directory(path, overwrite=overwrite, inputs=inputs) as tmp:
        np.save(tmp / "vectors.npy", vectors, allow_pickle=False)
        np.save(tmp / "output.npy", output, allow_pickle=False)
        np.save(tmp / "aids.npy", aids, allow_pickle=False)
        np.save(tmp / "counts.npy", counts, allow_pickle=False)
        if popular is not None:
            np.save(tmp / "popular.npy", popular, allow_pickle=False)
            np.save(tmp / "popular_counts.npy", popular_counts, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


INDEX_FILES = ("neighbors.npy", "neighbor_scores.npy", "index.json")


def save_index(path: str | os.PathLike, neighbors: np.ndarray, scores: np.ndarray, info: dict) -> None:
    """Add (or replace) the neighbour table of a model directory, never losing the old one.

    All three files are first written completely under temporary names (``atomic_files``): a
    failure there (disk full, Ctrl-C) leaves the old table untouched. Then the old
    ``index.json`` is removed and the new files are renamed into place, ``index.json`` last, so
    a reader (which uses the table only when ``index.json`` exists and matches) sees the old
    table, no table, or the new one -- never a mix.
    """
    path = Path(path)
    neighbors = np.ascontiguousarray(neighbors, dtype="<i4")
    scores = np.ascontiguousarray(scores, dtype="<f4")
    if neighbors.ndim != 2 or scores.shape != neighbors.shape:
        raise ValueError(f"neighbors/scores: shapes {neighbors.shape}/{scores.shape} must be equal [V, k]")
    V, k = neighbors.shape
    validate_neighbors(path, neighbors, scores, V, k)
    imeta = dict(info)
    imeta.update(format=INDEX_FORMAT_NAME, format_version=INDEX_FORMAT_VERSION, k=int(k))
    with atomic_files(path, INDEX_FILES, before_swap=_drop_old_index) as tmp:
        with named_write_errors(path / "neighbors.npy"):
            np.save(tmp["neighbors.npy"], neighbors, allow_pickle=False)
        with named_write_errors(path / "neighbor_scores.npy"):
            np.save(tmp["neighbor_scores.npy"], scores, allow_pickle=False)
        with named_write_errors(path / "index.json"):
            tmp["index.json"].write((json.dumps(imeta, indent=2) + "\n").encode("utf-8"))


def _drop_old_index(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path / "index.json")


def popularity(aid: np.ndarray, type: np.ndarray, top: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Rank aids by event count per type: ``(aids int64[3, P], counts int64[3, P])``.

    Order: count descending, then aid ascending. ``P = min(top, distinct aids)``; an aid with
    no event of a type can still appear in that row with count 0 when fewer than P aids have one.
    """
    aid, type = np.asarray(aid), np.asarray(type)
    uniq = distinct_ids(aid)
    if uniq.size and dense_ids(int(uniq[0]), int(uniq[-1]), aid.size):
        # dense ids (aids): counting passes instead of a sort (17 s at full size)
        per_type = [np.bincount(aid[type == t], minlength=int(uniq[-1]) + 1)[uniq] for t in range(3)]
    else:
        inv = np.searchsorted(uniq, aid)
        per_type = [np.bincount(inv[type == t], minlength=uniq.shape[0]) for t in range(3)]
    P = min(int(top), uniq.shape[0])
    out = np.zeros((3, P), np.int64)
    out_c = np.zeros((3, P), np.int64)
    for t in range(3):
        c = per_type[t].astype(np.int64)
        order = np.lexsort((uniq, -c))[:P]
        out[t], out_c[t] = uniq[order], c[order]
    return out, out_c
