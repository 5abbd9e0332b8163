"""``KeyedVectors``: aid-keyed access to a vector matrix and its neighbour table.

Aids are keys, rows are positions; one is never taken for the other. The aid -> row map
(:class:`AidIndex`, the only one in the project: the trainer's corpus, the service and the
evaluation all use it) is a dense ``int32`` table indexed by aid when the aids are dense enough
(largest aid below ``4 V + 2**20``, as OTTO's are: 1.86M aids cost 7.4 MB), otherwise a sorted
copy of the aids plus the argsort permutation (``np.searchsorted``, a binary search per lookup).
"""
from __future__ import annotations

import numbers

import numpy as np

from data_prep.npyio import RowReader

from . import knn
from .vocab import dense_ids

__all__ = ["AidIndex", "KeyedVectors", "TABLE_ROWS"]

# how a neighbour table's rows are read (KeyedVectors.from_model): through the memory maps, or
# row by row with pread (data_prep.npyio.RowReader)
TABLE_ROWS = ("map", "pread")


def _as_aid(aid) -> int:
    if type(aid) is int:  # fast path for the common case
        return aid
    if isinstance(aid, (bool, np.bool_)) or not isinstance(aid, (numbers.Integral, np.integer)):
        raise KeyError(f"aid {aid!r}: not an integer aid")
    return int(aid)


