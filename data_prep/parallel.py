"""Threads for ``nogil`` Numba kernels: the thread count and the range runner.

Every multi-threaded stage of the project works the same way: a kernel compiled with
``nogil=True`` is called on disjoint, contiguous ranges of its work from ordinary Python threads
(no Numba threading layer, so concurrent callers such as server threads never contend for one).

* :func:`default_threads` -- the CPUs this process may run on (its affinity mask on Linux);
* :func:`check_threads` -- a ``threads`` argument validated once (``None`` = all CPUs);
* :func:`split_ranges` -- the range bounds; :func:`run_ranges` -- call ``fn(lo, hi, *args)`` on them;
* :func:`run_tasks` -- call ``fn(*args)`` for a list of argument tuples;
* :func:`run_chunks` -- call ``fn(lo, hi)`` on many chunks taken from one shared queue.

The calls other than the first run on one shared, lazily created pool; the first runs on the
calling thread. Pool tasks never wait for other pool tasks, so sharing the pool cannot deadlock.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

__all__ = ["default_threads", "check_threads", "split_ranges", "run_ranges", "run_tasks", "run_chunks", "iter_in_order"]


def default_threads() -> int:
    """Number of CPUs this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity outside Linux
        return max(1, os.cpu_count() or 1)


def check_threads(threads, name: str = "threads", maximum: int = 1024) -> int:
    """``threads`` as an int in ``[1, maximum]``; ``None`` means :func:`default_threads`.
    ``ValueError`` naming ``name`` otherwise (bools and non-integers included)."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not hasattr(threads, "__index__") or not 1 <= int(threads) <= maximum:
        raise ValueError(f"{name}: must be an integer from 1 to {maximum}, got {threads!r}")
    return int(threads)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(8, 2 * default_threads()), thread_name_prefix="otto-nogil")
        return _POOL


def run_tasks(fn, args_list, pool=None) -> None:
    """``fn(*args)`` for every tuple of ``args_list``: the first on this thread, the rest on
    ``pool`` (an executor the caller owns, e.g. to bound the threads of one stage) or on the
    shared pool. Waits for all; the first exception raised is re-raised (after all finished)."""
    args_list = list(args_list)
    pool = _pool() if pool is None else pool
    futures = [pool.submit(fn, *a) for a in args_list[1:]]
    try:
        if args_list:
            fn(*args_list[0])
    finally:
        for f in futures:
            f.exception()
    for f in futures:
        f.result()


def split_ranges(n: int, threads: int, min_per_range: int = 1) -> list[tuple[int, int]]:
    """At most ``threads`` contiguous ranges ``(lo, hi)`` covering ``[0, n)`` with sizes that differ by
    at most one, each at least ``min_per_range`` long (one range when ``n < 2 * min_per_range``).
    ``n = 0`` gives ``[(0, 0)]``."""
    parts = max(1, min(int(threads), n // max(1, int(min_per_range))))
    return [(n * t // parts, n * (t + 1) // parts) for t in range(parts)]


def run_ranges(n: int, threads: int, fn, *args, min_per_range: int = 1) -> None:
    """Call ``fn(lo, hi, *args)`` over :func:`split_ranges` ``(n, threads, min_per_range)``.

    ``fn`` must only write the slice of its outputs that its range owns (the kernels of the
    project derive everything from the global index, so the split never changes a result).
    """
    run_tasks(fn, [(lo, hi, *args) for lo, hi in split_ranges(n, threads, min_per_range)])


def run_chunks(chunks, threads: int, fn, progress=None, total: int | None = None) -> list:
    """Call ``fn(lo, hi)`` for every ``(lo, hi)`` of ``chunks`` on up to ``threads`` threads that
    take the next chunk from one shared queue (load balance when chunks cost unequal time).

    Returns the values of ``fn`` in chunk order. ``progress(done, total)`` (optional) is called
    after each chunk with ``done`` = the summed ``hi - lo`` so far (``total`` defaults to that sum
    over all chunks), serialised by a lock. ``fn`` must write only the outputs its chunk owns.
    """
    chunks = list(chunks)
    results = [None] * len(chunks)
    total = sum(hi - lo for lo, hi in chunks) if total is None else total
    lock = threading.Lock()
    state = {"next": 0, "done": 0}

    def worker():
        while True:
            with lock:
                c = state["next"]
                state["next"] += 1
            if c >= len(chunks):
                return
            lo, hi = chunks[c]
            results[c] = fn(lo, hi)
            if progress is not None:
                with lock:
                    state["done"] += hi - lo
                    progress(state["done"], total)

    run_tasks(worker, [()] * min(max(1, int(threads)), len(chunks)))
    return results


def iter_in_order(fn, n: int, n_threads: int):
    """Yield ``fn(0), ..., fn(n - 1)`` in order, computed on ``n_threads`` threads. At most
    ``n_threads`` calls are submitted and not yet taken, so while the caller works on one result
    the next ``n_threads`` calls run (bounded memory). One thread: each call runs on the calling
    thread when its result is taken. Unlike :func:`run_chunks`, results are handed over as they
    complete in order and never all held at once."""
    if n_threads == 1:
        for c in range(n):
            yield fn(c)
        return
    with ThreadPoolExecutor(n_threads, thread_name_prefix="otto-in-order") as pool:
        pending = deque(pool.submit(fn, c) for c in range(min(n, n_threads)))
        try:
            for c in range(n):
                res = pending.popleft().result()
                if c + n_threads < n:
                    pending.append(pool.submit(fn, c + n_threads))
                yield res
        finally:
            for f in pending:
                f.cancel()
