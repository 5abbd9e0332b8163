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


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_iter_in_order_yields_in_order_with_a_bounded_number_in_flight(threads):
    import time

    from data_prep.parallel import iter_in_order
    lock = threading.Lock()
    state = {"running": 0, "most": 0, "started": 0}

    def fn(c):
        with lock:
            state["running"] += 1
            state["started"] += 1
            state["most"] = max(state["most"], state["running"])
        time.sleep(0.002 * ((7 * c) % 5))          # unequal costs: completion order differs
        with lock:
            state["running"] -= 1
        return c * c

    got = []
    for c, r in enumerate(iter_in_order(fn, 20, threads)):
        # when result c is handed over, calls 0..c are taken and at most ``threads`` more are
        # submitted (the one replacing call c is submitted before c is yielded)
        assert state["started"] <= c + 1 + threads
        got.append(r)
    assert got == [c * c for c in range(20)]
    assert state["most"] <= threads
    assert list(iter_in_order(fn, 0, threads)) == []