class AidIndex:
    """aid -> vocabulary row for ``aids`` (integers, unique; row ``i`` holds ``aids[i]``)."""

    def __init__(self, aids):
        aids = np.asarray(aids)
        if aids.ndim != 1:
            raise ValueError(f"aids: expected a 1-d array, got shape {aids.shape}")
        if aids.size and aids.dtype.kind not in "iu":
            raise ValueError(f"aids: expected integers, got dtype {aids.dtype}")
        aids = aids.astype(np.int64, copy=False)
        order = np.argsort(aids, kind="stable")
        sorted_aids = aids[order]
        if sorted_aids.size > 1:
            dup = np.flatnonzero(sorted_aids[1:] == sorted_aids[:-1])
            if dup.size:
                raise ValueError(f"aids: aid {int(sorted_aids[dup[0]])} appears more than once")
        self.aids = aids
        self._sorted = sorted_aids
        self._order = order.astype(np.int64, copy=False)
        V = aids.shape[0]
        self._lut = None
        if V and dense_ids(int(sorted_aids[0]), int(sorted_aids[-1]), V) and V < 2**31:
            self._lut = np.full(int(sorted_aids[-1]) + 1, -1, np.int32)
            self._lut[aids] = np.arange(V, dtype=np.int32)

    def __len__(self) -> int:
        return int(self.aids.shape[0])

    def row(self, aid) -> int:
        """Row of ``aid``; ``KeyError`` naming the aid when it is not in the vocabulary."""
        a = _as_aid(aid)
        if self._lut is not None:
            r = int(self._lut[a]) if 0 <= a < self._lut.shape[0] else -1
            if r < 0:
                raise KeyError(f"aid {a} is not in the vocabulary")
            return r
        sa = self._sorted
        p = sa.searchsorted(a)
        if p == sa.shape[0] or sa[p] != a:
            raise KeyError(f"aid {a} is not in the vocabulary")
        return int(self._order[p])

    def lookup(self, aids, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised map: ``(rows [n], known bool[n])`` of the flattened ``aids``; unknown aids get
        row ``-1``. ``dtype`` of the rows: int64, or int32 to halve the memory of a large corpus.
        ``KeyError`` for non-integer input."""
        a = np.asarray(aids)
        if a.size and a.dtype.kind not in "iu":
            raise KeyError(f"aids: expected integer aids, got dtype {a.dtype}")
        a = a.ravel()
        if self._lut is not None:
            top = self._lut.shape[0]
            rows = self._lut.take(a, mode="clip").astype(dtype, copy=False)
            if a.size and (a.min() < 0 or a.max() >= top):
                rows[(a < 0) | (a >= top)] = -1
            return rows, rows >= 0
        a = a.astype(np.int64, copy=False)
        sa = self._sorted
        if sa.shape[0] == 0:
            return np.full(a.shape[0], -1, np.int64), np.zeros(a.shape[0], bool)
        p = np.minimum(sa.searchsorted(a), sa.shape[0] - 1)
        known = sa[p] == a
        rows = np.where(known, self._order[p], -1).astype(dtype, copy=False)
        return rows, known


class KeyedVectors:
    """Vectors keyed by aid, with exact cosine search and an optional precomputed table.

    ``vectors`` float32 ``[V, D]`` (memory maps are used as is), ``aids`` int64 ``[V]`` unique;
    ``neighbors`` int32 ``[V, k]`` / ``neighbor_scores`` float32 ``[V, k]`` as written by
    ``otto-train index`` (rows, best first, ``-1`` padding): arrays, or both
    ``data_prep.npyio.RowReader`` objects over the mapped table (single-row lookups read the file and map
    nothing; what the service uses), which serve :meth:`neighbors` and :meth:`most_similar` but
    not fancy indexing of many rows. ``n_threads`` is used by the exact kernel for single queries.
    """

    def __init__(self, vectors, aids, neighbors=None, neighbor_scores=None, *, n_threads: int = 1):
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ValueError(f"vectors: expected a 2-d [V, D] array, got shape {vectors.shape}")
        if vectors.dtype != np.float32 or not vectors.flags.c_contiguous:
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        aids = np.asarray(aids)
        if aids.shape != (vectors.shape[0],):
            raise ValueError(f"aids: shape {aids.shape} does not match the {vectors.shape[0]} rows of vectors")
        index = AidIndex(aids)
        if (neighbors is None) != (neighbor_scores is None):
            raise ValueError("neighbors/neighbor_scores: give both or neither")
        if neighbors is not None:
            if not (isinstance(neighbors, RowReader) and isinstance(neighbor_scores, RowReader)):
                neighbors, neighbor_scores = np.asarray(neighbors), np.asarray(neighbor_scores)
            if neighbors.ndim != 2 or neighbors.shape[0] != vectors.shape[0] or neighbor_scores.shape != neighbors.shape:
                raise ValueError(f"neighbors/neighbor_scores: shapes {neighbors.shape}/{neighbor_scores.shape} "
                                 f"do not match [V={vectors.shape[0]}, k]")
        self.vectors = vectors
        self.index = index
        self.aids = index.aids
        self.neighbor_rows = neighbors
        self.neighbor_scores = neighbor_scores
        self.n_threads = int(n_threads)
        self._table_k = -1 if neighbors is None else int(neighbors.shape[1])
        self.inv_norms = knn.inverse_norms(vectors)

    @classmethod
    def from_model(cls, model, *, n_threads: int = 1, table_rows: str = "map") -> "KeyedVectors":
        """Wrap a loaded model directory (``w2v.model_io.Model``), with its table if it has one:
        ``table_rows="map"`` reads it through the memory maps, ``"pread"`` row by row from the
        files (:class:`data_prep.npyio.RowReader`)."""
        nb, ns = model.neighbors, model.neighbor_scores
        if table_rows not in TABLE_ROWS:
            raise ValueError(f"table_rows: expected 'map' or 'pread', got {table_rows!r}")
        if table_rows == "pread" and nb is not None:
            nb, ns = RowReader(nb), RowReader(ns)
        return cls(model.vectors, model.aids, nb, ns, n_threads=n_threads)

    # ---- keys -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.aids.shape[0])

    def __contains__(self, aid) -> bool:
        try:
            self.row(aid)
        except KeyError:
            return False
        return True

    @property
    def vector_size(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def table_k(self) -> int:
        """Width of the neighbour table (0 without one)."""
        return 0 if self.neighbor_rows is None else int(self.neighbor_rows.shape[1])

    def row(self, aid) -> int:
        """Row of ``aid``; ``KeyError`` naming the aid when it is not in the vocabulary."""
        return self.index.row(aid)

    def lookup(self, aids, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised map: ``(rows [n], known bool[n])``; unknown aids get row ``-1`` (``AidIndex.lookup``)."""
        return self.index.lookup(aids, dtype)

    def rows(self, aids) -> np.ndarray:
        """Rows of ``aids`` (int64); ``KeyError`` naming the first unknown aid."""
        rows, known = self.lookup(aids)
        if not known.all():
            bad = np.asarray(aids).ravel()[np.flatnonzero(~known)[0]]
            raise KeyError(f"aid {int(bad)} is not in the vocabulary")
        return rows

    def vector(self, aid) -> np.ndarray:
        return np.asarray(self.vectors[self.row(aid)])

    # ---- search -----------------------------------------------------------------------------
    def _exclude_rows(self, exclude) -> np.ndarray:
        ex = np.asarray(list(exclude) if not isinstance(exclude, np.ndarray) else exclude)
        if ex.size == 0:
            return np.empty(0, np.int64)
        rows, known = self.lookup(ex)
        return rows[known]  # aids outside the vocabulary cannot be returned anyway

    def _pairs(self, rows, scores) -> list[tuple[int, float]]:
        return [(int(a), float(s)) for a, s in zip(self.aids[rows], scores)]

    def reads_table(self, k: int) -> bool:
        """Whether ``neighbors(aid, k)`` reads the table (there is one and ``k <= table_k``)
        rather than scanning every vector with the exact kernel."""
        return self._table_k >= k

    def neighbors(self, aid, k: int = 10, *, scores: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """The k most similar aids to ``aid`` (itself excluded): ``(aids int64[k'], scores float32[k'])``.

        Read from the table when there is one and ``k <= table_k`` (padding dropped), else
        computed with the exact kernel. ``scores=False``: the scores are ``None``, and the table's
        score row is not read (with ``pread`` rows, one read instead of two).
        """
        r = self.row(aid)
        if k < 0:
            raise ValueError(f"k: must be >= 0 (got {k})")
        if self.reads_table(k):
            whole = k == self._table_k   # a whole row: the cheaper index for both kinds of table
            nb = self.neighbor_rows[r] if whole else self.neighbor_rows[r, :k]
            sc = (self.neighbor_scores[r] if whole else self.neighbor_scores[r, :k]) if scores else None
            if k and nb[k - 1] < 0:
                keep = nb >= 0
                nb = nb[keep]
                sc = None if sc is None else sc[keep]
            return self.aids.take(nb), (None if sc is None else sc.copy())
        s, rows = knn.topk(self.vectors, self.inv_norms, self.vectors[r], k, exclude=np.array([r]),
                           n_threads=self.n_threads)
        return self.aids[rows], (s if scores else None)

    def most_similar(self, aid, topn: int = 10, exclude=()) -> list[tuple[int, float]]:
        """``[(aid, cosine), ...]`` best first, excluding ``aid`` itself and the aids in ``exclude``.

        Uses the table when it holds enough entries after exclusion, else the exact kernel.
        """
        r = self.row(aid)
        topn = int(topn)
        if topn < 0:
            raise ValueError(f"topn: must be >= 0 (got {topn})")
        ex = self._exclude_rows(exclude)
        if self.neighbor_rows is not None:
            nb = np.asarray(self.neighbor_rows[r])
            sc = np.asarray(self.neighbor_scores[r])
            keep = nb >= 0
            complete = not keep.all()  # padding: the row already lists every other row
            if ex.size:
                keep &= ~np.isin(nb, ex)
            if complete or int(keep.sum()) >= topn:
                idx = np.flatnonzero(keep)[:topn]
                return self._pairs(nb[idx].astype(np.int64), sc[idx])
        ex = np.union1d(ex, [r])
        s, rows = knn.topk(self.vectors, self.inv_norms, self.vectors[r], topn, exclude=ex,
                           n_threads=self.n_threads)
        return self._pairs(rows, s)

    def similar_by_vector(self, vec, topn: int = 10, exclude=()) -> list[tuple[int, float]]:
        """``[(aid, cosine), ...]`` best first for an arbitrary vector (exact kernel)."""
        s, rows = knn.topk(self.vectors, self.inv_norms, vec, int(topn),
                           exclude=self._exclude_rows(exclude), n_threads=self.n_threads)
        return self._pairs(rows, s)

    def session_vector(self, aids, weights=None) -> np.ndarray:
        """Weighted sum of the unit vectors of the known ``aids`` (unknown ones are skipped)."""
        rows, known = self.lookup(aids)
        w = np.ones(rows.shape[0]) if weights is None else np.asarray(weights, np.float64).ravel()
        if w.shape != rows.shape:
            raise ValueError(f"weights: shape {w.shape} does not match {rows.shape[0]} aids")
        return knn.session_vector(self.vectors, self.inv_norms, rows[known], w[known])
