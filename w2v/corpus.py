"""Training corpus: sessions as sentences, aids as words, held as flat CSR arrays.

``Sentences`` holds raw aids (after the event-type filter, repeat collapsing, the minimum
length and the optional split of long sentences); ``Corpus`` holds the same sentences mapped to
vocabulary rows, with out-of-vocabulary words removed but each sentence's RAW length kept,
because gensim batches jobs and decays the learning rate by raw words/sentences.
Everything is vectorised numpy; no Python object per event.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from data_prep.csr import offsets_from_lengths, select_events
from data_prep.dataset import Dataset, parse_types

from .keyed import AidIndex


@dataclass(frozen=True)
class Sentences:
    """Raw sentences: ``words[offsets[i]:offsets[i+1]]`` (int64 aids) is sentence i."""

    words: np.ndarray
    offsets: np.ndarray
    stats: dict = field(default_factory=dict)

    @property
    def n_sentences(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def to_lists(self) -> list[np.ndarray]:
        return [self.words[self.offsets[i]:self.offsets[i + 1]] for i in range(self.n_sentences)]


@dataclass(frozen=True)
class Corpus:
    """Sentences mapped to vocabulary rows.

    tokens      int32 [N]    vocabulary rows of the in-vocabulary words, sentence after sentence
    offsets     int64 [S+1]  sentence i is ``tokens[offsets[i]:offsets[i+1]]``
    raw_lengths int64 [S]    words of sentence i before out-of-vocabulary words were removed
    """

    tokens: np.ndarray
    offsets: np.ndarray
    raw_lengths: np.ndarray
    stats: dict = field(default_factory=dict)

    @property
    def n_sentences(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def raw_words(self) -> int:
        return int(self.raw_lengths.sum())

    @property
    def max_sentence_tokens(self) -> int:
        return int(np.diff(self.offsets).max()) if self.n_sentences else 0


def split_long(words: np.ndarray, offsets: np.ndarray, max_len: int | None) -> tuple[np.ndarray, dict]:
    """Split every sentence longer than ``max_len`` into consecutive pieces of ``max_len`` words
    (the last piece holds the rest). No word is dropped; returns the new offsets and counts."""
    lengths = np.diff(offsets)
    if max_len is None or lengths.size == 0 or int(lengths.max()) <= max_len:
        return offsets, dict(sentences_split=0, extra_pieces=0)
    pieces = np.maximum(1, -(-lengths // max_len))  # ceil, an empty sentence stays one piece
    rep_start = np.repeat(offsets[:-1], pieces)
    k = np.arange(int(pieces.sum()), dtype=np.int64) - np.repeat(offsets_from_lengths(pieces)[:-1], pieces)
    starts = rep_start + k * max_len
    ends = np.minimum(starts + max_len, np.repeat(offsets[1:], pieces))
    new_offsets = np.concatenate([starts, offsets[-1:]]).astype(np.int64)
    assert np.array_equal(new_offsets[1:], ends)
    return new_offsets, dict(sentences_split=int((pieces > 1).sum()), extra_pieces=int((pieces - 1).sum()))


def not_repeats(words: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """bool [N]: False where a word equals the previous word of the same sentence (``A A B A``
    keeps ``A B A``), the rule of ``collapse_repeats``; the first word of a sentence is kept."""
    keep = np.ones(words.shape[0], bool)
    if words.shape[0] > 1:
        keep[1:] = words[1:] != words[:-1]
        starts = offsets[:-1]
        keep[starts[starts < words.shape[0]]] = True
    return keep


def sentences_from_dataset(dataset: Dataset, types=None, min_session_len: int = 1,
                           collapse_repeats: bool = False, max_sentence_len: int | None = None) -> Sentences:
    """Sessions of ``dataset`` as sentences.

    Order of the filters: keep events of ``types``; with ``collapse_repeats`` drop an event whose
    aid equals the previous kept event's aid in the same session; drop sessions left with fewer
    than ``min_session_len`` events; split sentences longer than ``max_sentence_len``.
    """
    if not isinstance(min_session_len, (int, np.integer)) or min_session_len < 1:
        raise ValueError(f"min_session_len: must be an integer >= 1, got {min_session_len!r}")
    codes = parse_types(types)
    offsets = np.asarray(dataset.offsets, dtype=np.int64)
    aid = np.asarray(dataset.aid)
    n_events_in = int(aid.shape[0])
    if codes != (0, 1, 2):
        by_type = select_events(offsets, np.isin(np.asarray(dataset.type), np.array(codes, dtype=np.uint8)), 0)
        offsets, aid = by_type.offsets, aid[by_type.events]
    dropped_type = n_events_in - int(aid.shape[0])
    keep = not_repeats(aid, offsets) if collapse_repeats else np.ones(aid.shape[0], bool)
    sel = select_events(offsets, keep, min_session_len)
    dropped_repeat = int(aid.shape[0] - keep.sum())
    dropped_short_sessions = int((~sel.sessions).sum())
    dropped_short_events = int(sel.lengths[~sel.sessions].sum())
    aid, offsets = (aid if sel.events.all() else aid[sel.events]), sel.offsets
    words = np.ascontiguousarray(aid, dtype=np.int64)
    offsets, split_stats = split_long(words, offsets, max_sentence_len)
    stats = dict(sessions_in=int(dataset.n_sessions), events_in=n_events_in,
                 types=[int(c) for c in codes], dropped_events_by_type=dropped_type,
                 dropped_events_by_collapse=dropped_repeat,
                 dropped_short_sessions=dropped_short_sessions, dropped_short_events=dropped_short_events,
                 **split_stats, sentences=int(offsets.shape[0] - 1), words=int(words.shape[0]))
    return Sentences(words, offsets, stats)


def sentences_from_sequences(sequences: Iterable[Sequence[int] | np.ndarray],
                             max_sentence_len: int | None = None, collapse_repeats: bool = False) -> Sentences:
    """Hand-made sentences (lists or arrays of non-negative integer words), e.g. for tests;
    ``collapse_repeats`` and ``max_sentence_len`` as in :func:`sentences_from_dataset`."""
    arrs = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
    lengths = np.array([a.shape[0] for a in arrs], dtype=np.int64)
    words = np.concatenate(arrs) if arrs else np.zeros(0, np.int64)
    if words.size and words.min() < 0:
        raise ValueError(f"sequences: words must be non-negative integers, found {int(words.min())}")
    offsets = offsets_from_lengths(lengths)
    n_in = int(words.shape[0])
    if collapse_repeats:
        sel = select_events(offsets, not_repeats(words, offsets), 0)  # every sentence stays, empty ones too
        words, offsets = np.ascontiguousarray(words[sel.events]), sel.offsets
    offsets, split_stats = split_long(words, offsets, max_sentence_len)
    stats = dict(sessions_in=len(arrs), events_in=n_in, dropped_events_by_collapse=n_in - int(words.shape[0]),
                 **split_stats, sentences=int(offsets.shape[0] - 1), words=int(words.shape[0]))
    return Sentences(np.ascontiguousarray(words), offsets, stats)


def map_to_vocab(sentences: Sentences, vocab_aids) -> Corpus:
    """Replace each word by its vocabulary row; drop (and count) out-of-vocabulary words.

    ``vocab_aids``: the vocabulary's aids in row order, or its ``w2v.keyed.AidIndex``."""
    index = vocab_aids if isinstance(vocab_aids, AidIndex) else AidIndex(np.asarray(vocab_aids, dtype=np.int64))
    rows, inv = index.lookup(sentences.words, np.int32)
    csum = np.concatenate(([0], np.cumsum(inv, dtype=np.int64)))
    offsets = csum[sentences.offsets]
    tokens = np.ascontiguousarray(rows[inv], dtype=np.int32)
    stats = dict(sentences.stats)
    stats.update(oov_words=int(sentences.words.shape[0] - tokens.shape[0]), tokens=int(tokens.shape[0]))
    return Corpus(tokens, offsets, sentences.lengths().astype(np.int64), stats)
