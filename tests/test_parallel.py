"""data_prep.parallel: the shared thread helpers."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from data_prep.parallel import run_chunks, split_ranges


@pytest.mark.parametrize("threads", [1, 2, 7])
def test_run_chunks_results_in_chunk_order_and_progress_sums(threads):
    chunks = [(0, 3), (3, 4), (4, 10), (10, 10), (10, 25)]
    out = np.zeros(25, np.int64)
    seen = []
    lock = threading.Lock()

    def fn(lo, hi):
        out[lo:hi] = np.arange(lo, hi)
        return hi - lo

    def progress(done, total):
        with lock:
            seen.append((done, total))

    res = run_chunks(chunks, threads, fn, progress)
    assert res == [3, 1, 6, 0, 15]
    assert np.array_equal(out, np.arange(25))
    assert [t for _, t in seen] == [25] * len(chunks)
    assert sorted(d for d, _ in seen) == [d for d, _ in seen]  # serialised, non-decreasing
    assert seen[-1][0] == 25


def test_run_chunks_reraises_and_handles_no_chunks():
    assert run_chunks([], 2, lambda lo, hi: 1) == []

    def boom(lo, hi):
        if lo == 5:
            raise RuntimeError("chunk 5")
        return lo

    with pytest.raises(RuntimeError, match="chunk 5"):
        run_chunks([(0, 5), (5, 6), (6, 9)], 2, boom)


def test_split_ranges_cover_exactly():
    for n, t in [(0, 3), (1, 4), (10, 3), (100, 7)]:
        r = split_ranges(n, t)
        assert r[0][0] == 0 and r[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(r, r[1:]))
