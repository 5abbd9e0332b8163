"""Numba byte-level kernels for reading and writing compact OTTO JSONL.

The reader (``data_prep.reader``) hands these kernels one block of raw bytes at a time. A block
is split at newlines into chunks; the caller runs disjoint chunk ranges on its own threads
(every kernel is ``nogil``), so one compiled kernel serves small and large blocks alike.
Each line is tried against the exact compact OTTO shape::

    {"session":S,"events":[{"aid":A,"ts":T,"type":"clicks"},...]}      (optional "\\r" before "\\n")

Anything else (other whitespace, key order, extra keys, escapes, leading zeros, minus signs,
numbers too long for the fast path, ...) is flagged for the ``json.loads`` fallback, which
decides whether the line is a valid OTTO record or a bad line. The fast path therefore accepts
a strict subset of JSON and every field it accepts is exact.

Conventions for every kernel below: ``buf`` is a C-contiguous, read-only ``uint8`` array
holding the block (the reader always passes read-only views, so each kernel compiles once);
byte positions are ``int64`` indices into it; lines never include their ``"\\n"``. Degenerate
inputs (empty blocks, empty chunks, a final line without ``"\\n"``, lines of only ``"\\r"``)
are handled by every kernel.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# Minimum bytes one event occupies in a fast-path line: {"aid":0,"ts":0,"type":"carts"}
MIN_EVENT_BYTES = 31

INT32_MAX = 2147483647

# line status codes (shared with the reader)
ST_FAST = 0      # parsed by the fast path; events in the main event region
ST_FALLBACK = 1  # not recognised by the fast path; to be decided by json.loads
ST_SLOW_OK = 2   # accepted by the fallback; events in the fallback arrays
ST_BAD = 3       # invalid line (skipped in skip mode)
ST_DUP = 4       # duplicate session id (skipped in skip mode)

_NL = 10
_CR = 13

_LIT_SESSION = np.frombuffer(b'{"session":', dtype=np.uint8).copy()
_LIT_EVENTS = np.frombuffer(b',"events":[', dtype=np.uint8).copy()
_LIT_AID = np.frombuffer(b'{"aid":', dtype=np.uint8).copy()
_LIT_TS = np.frombuffer(b',"ts":', dtype=np.uint8).copy()
_LIT_TYPE = np.frombuffer(b',"type":"', dtype=np.uint8).copy()
_LIT_CLICKS = np.frombuffer(b'clicks"}', dtype=np.uint8).copy()
_LIT_CARTS = np.frombuffer(b'carts"}', dtype=np.uint8).copy()
_LIT_ORDERS = np.frombuffer(b'orders"}', dtype=np.uint8).copy()
_LIT_END = np.frombuffer(b']}\n', dtype=np.uint8).copy()
_TYPE_TEXT = np.frombuffer(b'clicks\x00carts\x00\x00orders\x00', dtype=np.uint8).copy()  # 7 bytes per type
_TYPE_LEN = np.array([6, 5, 6], dtype=np.int64)


# --------------------------------------------------------------------------- helpers
@njit(cache=True, nogil=True)
def _lit(buf, p, end, lit):
    """True when ``buf[p:p+len(lit)] == lit`` and it lies before ``end``."""
    m = lit.shape[0]
    if p + m > end:
        return False
    for i in range(m):
        if buf[p + i] != lit[i]:
            return False
    return True


@njit(cache=True, nogil=True)
def _uint(buf, p, end, max_digits):
    """Parse a JSON non-negative integer at ``p``: returns ``(value, new_p)``, ``new_p = -1`` on failure.

    At most ``max_digits`` digits (18 keeps int64 exact); a leading ``0`` ends the number, so
    ``01`` fails at the next literal. Longer numbers go to the fallback.
    """
    q = p
    v = np.int64(0)
    while q < end:
        c = buf[q]
        if c < 48 or c > 57:
            break
        v = v * 10 + (c - 48)
        q += 1
        if c == 48 and q == p + 1:
            break
    n = q - p
    if n == 0 or n > max_digits:
        return v, -1
    return v, q


@njit(cache=True, nogil=True, inline="always")
def parse_uint(buf, p, end):
    """Parse the decimal digits at ``buf[p:end]`` (all of them) as an int64: ``(value, q)``, ``q``
    the position of the first non-digit (or ``end``); ``q = -1`` when there is no digit or the
    value exceeds ``2**63 - 1``.

    The project's one general integer parser (submission CSV, word2vec keys); leading zeros are
    allowed, canonical-form rules are the caller's. The JSONL fast path uses ``_uint`` above,
    whose digit limit sends long numbers to the ``json.loads`` fallback."""
    q = p
    v = np.uint64(0)
    while q < end:
        c = buf[q]
        if c < 48 or c > 57:
            break
        v = v * np.uint64(10) + np.uint64(c - 48)
        q += 1
    if q == p:
        return np.int64(0), -1
    if q - p >= 19:  # rare: count the significant digits (19 fit uint64, so one comparison settles int64)
        s = p
        while s < q - 1 and buf[s] == 48:
            s += 1
        if q - s > 19 or (q - s == 19 and v > np.uint64(9223372036854775807)):
            return np.int64(0), -1
    return np.int64(v), q


@njit(cache=True, nogil=True)
def _parse_line(buf, p, end, ev, ev_aid, ev_ts, ev_type):
    """Fast-path parse of the line starting at ``p`` (no later than chunk end ``end``).

    Writes the events to ``ev_aid/ev_ts/ev_type[ev:]``. Returns ``(ok, session, n_events, q)``
    where ``q`` is the position of the line's terminating ``"\\n"`` (or ``end``) when ``ok``,
    and the position where recognition stopped otherwise (always <= that newline).
    """
    if not _lit(buf, p, end, _LIT_SESSION):
        return False, 0, 0, p
    sess, q = _uint(buf, p + 11, end, 18)
    if q < 0:
        return False, 0, 0, p
    if not _lit(buf, q, end, _LIT_EVENTS):
        return False, 0, 0, q
    q += 11
    n = 0
    while True:
        if not _lit(buf, q, end, _LIT_AID):
            return False, 0, 0, q
        a, q = _uint(buf, q + 7, end, 10)
        if q < 0 or a > INT32_MAX:
            return False, 0, 0, p
        if not _lit(buf, q, end, _LIT_TS):
            return False, 0, 0, q
        t, q = _uint(buf, q + 6, end, 18)
        if q < 0:
            return False, 0, 0, p
        if not _lit(buf, q, end, _LIT_TYPE):
            return False, 0, 0, q
        q += 9
        if q >= end:
            return False, 0, 0, q
        c = buf[q]
        if c == 99 and _lit(buf, q, end, _LIT_CLICKS):  # 'c'
            code = 0
            q += 8
        elif c == 99 and _lit(buf, q, end, _LIT_CARTS):
            code = 1
            q += 7
        elif c == 111 and _lit(buf, q, end, _LIT_ORDERS):  # 'o'
            code = 2
            q += 8
        else:
            return False, 0, 0, q
        ev_aid[ev + n] = a
        ev_ts[ev + n] = t
        ev_type[ev + n] = code
        n += 1
        if q >= end:
            return False, 0, 0, q
        c = buf[q]
        if c == 44:  # ','
            q += 1
            continue
        if c == 93:  # ']'
            break
        return False, 0, 0, q
    if q + 1 >= end or buf[q + 1] != 125:  # '}'
        return False, 0, 0, q
    q += 2
    if q < end and buf[q] == _CR:
        q += 1
    if q < end and buf[q] != _NL:
        return False, 0, 0, q
    return True, sess, n, q


# --------------------------------------------------------------------------- reader kernels
@njit(cache=True, nogil=True)
def chunk_bounds(buf, n, n_chunks):
    """Split ``buf[:n]`` into ``n_chunks`` byte ranges that start at line starts.

    Returns ``bounds`` int64 [n_chunks+1]: chunk ``t`` is ``bounds[t]:bounds[t+1]``; bounds are
    non-decreasing, ``bounds[0] = 0``, ``bounds[-1] = n``; empty chunks are allowed (tiny blocks).
    """
    bounds = np.empty(n_chunks + 1, dtype=np.int64)
    bounds[0] = 0
    for t in range(1, n_chunks):
        p = max((n * t) // n_chunks, bounds[t - 1])
        while 0 < p < n and buf[p - 1] != _NL:
            p += 1
        bounds[t] = p
    bounds[n_chunks] = n
    return bounds


_M7F = np.uint64(0x7F7F7F7F7F7F7F7F)
_M80 = np.uint64(0x8080808080808080)
_M01 = np.uint64(0x0101010101010101)
_NL8 = np.uint64(0x0A0A0A0A0A0A0A0A)


def word_view(buf: np.ndarray) -> tuple[np.ndarray, int]:
    """``(words, woff)``: the 8-byte-aligned middle of ``buf`` as uint64, starting at byte ``woff``.

    ``words[k]`` holds ``buf[woff + 8k : woff + 8k + 8]`` (little-endian); it may be empty.
    """
    n = buf.shape[0]
    woff = min((-buf.ctypes.data) % 8, n)
    nw = (n - woff) // 8
    return buf[woff:woff + 8 * nw].view(np.uint64), woff


@njit(cache=True, nogil=True)
def count_lines(buf, words, woff, bounds, c0, c1, out):
    """``out[t]`` = lines in chunk ``t`` for ``c0 <= t < c1``: the chunk's ``"\\n"`` count, plus
    one for a final line without ``"\\n"``. ``bounds`` from ``chunk_bounds``; ``out`` int64 [C];
    ``words``/``woff`` from ``word_view(buf)``.

    Whole aligned words are counted 8 bytes at a time (SWAR): with ``y = w ^ 0x0A..0A`` a byte
    of ``w`` is a newline iff the high bit of ``((y & 0x7F..7F) + 0x7F..7F) | y`` is clear in
    it; the sum cannot carry across bytes, so the count is exact. Chunk ranges are
    independent, so callers run disjoint ranges on several threads (nogil).
    """
    sh7 = np.uint64(7)
    sh56 = np.uint64(56)
    nw = words.shape[0]
    for t in range(c0, c1):
        b0, b1 = bounds[t], bounds[t + 1]
        c = 0
        i = b0
        while i < b1 and (i < woff or (i - woff) % 8 != 0 or (i - woff) // 8 >= nw):
            c += buf[i] == _NL
            i += 1
        w0 = (i - woff) // 8
        w = w0
        wend = min((b1 - woff) // 8, nw)
        acc = np.uint64(0)
        while w < wend:
            y = words[w] ^ _NL8
            z = (~(((y & _M7F) + _M7F) | y) & _M80) >> sh7
            acc += (z * _M01) >> sh56
            w += 1
        c += np.int64(acc)
        if w > w0:
            i = woff + 8 * w
        while i < b1:
            c += buf[i] == _NL
            i += 1
        if b1 > b0 and buf[b1 - 1] != _NL:
            c += 1
        out[t] = c


@njit(cache=True, nogil=True)
def find_newline(buf, start, end, last):
    """Index of the first (``last`` false) or last ``"\\n"`` in ``buf[start:end]``, or -1."""
    if last:
        for i in range(end - 1, start - 1, -1):
            if buf[i] == _NL:
                return i
    else:
        for i in range(start, end):
            if buf[i] == _NL:
                return i
    return -1


@njit(cache=True, nogil=True)
def nth_line_end(buf, n, k):
    """Position just after the ``k``-th ``"\\n"`` in ``buf[:n]`` (k >= 1), or ``n`` if there are fewer."""
    c = 0
    for i in range(n):
        if buf[i] == _NL:
            c += 1
            if c == k:
                return i + 1
    return n


@njit(cache=True, nogil=True)
def parse_chunks(buf, bounds, c0, c1, line_base, line_start, line_end, status, sess, nev, evpos,
                 ev_aid, ev_ts, ev_type, stats):
    """Parse every line of chunks ``c0 <= t < c1`` (disjoint ranges may run on several threads).

    ``bounds`` [C+1] from ``chunk_bounds``; ``line_base`` [C] the index of each chunk's first
    line (exclusive prefix sum of ``count_lines``). Per line ``i`` (int64 arrays of length L)
    it fills ``line_start[i]``, ``line_end[i]`` (exclusive, without the ``"\\n"``),
    ``status[i]`` (``ST_FAST`` or ``ST_FALLBACK``), and for fast lines ``sess[i]``,
    ``nev[i]`` and ``evpos[i]``: the line's events are ``ev_*[evpos[i]:evpos[i]+nev[i]]``.
    The event region of chunk ``t`` starts at ``bounds[t] // MIN_EVENT_BYTES``, so
    ``ev_*`` need ``bounds[-1] // MIN_EVENT_BYTES + 1`` slots (int32 / int64 / uint8).
    Fills row ``t`` of ``stats`` int64 [C, 5]: fallback lines, fast-path events, and the
    fast-path events of each type (clicks, carts, orders); chunk ``t``'s events fill
    ``ev_*[bounds[t] // MIN_EVENT_BYTES:][:stats[t, 1]]`` in line order.
    """
    for t in range(c0, c1):
        p = bounds[t]
        end = bounds[t + 1]
        li = line_base[t]
        ev0 = p // MIN_EVENT_BYTES
        ev = ev0
        nf = 0
        while p < end:
            ok, s, k, q = _parse_line(buf, p, end, ev, ev_aid, ev_ts, ev_type)
            line_start[li] = p
            if ok:
                status[li] = ST_FAST
                sess[li] = s
                nev[li] = k
                evpos[li] = ev
                ev += k
            else:
                while q < end and buf[q] != _NL:
                    q += 1
                status[li] = ST_FALLBACK
                sess[li] = -1
                nev[li] = 0
                evpos[li] = 0
                nf += 1
            line_end[li] = q
            li += 1
            p = q + 1
        stats[t, 0] = nf
        stats[t, 1] = ev - ev0
        stats[t, 2] = 0
        stats[t, 3] = 0
        stats[t, 4] = 0
        for j in range(ev0, ev):
            stats[t, 2 + ev_type[j]] += 1


@njit(cache=True, nogil=True)
def compact_block(status, sess, nev, evpos, ev_aid, ev_ts, ev_type, fb_aid, fb_ts, fb_type,
                  out_sess, out_len, out_aid, out_ts, out_type):
    """Gather the kept lines (status ``ST_FAST`` or ``ST_SLOW_OK``) in line order.

    Fast lines read ``ev_*[evpos:evpos+nev]``, fallback lines ``fb_*[evpos:evpos+nev]``.
    ``out_sess``/``out_len`` (int64, one per kept line) and ``out_aid/ts/type`` (one per kept
    event) must be sized exactly. Returns ``(kept_lines, kept_events)``.
    """
    r = 0
    e = 0
    for i in range(status.shape[0]):
        st = status[i]
        if st != ST_FAST and st != ST_SLOW_OK:
            continue
        k = nev[i]
        j = evpos[i]
        out_sess[r] = sess[i]
        out_len[r] = k
        r += 1
        if st == ST_FAST:
            for m in range(k):
                out_aid[e + m] = ev_aid[j + m]
                out_ts[e + m] = ev_ts[j + m]
                out_type[e + m] = ev_type[j + m]
        else:
            for m in range(k):
                out_aid[e + m] = fb_aid[j + m]
                out_ts[e + m] = fb_ts[j + m]
                out_type[e + m] = fb_type[j + m]
        e += k
    return r, e


# --------------------------------------------------------------------------- duplicate session ids
@njit(cache=True, nogil=True)
def _slot(x, mask):
    """Table slot of id ``x`` (int64 >= 0): Fibonacci hashing, ``(x * 0x9E37..) ^ >>29``, masked to
    ``mask = capacity - 1`` (a power of two minus one), so the result is in ``[0, mask]``."""
    h = x * np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15 as int64; wrapping multiply
    h ^= h >> 29
    return h & mask


@njit(cache=True, nogil=True)
def hash_insert_all(keys, vals, ids, lines):
    """Insert ``ids[i] -> lines[i]`` into the open-addressing table ``keys``/``vals``.

    ``keys`` int64 [cap] (cap a power of two, empty slots hold -1; ids are >= 0), ``vals``
    int64 [cap]. ``ids`` must be distinct and the table must have room (load <= 1/2 after).
    """
    mask = keys.shape[0] - 1
    for i in range(ids.shape[0]):
        h = _slot(ids[i], mask)
        while keys[h] != -1:
            h = (h + 1) & mask
        keys[h] = ids[i]
        vals[h] = lines[i]


@njit(cache=True, nogil=True)
def dedup_scan(status, sess, line0, start, state, keys, vals):
    """Check kept lines ``start..`` for session ids seen before (in this or earlier blocks).

    ``status``/``sess`` are the block's per-line arrays; line ``i`` of the block is file line
    ``line0 + i + 1``. ``keys``/``vals`` is the table of ``hash_insert_all`` (id -> file line).
    ``state`` int64 [3] = (last id, monotone flag, table size). While ids arrive strictly
    increasing (``monotone = 1``) no table is kept: a new id is fresh when it exceeds the last.
    Returns ``(code, i, first_line)``:
    code 0: done; 1: ids stopped increasing at line ``i`` (the caller builds the table from all
    earlier ids, sets ``monotone = 0`` and resumes at ``i``); 2: the table is half full at ``i``
    (the caller grows it and resumes at ``i``); 3: line ``i`` repeats the id first seen on file
    line ``first_line`` (the caller marks it and resumes at ``i + 1``).
    """
    last = state[0]
    mono = state[1]
    size = state[2]
    cap = keys.shape[0]
    mask = cap - 1
    for i in range(start, status.shape[0]):
        st = status[i]
        if st != ST_FAST and st != ST_SLOW_OK:
            continue
        x = sess[i]
        if mono == 1:
            if x > last:
                last = x
                continue
            state[0] = last
            return 1, i, 0
        if 2 * (size + 1) > cap:
            state[2] = size
            return 2, i, 0
        h = _slot(x, mask)
        while keys[h] != -1:
            if keys[h] == x:
                state[2] = size
                return 3, i, vals[h]
            h = (h + 1) & mask
        keys[h] = x
        vals[h] = line0 + i + 1
        size += 1
    state[0] = last
    state[2] = size
    return 0, status.shape[0], 0


# --------------------------------------------------------------------------- writer kernels
@njit(cache=True, nogil=True, inline="always")
def ndigits(v):
    """Decimal digits of a non-negative integer ``v`` (int64 or uint64; 1 for 0).

    Comparisons with powers of ten in uint64, no division; at most 20 (``2**64 - 1``)."""
    x = np.uint64(v)
    d = 1
    p = np.uint64(10)
    while d < 20 and x >= p:
        p *= np.uint64(10)
        d += 1
    return d


@njit(cache=True, nogil=True)
def _put_lit(out, p, lit, m):
    """Copy the first ``m`` bytes of ``lit`` (uint8) to ``out[p:p+m]``; return ``p + m``."""
    for i in range(m):
        out[p + i] = lit[i]
    return p + m


@njit(cache=True, nogil=True, inline="always")
def put_uint(out, p, v):
    """Write ``v >= 0`` (int64 or uint64) in decimal (no leading zeros; ``0`` for 0) at ``out[p:]``.

    Returns the end position. The project's one integer-to-ASCII routine: the JSONL writer below,
    the synthetic generator (through it), the submission CSV writer and the word2vec text writer
    all format integers here. Unsigned division by 10, so there are no sign fix-ups. ``out`` is a
    writable uint8 array with room for ``ndigits(v)`` bytes."""
    n = ndigits(v)
    x = np.uint64(v)
    ten = np.uint64(10)
    q = p + n
    for i in range(n):
        y = x // ten
        out[q - 1 - i] = np.uint8(np.uint64(48) + (x - y * ten))  # all uint64: no float detour
        x = y
    return q


@njit(cache=True, nogil=True, inline="always")
def put_int(out, p, v):
    """Write int64 ``v`` in decimal at ``out[p:]``, ``-`` first when negative; return the end.

    The magnitude is taken in uint64, so ``-2**63`` is written exactly (at most 20 bytes)."""
    if v >= 0:
        return put_uint(out, p, v)
    out[p] = 45  # '-'
    return put_uint(out, p + 1, np.uint64(0) - np.uint64(v))


@njit(cache=True, nogil=True)
def export_sizes(session_ids, offsets, aid, ts, typ, s0, r0, r1, sizes):
    """``sizes[r]`` = byte length of row ``s0 + r``'s compact OTTO JSONL line (with ``"\\n"``), r0 <= r < r1.

    ``session_ids`` int64 [S], ``offsets`` int64 [S+1], ``aid`` int32 [E], ``ts`` int64 [E],
    ``typ`` uint8 [E] (codes 0..2), ``sizes`` int64. A row that cannot be written as a valid
    OTTO record gets -1 (a negative id/aid/ts or a type code > 2) or -2 (no events).
    """
    for r in range(r0, r1):
        s = s0 + r
        a, b = offsets[s], offsets[s + 1]
        if b <= a:
            sizes[r] = -2
            continue
        sid = session_ids[s]
        n = 11 + ndigits(sid) + 11 + 3  # {"session": S ,"events":[ ... ]}\n
        bad = sid < 0
        for j in range(a, b):
            av = np.int64(aid[j])
            tv = ts[j]
            bad |= (av < 0) | (tv < 0) | (typ[j] > 2)
            n += 7 + ndigits(av) + 6 + ndigits(tv) + 9 + _TYPE_LEN[min(typ[j], 2)] + 2
        n += b - a - 1  # commas between events
        sizes[r] = -1 if bad else n


@njit(cache=True, nogil=True)
def export_fill(session_ids, offsets, aid, ts, typ, s0, r0, r1, pos, out):
    """Write rows ``s0 + r`` (r0 <= r < r1) as compact OTTO JSONL into ``out`` (uint8).

    ``pos`` int64 [R+1] is the exclusive prefix sum of ``export_sizes`` (``pos[0] = 0``);
    row ``r`` fills ``out[pos[r]:pos[r+1]]`` exactly.
    """
    for r in range(r0, r1):
        s = s0 + r
        p = pos[r]
        p = _put_lit(out, p, _LIT_SESSION, 11)
        p = put_uint(out, p, session_ids[s])
        p = _put_lit(out, p, _LIT_EVENTS, 11)
        a, b = offsets[s], offsets[s + 1]
        for j in range(a, b):
            if j > a:
                out[p] = 44
                p += 1
            p = _put_lit(out, p, _LIT_AID, 7)
            p = put_uint(out, p, np.int64(aid[j]))
            p = _put_lit(out, p, _LIT_TS, 6)
            p = put_uint(out, p, ts[j])
            p = _put_lit(out, p, _LIT_TYPE, 9)
            c = typ[j]
            m = _TYPE_LEN[c]
            for i in range(m):
                out[p + i] = _TYPE_TEXT[7 * c + i]
            p += m
            out[p] = 34  # '"'
            out[p + 1] = 125  # '}'
            p += 2
        p = _put_lit(out, p, _LIT_END, 3)
