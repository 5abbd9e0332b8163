"""OTTO JSONL <-> dataset directory: ``otto-prep convert`` and ``otto-prep export``.

``convert`` streams the input in blocks (a plain file through read-only memory-mapped windows
of the page cache, a gzip file through two read buffers filled by a read-ahead thread), parses
each block on all cores with the ``nogil`` Numba kernels of ``data_prep.fastparse`` and appends
the columns, from a write-behind thread, straight to the ``.npy`` files of a temporary
directory beside the output, which is renamed into place only when the whole input was read.
Memory stays at about one block plus its parsed columns, whatever the input size. Lines the byte-level fast path does not recognise
are decided by ``json.loads``, so every valid OTTO file gives exactly what a ``json.loads``
reference gives, and every invalid line is reported with its file name, line number and reason.

``export`` writes a dataset back as compact OTTO JSONL (``.gz`` by suffix), formatted in
parallel into byte buffers; ``convert`` then ``export`` of a compact OTTO file reproduces it
byte for byte.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import mmap
import os
import struct
import sys
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import fastparse as fp
from .atomic import atomic_directory, atomic_file, check_output
from .command import positive_int
from .flags import add_run_flags
from .dataset import ARRAYS, TYPE_CODES, TYPE_NAMES, Dataset, dataset_meta
from .parallel import check_threads, run_tasks
from .progress import Progress

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
DEFAULT_BLOCK_SIZE = 64 << 20
EXAMPLES_KEPT = 10       # bad-line examples kept in meta.json
EXAMPLES_PRINTED = 5     # bad-line examples printed on stderr
_NPY_HEADER_BYTES = 128  # fixed .npy v1.0 header size, rewritten with the final shape
PARALLEL_MIN_BYTES = 1 << 20  # smaller blocks are parsed on the calling thread


class ReaderError(ValueError):
    """Invalid OTTO input. The message names the file, the 1-based line number and the reason."""


class _BadRecord(Exception):
    """A line that is JSON but not a valid OTTO record (internal; carries the reason)."""


# =========================================================================== .npy streaming
def _npy_header(dtype: np.dtype, n: int) -> bytes:
    """A version 1.0 ``.npy`` header of exactly ``_NPY_HEADER_BYTES`` bytes for a 1-d array."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': (%d,), }" % (dtype.str, n)
    hlen = _NPY_HEADER_BYTES - 10
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", hlen) + (text.ljust(hlen - 1) + "\n").encode("latin1")


