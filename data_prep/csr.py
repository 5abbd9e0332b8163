"""Sessions as CSR (``offsets`` int64[S+1]: the events of session ``i`` are
``offsets[i]:offsets[i+1]``): the one filter that keeps some events and drops the sessions left
too short, used by ``Dataset.filter``, the train/test split and the training corpus.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Selection", "offsets_from_lengths", "select_events"]


def offsets_from_lengths(lengths) -> np.ndarray:
    """int64[S+1] CSR offsets of sessions with ``lengths`` (int[S], >= 0)."""
    lengths = np.asarray(lengths)
    offsets = np.zeros(lengths.shape[0] + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


class Selection(NamedTuple):
    """What :func:`select_events` keeps.

    offsets  int64[S'+1]  CSR offsets of the kept sessions over the kept events
    events   bool[E]      the events kept (their session kept too); ``x[events]`` gathers them
    sessions bool[S]      the sessions kept
    lengths  int64[S]     events of each input session that passed the event mask
    """
    offsets: np.ndarray
    events: np.ndarray
    sessions: np.ndarray
    lengths: np.ndarray


def select_events(offsets, emask, min_len: int = 1) -> Selection:
    """Keep the events where ``emask`` (bool[E]); then keep the sessions with at least ``min_len``
    kept events (``min_len <= 0`` keeps every session, empty ones included). Event order is kept."""
    offsets = np.asarray(offsets, np.int64)
    emask = np.asarray(emask, bool)
    E = int(offsets[-1]) if offsets.size else 0
    if emask.shape != (E,):
        raise ValueError(f"emask: shape {emask.shape} does not match the {E} events of offsets")
    if emask.all():  # no event dropped: no prefix sum over the events
        lengths = np.diff(offsets)
    else:
        csum = np.zeros(E + 1, np.int64)
        np.cumsum(emask, out=csum[1:])
        lengths = csum[offsets[1:]] - csum[offsets[:-1]]
        del csum
    sessions = lengths >= min_len if min_len > 0 else np.ones(lengths.shape[0], bool)
    events = emask if sessions.all() else emask & np.repeat(sessions, np.diff(offsets))
    return Selection(offsets_from_lengths(lengths[sessions]), events, sessions, lengths)
