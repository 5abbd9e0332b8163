"""data_prep.csr.select_events: the one event/session filter, against a per-session reference."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.csr import offsets_from_lengths, select_events


@settings(max_examples=120, deadline=None)
@given(st.lists(st.lists(st.booleans(), max_size=6), max_size=8), st.integers(0, 4))
def test_select_events_matches_a_per_session_reference(masks, min_len):
    off = offsets_from_lengths([len(m) for m in masks])
    emask = np.array([b for m in masks for b in m], bool)
    sel = select_events(off, emask, min_len)
    ids = np.arange(emask.shape[0])
    kept_sessions = [i for i, m in enumerate(masks) if min_len <= 0 or sum(m) >= min_len]
    want_events = [e for i in kept_sessions for e, b in zip(range(off[i], off[i + 1]), masks[i]) if b]
    assert sel.sessions.tolist() == [i in kept_sessions for i in range(len(masks))]
    assert ids[sel.events].tolist() == want_events
    assert sel.offsets.tolist() == offsets_from_lengths([sum(masks[i]) for i in kept_sessions]).tolist()
    assert sel.lengths.tolist() == [sum(m) for m in masks]