class _NpyAppender:
    """A 1-d ``.npy`` file written by appending; the header gets the final length on ``close``."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.n = 0
        self.fh = open(path, "wb", buffering=1 << 20)
        self.fh.write(_npy_header(self.dtype, 0))

    def append(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        self.fh.write(memoryview(arr).cast("B"))
        self.n += arr.shape[0]

    def read_back(self) -> np.ndarray:
        """Everything appended so far (a copy)."""
        self.fh.flush()
        return np.fromfile(self.path, dtype=self.dtype, count=self.n, offset=_NPY_HEADER_BYTES)

    def close(self) -> None:
        if self.fh.closed:
            return
        self.fh.seek(0)
        self.fh.write(_npy_header(self.dtype, self.n))
        self.fh.close()


# =========================================================================== the json.loads fallback
def _int_field(value, what: str, maximum: int) -> int:
    if isinstance(value, bool):
        raise _BadRecord(f"{what}: {json.dumps(value)} is a boolean, not an integer")
    if not isinstance(value, int):
        kind = {float: "a float", str: "a string", list: "a list", dict: "an object"}.get(type(value), "null" if value is None else type(value).__name__)
        raise _BadRecord(f"{what}: {json.dumps(value)[:40]} is {kind}, not an integer")
    if value < 0:
        raise _BadRecord(f"{what}: {value} is negative")
    if value > maximum:
        raise _BadRecord(f"{what}: {value} is out of range (max {maximum})")
    return value


def check_record(obj) -> tuple[int, list[int], list[int], list[int]]:
    """Validate one decoded OTTO record; return ``(session, aids, tss, type_codes)``.

    Raises ``_BadRecord`` with the reason. Extra keys are ignored.
    """
    if not isinstance(obj, dict):
        raise _BadRecord("not a JSON object")
    if "session" not in obj:
        raise _BadRecord("missing 'session'")
    session = _int_field(obj["session"], "session", INT64_MAX)
    if "events" not in obj:
        raise _BadRecord("missing 'events'")
    events = obj["events"]
    if not isinstance(events, list):
        raise _BadRecord("'events' is not a list")
    if not events:
        raise _BadRecord("empty 'events'")
    aids, tss, types = [], [], []
    for k, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise _BadRecord(f"events[{k}]: not a JSON object")
        for key in ("aid", "ts", "type"):
            if key not in ev:
                raise _BadRecord(f"events[{k}]: missing '{key}'")
        aids.append(_int_field(ev["aid"], f"events[{k}].aid", INT32_MAX))
        tss.append(_int_field(ev["ts"], f"events[{k}].ts", INT64_MAX))
        t = ev["type"]
        if not isinstance(t, str):
            raise _BadRecord(f"events[{k}].type: {json.dumps(t)[:40]} is not a string")
        code = TYPE_CODES.get(t)
        if code is None:
            raise _BadRecord(f"events[{k}].type: unknown event type {json.dumps(t)[:40]} (expected one of {', '.join(TYPE_NAMES)})")
        types.append(code)
    return session, aids, tss, types


def _decode_line(raw: bytes, is_last_unterminated: bool):
    """``(session, aids, tss, types)`` of one raw line, or raise ``_BadRecord``."""
    if not raw.strip():
        raise _BadRecord("empty line" if not raw or raw == b"\r" else "blank line")
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if is_last_unterminated:
            raise _BadRecord(f"truncated last line: not a complete JSON object ({exc})") from None
        raise _BadRecord(f"invalid JSON ({exc})") from None
    except RecursionError:
        raise _BadRecord("invalid JSON (nested too deeply)") from None
    return check_record(obj)


# =========================================================================== convert
class _Workspace:
    """Per-block arrays, reused across blocks and grown on demand."""

    def __init__(self):
        self.lines = 0
        self.events = 0
        self.pending = None  # the write job still reading these arrays

    def ensure_lines(self, n: int) -> None:
        if n <= self.lines:
            return
        n = max(n, 2 * self.lines, 1024)
        self.line_start = np.empty(n, np.int64)
        self.line_end = np.empty(n, np.int64)
        self.status = np.empty(n, np.uint8)
        self.sess = np.empty(n, np.int64)
        self.nev = np.empty(n, np.int64)
        self.evpos = np.empty(n, np.int64)
        self.lines = n

    def ensure_events(self, n: int) -> None:
        if n <= self.events:
            return
        n = max(n, 2 * self.events, 1024)
        self.ev_aid = np.empty(n, np.int32)
        self.ev_ts = np.empty(n, np.int64)
        self.ev_type = np.empty(n, np.uint8)
        self.events = n


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view: every input buffer (mapped file, read buffer, carried line) then has
    the same Numba type, so each kernel is compiled once."""
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


