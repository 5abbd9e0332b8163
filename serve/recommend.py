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
* **session** — :func:`w2v.session.recommend`, the rule ``otto-eval``'s ``w2v-session`` scores
  (docs/ALGORITHM.md, "Session recommendations"): event ``i`` of ``n`` gets weight
  ``type_weight[type_i] * decay ** (n - 1 - i)`` (``type_weight`` and ``decay`` are server
  parameters, default ``w2v.session.DEFAULT_RULE``); the answer is the exact cosine top-``k`` of the
  weighted sum of the known events' unit vectors, the session's own aids included. Events with
  unknown aids are skipped but keep their position ``i``, and are reported back. If no aid is
  known the request is answered 404.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2v.keyed import KeyedVectors
from w2v.model_io import Model, load_model
from w2v.session import DEFAULT_RULE, SessionRule, recommend

from data_prep.dataset import TYPE_NAMES
from data_prep.npyio import release_pages

DEFAULT_TYPE_WEIGHTS = DEFAULT_RULE.type_weights
DEFAULT_DECAY = DEFAULT_RULE.decay
# the service reads table rows with pread by default (Recommender below explains why)
DEFAULT_TABLE_ROWS = "pread"  # one of w2v.keyed.TABLE_ROWS


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
                 decay: float = DEFAULT_DECAY, table_rows: str = DEFAULT_TABLE_ROWS):
        self.rule = SessionRule(tuple(float(w) for w in type_weights), "decay", float(decay)).validate()
        self.model = model
        # table rows are read from the files by default ("pread"), not the maps: scattered reads
        # through a map pull whole page-cache folios into the resident set (all 276 MB of the
        # full-size table after 10,000 distinct item requests); "map" is 10-20% faster per request
        self.kv = KeyedVectors.from_model(model, table_rows=table_rows)
        self.table_k = 0 if model.neighbors is None else int(model.neighbors.shape[1])
        self.loaded_at = time.time()
        self._warm_up()
        # load_model released each file once checked; the aid map, the norms and the warm-up read
        # the vectors and aids again: keep in the resident set only what requests read again
        # (session requests scan the vectors, item requests a few table rows)
        self.released_bytes = release_pages(model.vectors, model.aids, model.counts, model.neighbors,
                                            model.neighbor_scores, model.popular, model.popular_counts)

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
        # the service reads the input vectors only: output.npy's header is checked, its values
        # are neither read nor kept mapped; each file leaves the resident set once checked, so
        # loading holds at most the vectors or the table resident, not both
        return cls(load_model(path, keep_output=False, release_checked=True), **kwargs)

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

    def similar(self, aid: int, k: int, *, scores: bool = True) -> tuple[list[int], list[float] | None]:
        """The ``k`` nearest aids of ``aid`` (never itself) and their scores (``None`` with
        ``scores=False``: the table's score row is then not read). ``KeyError`` if ``aid`` is unknown."""
        aids, sc = self.kv.neighbors(aid, k, scores=scores)
        return aids.tolist(), (None if sc is None else sc.tolist())

    def similar_scans(self, k: int) -> bool:
        """Whether ``similar(aid, k)`` scans every vector (no table, or ``k`` beyond its width)
        instead of reading one table row."""
        return not self.kv.reads_table(k)

    def session(self, aids: list[int], types: list[int], k: int) -> SessionResult:
        """Recommendations for one session (see the module docstring for the exact rule)."""
        n = len(aids)
        res = recommend(self.kv, np.array([0, n], np.int64), np.asarray(aids, np.int64),
                        np.asarray(types, np.int64), k, self.rule, n_threads=1)
        if not res.has[0]:
            raise UnknownAid(f"none of the {n} session aid(s) is in the model's vocabulary")
        _, known = self.kv.lookup(np.asarray(aids, np.int64))
        unknown = [a for a, ok in zip(aids, known.tolist()) if not ok]
        got = res.aids[0] >= 0
        return SessionResult(res.aids[0][got].tolist(), res.scores[0][got].tolist(), unknown, int(known.sum()))

def type_code(name: str) -> int:
    """``"clicks"|"carts"|"orders"`` -> 0|1|2 (``ValueError`` otherwise)."""
    try:
        return TYPE_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown event type {name!r} (expected one of {', '.join(TYPE_NAMES)})") from None
