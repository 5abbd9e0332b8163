"""What the service answers, independent of HTTP: popular items, item neighbours, session blends.

A :class:`Recommender` wraps one loaded model directory (read-only memory maps) and is never
mutated after construction, so any number of threads may use it at once and a reload is a
single reference swap on the server.

Rules (also stated in the OpenAPI description):

* **popular** — ``model.popular[type, :k]``: aids by descending event count of that type over the
  training data (ties: aid ascending). Default type ``orders``.
* **item neighbours** — the ``k`` nearest aids of ``aid`` by cosine similarity, never ``aid``
  itself, ordered by score descending then vocabulary row ascending. From the precomputed
  neighbour table when the model has one and ``k`` is at most its width, otherwise the exact
  top-k kernel. Table slots holding row ``-1`` (vocabularies smaller than the table) are dropped.
* **session** — events ``e_0 .. e_{n-1}`` in the order given (oldest first). Event ``i`` gets
  weight ``w_i = type_weight[type_i] * decay ** (n - 1 - i)`` with ``type_weight = {clicks: 1,
  carts: 3, orders: 6}`` and ``decay = 0.9`` (both parameters). The query is
  ``q = sum_i w_i * v_i / ||v_i||`` over the events whose aid is in the vocabulary (a repeated aid
  contributes once per occurrence; zero vectors contribute nothing); events with unknown aids are
  skipped but keep their position ``i``, and are reported back. The answer is the exact cosine
  top-``k`` of ``q`` over the whole vocabulary **excluding every aid of the session**. If no aid
  is known the request is answered 404.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2v import knn
from w2v.keyed import KeyedVectors
from w2v.model_io import Model, load_model

from data_prep.dataset import TYPE_NAMES

DEFAULT_TYPE_WEIGHTS = (1.0, 3.0, 6.0)
DEFAULT_DECAY = 0.9


class UnknownAid(LookupError):
    """No aid of the request is in the model's vocabulary."""


@dataclass(frozen=True)
class SessionResult:
    aids: list[int]
    scores: list[float]
    unknown: list[int]
    used: int


class Recommender:
    """Answers for one model. Immutable after ``__init__``; safe to share between threads."""

    def __init__(self, model: Model, *, type_weights: tuple[float, float, float] = DEFAULT_TYPE_WEIGHTS,
                 decay: float = DEFAULT_DECAY):
        if len(type_weights) != 3 or any(not np.isfinite(w) or w < 0 for w in type_weights):
            raise ValueError(f"type_weights: expected three finite non-negative numbers, got {type_weights!r}")
        if not (0.0 < decay <= 1.0):
            raise ValueError(f"decay: expected 0 < decay <= 1, got {decay!r}")
        self.model = model
        self.kv = KeyedVectors.from_model(model)
        self.vectors = model.vectors
        self.inv_norms = self.kv.inv_norms
        self.type_weights = np.asarray(type_weights, dtype=np.float32)
        self.decay = float(decay)
        self.table_k = 0 if model.neighbors is None else int(model.neighbors.shape[1])
        self.loaded_at = time.time()
        self._warm_up()

    def _warm_up(self) -> None:
        """Run each kernel once on row 0 so the first request does not pay for JIT loading."""
        if self.vocab_size == 0:
            return
        aid0 = int(self.model.aids[0])
        self.kv.neighbors(aid0, self.table_k + 1)
        if self.table_k:
            self.kv.neighbors(aid0, 1)
        self.session([aid0], [0], 1)

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> "Recommender":
        return cls(load_model(path), **kwargs)

    # -- lookups -------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return str(self.model.path)

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    @property
    def vector_size(self) -> int:
        return self.model.vector_size

    @property
    def has_popular(self) -> bool:
        return self.model.popular is not None

    def __contains__(self, aid: int) -> bool:
        return aid in self.kv

    # -- answers ---------------------------------------------------------------------------
    def popular(self, type_code: int, k: int) -> tuple[list[int], list[int]]:
        """The ``k`` most frequent aids of event type ``type_code`` and their counts (fewer if
        the table is shorter). Raises ``LookupError`` when the model has no popularity table."""
        if self.model.popular is None:
            raise LookupError("this model has no popularity table (popular.npy)")
        return (self.model.popular[type_code, :k].tolist(), self.model.popular_counts[type_code, :k].tolist())

    def similar(self, aid: int, k: int) -> tuple[list[int], list[float]]:
        """The ``k`` nearest aids of ``aid`` (never itself). ``KeyError`` if ``aid`` is unknown."""
        aids, scores = self.kv.neighbors(aid, k)
        return aids.tolist(), scores.tolist()

    def session_weights(self, n: int, types: np.ndarray) -> np.ndarray:
        """``w_i = type_weight[types[i]] * decay ** (n - 1 - i)`` as float32[n]."""
        decay = np.power(np.float64(self.decay), np.arange(n - 1, -1, -1, dtype=np.float64))
        return (self.type_weights[types].astype(np.float64) * decay).astype(np.float32)

    def session(self, aids: list[int], types: list[int], k: int) -> SessionResult:
        """Recommendations for a session (see the module docstring for the exact rule)."""
        n = len(aids)
        weights_all = self.session_weights(n, np.asarray(types, dtype=np.int64))
        rows_all, known = self.kv.lookup(np.asarray(aids, dtype=np.int64))
        if not known.any():
            raise UnknownAid(f"none of the {n} session aid(s) is in the model's vocabulary")
        unknown = [a for a, ok in zip(aids, known.tolist()) if not ok]
        rows = rows_all[known]
        weights = weights_all[known]
        query = knn.session_vector(self.vectors, self.inv_norms, rows, weights)
        scores, out_rows = knn.topk(self.vectors, self.inv_norms, query, k, exclude=np.unique(rows))
        return SessionResult(self.model.aids[out_rows].tolist(), scores.tolist(), unknown, int(rows.shape[0]))


def type_code(name: str) -> int:
    """``"clicks"|"carts"|"orders"`` -> 0|1|2 (``ValueError`` otherwise)."""
    try:
        return TYPE_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown event type {name!r} (expected one of {', '.join(TYPE_NAMES)})") from None