class _Converter:
    """State of one ``convert`` run: parses blocks, checks ids, queues the column writes.

    Writes run on one background thread (``writer``) while the next block is parsed; two
    workspaces alternate so a block's arrays are not reused before they are written.
    """

    def __init__(self, src_name: str, on_bad_line: str, n_threads: int, pool, max_lines: int, writer):
        self.src = src_name
        self.skip = on_bad_line == "skip"
        self.n_threads = n_threads
        self.pool = pool
        self.max_lines = max_lines
        self.writer = writer
        self.spaces = [_Workspace(), _Workspace()]
        self.turn = 0
        self.carry = np.empty(0, np.uint8)  # the incomplete line at the end of the last input piece
        self.lines_done = 0          # file lines fully processed
        self.n_sessions = 0
        self.n_events = 0
        self.counts = np.zeros(3, np.int64)
        self.n_bad = 0
        self.examples: list[tuple[int, str]] = []
        self.skipped_lines: list[np.ndarray] = []   # file line numbers of skipped lines
        self.dedup_state = np.array([-1, 1, 0], np.int64)  # last id, monotone, table size
        self.keys = np.full(1, -1, np.int64)
        self.vals = np.zeros(1, np.int64)
        self.out: dict[str, _NpyAppender] = {}

    # ---------------------------------------------------------------- input pieces
    def feed(self, data: np.ndarray, eof: bool) -> None:
        """Take the next piece of input bytes (``eof``: it is the last one, possibly empty)."""
        data = _read_only(data)
        n = data.shape[0]
        start = 0
        if self.carry.shape[0]:
            k = fp.find_newline(data, 0, n, False)
            if k < 0:
                self.carry = np.concatenate([self.carry, data])
                if eof:
                    self._lines(self.carry, True)
                    self.carry = np.empty(0, np.uint8)
                return
            head = np.concatenate([self.carry, data[:k + 1]])
            self.carry = np.empty(0, np.uint8)
            self._lines(head, eof and k + 1 == n)
            start = k + 1
        if eof:
            end = n
        else:
            end = fp.find_newline(data, start, n, True) + 1
            end = max(end, start)
        if end > start:
            self._lines(data[start:end], eof)
        if end < n:
            self.carry = data[end:].copy()

    def _lines(self, buf: np.ndarray, at_eof: bool) -> None:
        """Process ``buf``, which holds whole lines (the last may lack its newline only at EOF)."""
        buf = _read_only(buf)
        pos = 0
        n = buf.shape[0]
        while pos < n:
            pos += self.block(buf[pos:], at_eof)

    # ---------------------------------------------------------------- bad lines
    def _bad(self, line: int, reason: str) -> None:
        if not self.skip:
            raise ReaderError(f"{self.src}: line {line}: {reason}")
        self.n_bad += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append((line, reason))

    # ---------------------------------------------------------------- one block
    def block(self, buf: np.ndarray, at_eof: bool) -> int:
        """Parse and queue the writes of the first lines of ``buf`` (at most ``max_lines``).

        Returns the bytes consumed. ``at_eof``: ``buf`` ends the input.
        """
        n = buf.shape[0]
        # one chunk per parser thread; small blocks stay on this thread (a hand-off costs more)
        nc = self.n_threads if n >= PARALLEL_MIN_BYTES else 1
        bounds = fp.chunk_bounds(buf, n, nc)
        per_chunk = np.empty(nc, np.int64)
        words, woff = fp.word_view(buf)
        _split_run(self.pool, nc, lambda c0, c1: fp.count_lines(buf, words, woff, bounds, c0, c1, per_chunk))
        L = int(per_chunk.sum())
        if L > self.max_lines:  # many short lines: take a prefix with max_lines lines
            n = fp.nth_line_end(buf, n, self.max_lines)
            buf = buf[:n]
            at_eof = False
            bounds = fp.chunk_bounds(buf, n, nc)
            words, woff = fp.word_view(buf)
            _split_run(self.pool, nc, lambda c0, c1: fp.count_lines(buf, words, woff, bounds, c0, c1, per_chunk))
            L = int(per_chunk.sum())
        line_base = np.zeros(nc, np.int64)
        np.cumsum(per_chunk[:-1], out=line_base[1:])
        ws = self.spaces[self.turn]
        self.turn ^= 1
        if ws.pending is not None:
            ws.pending.result()
            ws.pending = None
        ws.ensure_lines(L)
        ws.ensure_events(n // fp.MIN_EVENT_BYTES + 1)
        status, sess, nev, evpos = ws.status[:L], ws.sess[:L], ws.nev[:L], ws.evpos[:L]
        stats = np.empty((nc, 5), np.int64)
        _split_run(self.pool, nc, lambda c0, c1: fp.parse_chunks(
            buf, bounds, c0, c1, line_base, ws.line_start, ws.line_end, status, sess, nev, evpos,
            ws.ev_aid, ws.ev_ts, ws.ev_type, stats))
        line0 = self.lines_done
        first_bad = -1
        bad: list[tuple[int, str]] = []  # skip mode: (line, reason) of this block's bad lines
        fb_aid: list[int] = []
        fb_ts: list[int] = []
        fb_type: list[int] = []
        if stats[:, 0].any():
            last_unterminated = at_eof and n > 0 and buf[n - 1] != 10
            for i in np.flatnonzero(status == fp.ST_FALLBACK).tolist():
                raw = buf[ws.line_start[i]:ws.line_end[i]].tobytes()
                try:
                    s, a, t, ty = _decode_line(raw, last_unterminated and i == L - 1)
                except _BadRecord as exc:
                    status[i] = fp.ST_BAD
                    if not self.skip:
                        first_bad = i
                        bad_reason = str(exc)
                        break
                    bad.append((line0 + i + 1, str(exc)))
                    continue
                status[i] = fp.ST_SLOW_OK
                sess[i] = s
                nev[i] = len(a)
                evpos[i] = len(fb_aid)
                fb_aid.extend(a)
                fb_ts.extend(t)
                fb_type.extend(ty)
            if first_bad >= 0:
                status[first_bad + 1:] = fp.ST_BAD  # nothing after the first error matters
        n_dup = self._dedup(status, sess, line0, bad)
        if first_bad >= 0:
            raise ReaderError(f"{self.src}: line {line0 + first_bad + 1}: {bad_reason}")
        for line, reason in sorted(bad):
            self._bad(line, reason)
        clean = not stats[:, 0].any() and n_dup == 0
        if clean:  # every line took the fast path: write the chunks' event regions as they are
            kept, kept_ev = L, int(stats[:, 1].sum())
            counts = stats[:, 2:5].sum(axis=0)
            cols = {"session_ids": [sess], "offsets": [], "aid": [], "ts": [], "type": []}
            for t in range(nc):
                a, k = int(bounds[t]) // fp.MIN_EVENT_BYTES, int(stats[t, 1])
                if k:
                    cols["aid"].append(ws.ev_aid[a:a + k])
                    cols["ts"].append(ws.ev_ts[a:a + k])
                    cols["type"].append(ws.ev_type[a:a + k])
            lens = nev
        else:
            skipped = np.flatnonzero(status >= fp.ST_BAD)
            if skipped.size:
                self.skipped_lines.append(skipped + (line0 + 1))
            kept = int(L - skipped.size)
            kept_ev = int(nev[(status == fp.ST_FAST) | (status == fp.ST_SLOW_OK)].sum())
            out_sess = np.empty(kept, np.int64)
            lens = np.empty(kept, np.int64)
            out_aid = np.empty(kept_ev, np.int32)
            out_ts = np.empty(kept_ev, np.int64)
            out_type = np.empty(kept_ev, np.uint8)
            fp.compact_block(status, sess, nev, evpos, ws.ev_aid, ws.ev_ts, ws.ev_type,
                             np.array(fb_aid, np.int32), np.array(fb_ts, np.int64), np.array(fb_type, np.uint8),
                             out_sess, lens, out_aid, out_ts, out_type)
            counts = np.bincount(out_type, minlength=3)[:3]
            cols = {"session_ids": [out_sess], "offsets": [], "aid": [out_aid], "ts": [out_ts], "type": [out_type]}
        offs = np.cumsum(lens)
        offs += self.n_events
        cols["offsets"].append(offs)
        ws.pending = self.writer.submit(self._write, cols)
        self.counts += counts
        self.n_sessions += kept
        self.n_events += kept_ev
        self.lines_done += L
        return n

    def _write(self, cols: dict[str, list[np.ndarray]]) -> None:
        for key, arrays in cols.items():
            for arr in arrays:
                self.out[key].append(arr)

    def drain(self) -> None:
        """Wait for every queued write."""
        for ws in self.spaces:
            if ws.pending is not None:
                ws.pending.result()
                ws.pending = None

    # ---------------------------------------------------------------- duplicate session ids
    def _dedup(self, status, sess, line0: int, bad: list) -> int:
        """Check the block's kept lines against every earlier id; return how many were duplicates.

        In skip mode each duplicate is marked ``ST_DUP`` and appended to ``bad``."""
        i = 0
        n_dup = 0
        while True:
            code, i, first_line = fp.dedup_scan(status, sess, line0, i, self.dedup_state, self.keys, self.vals)
            if code == 0:
                return n_dup
            if code == 1:       # ids stopped increasing: index every id seen so far
                self._build_table(status, sess, line0, i)
            elif code == 2:     # table half full: double it
                old_k, old_v = self.keys, self.vals
                used = old_k != -1
                self._new_table(2 * old_k.shape[0])
                fp.hash_insert_all(self.keys, self.vals, old_k[used], old_v[used])
            else:               # duplicate at line i
                line = line0 + i + 1
                reason = f"duplicate session id {int(sess[i])} (first seen on line {first_line})"
                if not self.skip:  # lines from the first invalid one on are already excluded
                    raise ReaderError(f"{self.src}: line {line}: {reason}")
                status[i] = fp.ST_DUP
                bad.append((line, reason))
                n_dup += 1
                i += 1

    def _new_table(self, cap: int) -> None:
        self.keys = np.full(cap, -1, np.int64)
        self.vals = np.zeros(cap, np.int64)

    def _build_table(self, status, sess, line0: int, upto: int) -> None:
        self.drain()
        prev_ids = self.out["session_ids"].read_back()
        prev_lines = np.arange(1, self.lines_done + 1, dtype=np.int64)
        if self.skipped_lines:
            prev_lines = np.setdiff1d(prev_lines, np.concatenate(self.skipped_lines), assume_unique=True)
        here = np.flatnonzero((status[:upto] == fp.ST_FAST) | (status[:upto] == fp.ST_SLOW_OK))
        ids = np.concatenate([prev_ids, sess[here]])
        lines = np.concatenate([prev_lines, here + (line0 + 1)])
        cap = 16
        while cap < 4 * (ids.shape[0] + 1):
            cap *= 2
        self._new_table(cap)
        fp.hash_insert_all(self.keys, self.vals, ids, lines)
        self.dedup_state[1] = 0
        self.dedup_state[2] = ids.shape[0]


def _split_run(pool, n: int, call) -> None:
    """Run ``call(lo, hi)`` over ``range(n)``: one range per item on ``pool`` when there is one.

    The kernels called are ``nogil``, so the ranges run in parallel on the pool's threads.
    """
    if pool is None or n <= 1:
        call(0, n)
        return
    run_tasks(call, [(k, k + 1) for k in range(n)], pool)


def _check_threads(threads) -> int:
    return check_threads(threads, "threads")


class _Inline:
    """An executor that runs each job at once (small blocks: thread hand-offs cost more than they save)."""

    def submit(self, fn, *args):
        fut = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - re-raised by .result(), as from a thread
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def _open_input(path: Path):
    """``(stream, raw)``: a binary stream of the decompressed bytes and the raw file (for progress)."""
    raw = open(path, "rb", buffering=0)
    try:
        magic = raw.read(2)
        raw.seek(0)
    except BaseException:
        raw.close()
        raise
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def _readinto_full(stream, buf: np.ndarray, name: str) -> int:
    """Fill ``buf`` from ``stream`` as far as possible; fewer bytes only at end of input.

    A damaged gzip stream raises ``ReaderError`` naming the file.
    """
    mv = memoryview(buf)
    got = 0
    try:
        while got < len(mv):
            k = stream.readinto(mv[got:])
            if not k:
                break
            got += k
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ReaderError(f"{name}: damaged gzip stream ({exc})") from None
    return got


def _feed_stream(stream, raw, conv: _Converter, block_size: int, read_pool, progress: Progress) -> None:
    """Feed a stream (gzip) in ``block_size`` pieces; the next piece is read while one is parsed."""
    bufs = [np.empty(block_size, np.uint8), np.empty(block_size, np.uint8)]
    k = 0
    reading = read_pool.submit(_readinto_full, stream, bufs[0], conv.src)
    while True:
        got = reading.result()
        eof = got < block_size
        if not eof:
            reading = read_pool.submit(_readinto_full, stream, bufs[(k + 1) % 2], conv.src)
        conv.feed(bufs[k % 2][:got], eof)
        if progress.due():
            pos = raw.tell()
            progress.update(pos, f"{conv.n_events:,} events")
        if eof:
            return
        k += 1


def _feed_mapped(raw, size: int, conv: _Converter, block_size: int, progress: Progress) -> None:
    """Feed a plain file through read-only memory maps of about ``block_size`` bytes each.

    The parser reads the page cache in place (no copy into a buffer); each window is unmapped
    once parsed, so resident memory stays at one window whatever the file size.
    """
    gran = mmap.ALLOCATIONGRANULARITY
    pos = 0
    while pos < size:
        start = pos - pos % gran
        length = min(size - start, block_size + (pos - start))
        mm = mmap.mmap(raw.fileno(), length, access=mmap.ACCESS_READ, offset=start)
        try:
            if hasattr(mm, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
                mm.madvise(mmap.MADV_WILLNEED)
            view = np.frombuffer(mm, np.uint8)[pos - start:]
            end = pos + view.shape[0]
            conv.feed(view, end >= size)
            del view
        finally:
            try:
                mm.close()
            except BufferError:  # a view is still referenced (an exception is propagating): unmapped later
                pass
        pos = end
        if progress.due():
            progress.update(pos, f"{conv.n_events:,} events")


def convert(in_path: str | os.PathLike, out_dir: str | os.PathLike, *, block_size: int = DEFAULT_BLOCK_SIZE,
            on_bad_line: str = "error", threads: int | None = None, quiet: bool = False,
            overwrite: bool = False) -> Path:
    """Convert an OTTO JSONL file (plain or gzip) into a dataset directory; return its path.

    ``block_size``: bytes read and parsed per step (memory is about one block plus its
    columns, two blocks for gzip; a line longer than a block is carried whole). ``on_bad_line``:
    ``"error"`` stops at the first invalid line with a ``ReaderError`` naming the file, line
    number and reason, leaving no output; ``"skip"`` drops invalid lines and later duplicates
    of a session id, counting them in ``meta.json`` (``bad_lines_skipped``, and the first
    ``EXAMPLES_KEPT`` as ``bad_line_examples``) and on stderr. ``threads``: parser threads
    (default: the CPUs this process may use). An empty file, or one without a valid record, is
    always an error. Reading, parsing and writing overlap (read-ahead and write-behind threads).
    """
    in_path = Path(in_path)
    out_dir = Path(out_dir)
    if on_bad_line not in ("error", "skip"):
        raise ValueError(f"on_bad_line: must be 'error' or 'skip', got {on_bad_line!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size: must be a positive integer, got {block_size!r}")
    if in_path.is_dir():
        raise IsADirectoryError(f"{in_path}: is a directory, not an OTTO JSONL file")
    check_output(out_dir, (in_path,))
    size = in_path.stat().st_size
    name = str(in_path)
    n_threads = _check_threads(threads)
    with contextlib.ExitStack() as stack:
        stream, raw = _open_input(in_path)
        stack.callback(raw.close)
        if stream is not raw:
            stack.callback(stream.close)
        tmp = stack.enter_context(atomic_directory(out_dir, overwrite=overwrite, inputs=(in_path,)))
        columns = {}
        for key, dtype in ARRAYS.items():
            columns[key] = _NpyAppender(tmp / f"{key}.npy", dtype)
            stack.callback(columns[key].close)
        columns["offsets"].append(np.zeros(1, np.int64))
        # one thread reads ahead, one writes behind (writes stay in order on a single thread);
        # registered after the files, the pools are shut down before the files close (LIFO)
        threaded = block_size >= PARALLEL_MIN_BYTES
        read_pool = ThreadPoolExecutor(1, thread_name_prefix="otto-prep-read") if threaded else _Inline()
        stack.callback(read_pool.shutdown, wait=True, cancel_futures=True)
        write_pool = ThreadPoolExecutor(1, thread_name_prefix="otto-prep-write") if threaded else _Inline()
        stack.callback(write_pool.shutdown, wait=True, cancel_futures=True)
        parse_pool = None
        if threaded and n_threads > 1:
            parse_pool = ThreadPoolExecutor(n_threads, thread_name_prefix="otto-prep-parse")
            stack.callback(parse_pool.shutdown, wait=True, cancel_futures=True)
        conv = _Converter(name, on_bad_line, n_threads, parse_pool, max(block_size // 32, 64), write_pool)
        conv.out = columns
        progress = Progress(f"convert {in_path.name}", size, unit="MB", scale=1e-6, quiet=quiet)
        if stream is raw and size > 0 and hasattr(mmap, "mmap"):
            _feed_mapped(raw, size, conv, block_size, progress)
        else:
            _feed_stream(stream, raw, conv, block_size, read_pool, progress)
        conv.drain()
        if conv.n_sessions == 0:
            if conv.lines_done == 0:
                raise ReaderError(f"{name}: line 1: empty file")
            raise ReaderError(f"{name}: no valid OTTO record (all {conv.lines_done} lines were skipped)")
        for app in conv.out.values():
            app.close()
        examples = [{"line": ln, "reason": r} for ln, r in conv.examples]
        meta = dataset_meta(conv.n_sessions, conv.n_events, conv.counts, source={"name": in_path.name, "size": size},
                            bad_lines_skipped=conv.n_bad, extra={"bad_line_examples": examples} if examples else None)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    progress.close(size, f"{conv.n_events:,} events")
    if conv.n_bad and not quiet:
        ex = "; ".join(f"line {ln}: {r}" for ln, r in conv.examples[:EXAMPLES_PRINTED])
        more = ", ..." if conv.n_bad > EXAMPLES_PRINTED else ""
        print(f"convert {in_path.name}: skipped {conv.n_bad} bad line(s): {ex}{more}", file=sys.stderr)
    return out_dir


# =========================================================================== export
def export(dataset: Dataset | str | os.PathLike, out_path: str | os.PathLike, *, quiet: bool = False,
           batch_events: int = 1 << 21, threads: int | None = None) -> Path:
    """Write a dataset as compact OTTO JSONL (gzip when ``out_path`` ends in ``.gz``); return the path.

    Sessions are formatted ``batch_events`` events at a time into a byte buffer by Numba
    kernels, so memory stays bounded for any dataset size. A session without events, or a
    negative id, aid or ts, cannot be written as a valid OTTO record and raises ``ValueError``.
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    n_threads = _check_threads(threads)
    if isinstance(batch_events, bool) or not isinstance(batch_events, int) or batch_events < 1:
        raise ValueError(f"batch_events: must be a positive integer, got {batch_events!r}")
    out_path = Path(out_path)
    check_output(out_path, (ds.path,))
    where = str(ds.path) if ds.path is not None else "<in-memory dataset>"
    S = ds.n_sessions
    offsets = np.ascontiguousarray(ds.offsets)
    progress = Progress(f"export {out_path.name}", ds.n_events, unit="events", quiet=quiet)
    buf = np.empty(0, np.uint8)
    written = 0
    with contextlib.ExitStack() as stack:
        pool = None
        if n_threads > 1 and ds.n_events >= batch_events // 4:
            pool = ThreadPoolExecutor(n_threads, thread_name_prefix="otto-prep-export")
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        fh = stack.enter_context(atomic_file(out_path, "wb", inputs=(ds.path,)))
        sink = gzip.GzipFile(filename="", fileobj=fh, mode="wb", compresslevel=6, mtime=0) if out_path.name.endswith(".gz") else fh
        s0 = 0
        while s0 < S:
            s1 = int(np.searchsorted(offsets, offsets[s0] + batch_events, side="right")) - 1
            s1 = min(max(s1, s0 + 1), S)
            R = s1 - s0
            sizes = np.empty(R, np.int64)
            parts = min(n_threads, R)
            cut = [R * k // parts for k in range(parts + 1)]
            _split_run(pool, parts, lambda a, b: fp.export_sizes(ds.session_ids, offsets, ds.aid, ds.ts, ds.type,
                                                                 s0, cut[a], cut[b], sizes))  # noqa: B023 - run now
            if sizes.shape[0] and sizes.min() < 0:
                r = s0 + int(np.argmax(sizes < 0))
                why = ("has no events" if sizes[r - s0] == -2
                       else "has a negative session id, aid or ts, or a type code above 2")
                raise ValueError(f"{where}: session row {r} (id {int(ds.session_ids[r])}) {why}; it cannot be written as an OTTO record")
            pos = np.zeros(s1 - s0 + 1, np.int64)
            np.cumsum(sizes, out=pos[1:])
            total = int(pos[-1])
            if buf.shape[0] < total:
                buf = np.empty(max(total, 2 * buf.shape[0]), np.uint8)
            _split_run(pool, parts, lambda a, b: fp.export_fill(ds.session_ids, offsets, ds.aid, ds.ts, ds.type,
                                                                s0, cut[a], cut[b], pos, buf))  # noqa: B023 - run now
            sink.write(memoryview(buf[:total]))
            written += total
            progress.update(int(offsets[s1]), f"{written / 1e6:,.0f} MB written")
            s0 = s1
        if sink is not fh:
            sink.close()
    progress.close(ds.n_events, f"{written / 1e6:,.0f} MB written")
    return out_path


# =========================================================================== CLI


def _cmd_convert(args) -> int:
    out = convert(args.input, args.output, block_size=args.block_size, on_bad_line=args.on_bad_line,
                  threads=args.threads, quiet=args.quiet, overwrite=args.overwrite)
    if not args.quiet:
        meta = json.loads((Path(out) / "meta.json").read_text(encoding="utf-8"))
        print(f"wrote {out}: {meta['n_sessions']:,} sessions, {meta['n_events']:,} events "
              f"({', '.join(f'{k} {v:,}' for k, v in meta['counts'].items())}), "
              f"{meta['bad_lines_skipped']} bad lines skipped", file=sys.stderr)
    return 0


def _cmd_export(args) -> int:
    out = export(args.dataset, args.output, quiet=args.quiet, threads=args.threads)
    if not args.quiet:
        print(f"wrote {out}: {out.stat().st_size:,} bytes", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add the ``convert`` and ``export`` subcommands."""
    p = subparsers.add_parser(
        "convert", help="OTTO JSONL (or .jsonl.gz) -> dataset directory",
        description="Read an OTTO JSONL file (one {\"session\":..,\"events\":[{\"aid\":..,\"ts\":..,\"type\":..}]} "
                    "object per line; gzip input is detected automatically) and write the columnar dataset "
                    "directory (session_ids/offsets/aid/ts/type .npy + meta.json). The output appears only when "
                    "the whole input was read; an error leaves nothing behind.")
    p.add_argument("input", metavar="IN.jsonl", help="input file, plain JSONL or gzip-compressed (.jsonl.gz)")
    p.add_argument("output", metavar="OUT_DIR", help="dataset directory to create (must not exist unless --overwrite)")
    p.add_argument("--block-size", type=positive_int, default=DEFAULT_BLOCK_SIZE, metavar="BYTES",
                   help="bytes read and parsed per step; peak memory is about this plus its parsed columns "
                        f"(default {DEFAULT_BLOCK_SIZE} = 64 MiB; a line longer than a block is carried whole)")
    p.add_argument("--on-bad-line", choices=("error", "skip"), default="error",
                   help="'error' (default): stop at the first invalid line, naming its line number and reason, "
                        "and write nothing; 'skip': drop invalid lines and repeated session ids (the later line), "
                        "count them in meta.json and report the first few on stderr")
    add_run_flags(p, threads="parser threads", overwrite="OUT_DIR", quiet=True)
    p.set_defaults(func=_cmd_convert)

    q = subparsers.add_parser(
        "export", help="dataset directory -> compact OTTO JSONL (.gz by suffix)",
        description="Write a dataset directory back as compact OTTO JSONL, one session per line in row order "
                    "with \\n line endings; gzip-compressed when OUT ends in .gz. Converting a compact OTTO file "
                    "and exporting it reproduces the file byte for byte.")
    q.add_argument("dataset", metavar="DATASET", help="dataset directory written by 'otto-prep convert'")
    q.add_argument("output", metavar="OUT.jsonl", help="output file (replaced atomically if it exists); .gz suffix compresses")
    add_run_flags(q, threads="formatting threads", quiet=True)
    q.set_defaults(func=_cmd_export)
