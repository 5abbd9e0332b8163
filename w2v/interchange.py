"""word2vec C formats: export a model directory to, and import one from, word2vec.c files.

The format (docs/FORMATS.md section 4) is the one written by the original ``word2vec.c`` tool and
by gensim's ``KeyedVectors.save_word2vec_format``: a header line ``"<V> <D>\\n"``, then ``V`` records

* text:   ``<key> <f_1> ... <f_D>\\n`` -- decimal floats separated by spaces;
* binary: ``<key> `` followed by ``D`` little-endian float32 values (``4 * D`` raw bytes) and, as
  ``word2vec.c`` writes it, a ``\\n`` (gensim omits it; readers skip newlines before a key).

Keys are aids, written in decimal. Text floats are written as the *shortest* decimal string that
reads back as the same float32 (the string ``str(numpy.float32(x))`` gives, which is also what
gensim writes), so a text round trip is bit-exact, like a binary one.

Reading is strict: every key must be a canonical non-negative decimal integer that fits int64,
every record must hold exactly ``D`` values, the file must hold exactly ``V`` records (trailing
whitespace excepted) and keys must be unique. Every error names the file and the line (text) or
record (binary).

The heavy lifting is done by three Numba kernels (row encoder, text line parser, binary record
scanner); Python only slices the file into chunks, reports progress and builds error messages.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
from numba import njit, prange

from data_prep import checks
from data_prep.atomic import atomic_file, check_output
from data_prep.fastparse import ndigits, parse_uint, put_uint
from data_prep.npyio import FormatError

from .model_io import Model, load_model, save_model

__all__ = [
    "Word2VecFormatError",
    "export_word2vec",
    "import_word2vec",
    "read_word2vec",
    "write_word2vec",
    "register",
]


class Word2VecFormatError(FormatError):
    """A word2vec file is malformed. The message names the file and the line or record."""


# Decimal powers 10**k for k in [-_P10_OFF, _P10_OFF], each the correctly rounded float64
# (parsed from its decimal literal, never computed with pow()).
_P10_OFF = 64
_POW10 = np.array([float(f"1e{k}") for k in range(-_P10_OFF, _P10_OFF + 1)], dtype=np.float64)

# Powers of two 2**e for e in [-_P2_OFF, _P2_OFF], exact.
_P2_OFF = 160
_POW2 = np.array([2.0 ** e for e in range(-_P2_OFF, _P2_OFF + 1)], dtype=np.float64)

_INT64_MAX = 9223372036854775807

# status codes shared by the kernels
_OK = 0
_SLOW = 1          # a value outside the exact fast path; Python re-parses that line
_ERR_KEY = -1      # key is not a canonical non-negative decimal integer fitting int64
_ERR_VALUE = -2    # a value is not a number
_ERR_COUNT = -3    # wrong number of values on the line
_ERR_EMPTY = -4    # empty line where a record was expected
_ERR_TRUNC = -5    # binary: file ends inside a record

_MAX_FLOAT_CHARS = 24   # upper bound on one formatted float32 plus its separator
_MAX_KEY_CHARS = 21     # 19 digits, separator, newline


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------

# The best p-significant-digit decimal c * 10**k (k = E - p + 1) that reads back as the float32
# with magnitude a (float64), biased-exponent-free mantissa bits frac and half-gaps hg_lo/hg_hi;
# see _put_float32 for the rule. Returns (c, k), c = 0 when no p-digit decimal reads back as x.
@njit(cache=True, nogil=True)
def _candidate(a, E, prec, frac, hg_lo, hg_hi, margin, pow10):
    k = E - prec + 1
    pk = pow10[k + _P10_OFF]
    c0 = np.int64(a * pow10[-k + _P10_OFF])  # floor: the product is positive
    exact = k >= 0 and k <= 22
    even = (frac & 1) == 0
    best = np.int64(0)
    bestdist = 0.0
    for t in range(2):
        c = c0 + t
        if c <= 0:
            continue
        r = float(c) * pk
        if r >= a:
            dist = r - a
            hg = hg_hi
        else:
            dist = a - r
            hg = hg_lo
        if exact and r <= 9007199254740992.0:
            # r and dist are exact: a tie reads back as x iff x's mantissa is even
            ok = dist < hg or (dist == hg and even)
        else:
            ok = dist < hg - margin
        # equal distances within rounding error are a decimal tie: the even c wins
        if ok and (best == 0 or dist < bestdist - margin or (dist <= bestdist + margin and (c & 1) == 0)):
            best = c
            bestdist = dist
    return best, k


# Shortest float32 formatting, the numpy ``str(np.float32(x))`` convention:
#   x = bits reinterpreted as IEEE binary32 (bits: uint32 scalar).
#   NaN -> "nan", +-inf -> "inf"/"-inf", +-0 -> "0.0"/"-0.0".
#   Otherwise, with a = |x| (exact in float64) and E = floor(log10 a), find the fewest significant
#   digits p and an integer c such that r = c * 10**k, k = E - p + 1, reads back as x:
#     * when r is an exact float64 (0 <= k <= 22, r <= 2**53): |r - a| < the half-gap on r's
#       side, or equal to it when x's mantissa is even (round-half-even);
#     * otherwise |r - a| < half-gap - margin, margin = a * 2**-50, far above the float64 error
#       of r, so any correctly rounded decimal parser, and numpy's parse-to-float64-then-round,
#       reads r back as x.
#   Half-gaps: ulp/2 above; below, ulp/4 when x is a power of two above the smallest normal,
#   else ulp/2 (subnormals: ulp = 2**-149). Candidates are floor(q) and floor(q) + 1,
#   q = a / 10**k; the nearer wins, ties (distances equal within margin) go to the even c.
#   Validity is monotone in p and p = 9 always has a candidate (9 significant digits determine a
#   float32), so p is searched in [1, 9]: 8 first, then 9 or 7, then a binary search below 7.
#   Layout: positional when 1e-4 <= a < 1e6 ("0.00012", "123.5", "100.0"), otherwise
#   scientific with at least two exponent digits ("1e-05", "3.4028235e+38").
# out: uint8[:] writable, with at least _MAX_FLOAT_CHARS bytes free from p; pow10: float64 table
# (_POW10). Returns the position after the last byte written.
@njit(cache=True, nogil=True)
def _put_float32(out, p, bits, pow10):
    sign = (bits >> 31) & 1
    be = (bits >> 23) & 0xFF
    frac = bits & 0x7FFFFF
    if be == 255:
        if frac != 0:
            out[p] = 110  # nan
            out[p + 1] = 97
            out[p + 2] = 110
            return p + 3
        if sign:
            out[p] = 45
            p += 1
        out[p] = 105  # inf
        out[p + 1] = 110
        out[p + 2] = 102
        return p + 3
    if sign:
        out[p] = 45
        p += 1
    if be == 0 and frac == 0:
        out[p] = 48  # 0.0
        out[p + 1] = 46
        out[p + 2] = 48
        return p + 3
    if be == 0:
        ulp = _POW2[-149 + _P2_OFF]
        a = float(frac) * ulp
        hg_lo = 0.5 * ulp
    else:
        ulp = _POW2[be - 150 + _P2_OFF]
        a = float(frac | 0x800000) * ulp
        hg_lo = 0.25 * ulp if (frac == 0 and be > 1) else 0.5 * ulp
    hg_hi = 0.5 * ulp
    margin = a * 8.881784197001252e-16  # 2**-50
    off = _P10_OFF
    if be == 0:  # subnormal
        E = int(math.floor(math.log10(a)))
    else:  # log2(a) ~ be - 127 + frac / 2**23 (error < 0.09), so E is off by at most one here
        E = int(math.floor((be - 127 + frac * 1.1920928955078125e-07) * 0.30102999566398120))
    while a >= pow10[E + 1 + off]:
        E += 1
    while a < pow10[E + off]:
        E -= 1
    # Validity is monotone in p (a p-digit candidate is also a (p+1)-digit one). Most float32
    # values need 7 to 9 digits, so try 8, then 9 or 7, then binary search below 7.
    best, k = _candidate(a, E, 8, frac, hg_lo, hg_hi, margin, pow10)
    if best == 0:
        best, k = _candidate(a, E, 9, frac, hg_lo, hg_hi, margin, pow10)
    else:
        c, kk = _candidate(a, E, 7, frac, hg_lo, hg_hi, margin, pow10)
        if c > 0:
            best, k = c, kk
            lo, hi = 1, 7
            while lo < hi:
                mid = (lo + hi) // 2
                c, kk = _candidate(a, E, mid, frac, hg_lo, hg_hi, margin, pow10)
                if c > 0:
                    best, k, hi = c, kk, mid
                else:
                    lo = mid + 1
    if best == 0:  # unreachable (p = 9 always fits): the nearest 9-digit decimal
        k = E - 8
        best = np.int64(a * pow10[-k + off] + 0.5)
    m = np.uint64(best)
    while m % np.uint64(10) == 0:
        m //= np.uint64(10)
        k += 1
    nd = ndigits(m)
    e10 = k + nd - 1
    if 1e-4 <= a < 1e6:
        if e10 >= 0:
            if nd <= e10 + 1:
                p = put_uint(out, p, m)
                for _ in range(e10 + 1 - nd):
                    out[p] = 48
                    p += 1
                out[p] = 46
                out[p + 1] = 48
                return p + 2
            # digits split by the decimal point: write them, then shift the tail right by one
            end = put_uint(out, p, m)
            dot = p + e10 + 1
            for t in range(end, dot, -1):
                out[t] = out[t - 1]
            out[dot] = 46
            return end + 1
        out[p] = 48
        out[p + 1] = 46
        p += 2
        for _ in range(-e10 - 1):
            out[p] = 48
            p += 1
        return put_uint(out, p, m)
    # scientific: d[.ddd]e(+|-)XX -- digits written one byte to the right, then the first moved
    # in front of the decimal point
    if nd == 1:
        p = put_uint(out, p, m)
    else:
        end = put_uint(out, p + 1, m)
        out[p] = out[p + 1]
        out[p + 1] = 46
        p = end
    out[p] = 101
    out[p + 1] = 45 if e10 < 0 else 43
    p += 2
    ae = -e10 if e10 < 0 else e10
    if ae < 10:  # at least two exponent digits
        out[p] = 48
        p += 1
    return put_uint(out, p, ae)


# Encode rows as word2vec records.
#   keys: int64[n] (each >= 0), bits: uint32[n, D] C-contiguous (float32 bit patterns),
#   binary: text when False, raw little-endian float32 + "\n" when True,
#   stride: bytes reserved per row (>= _MAX_KEY_CHARS + D * (binary ? 4 : _MAX_FLOAT_CHARS) + 1),
#   out: uint8[n * stride] scratch, lens: int64[n] scratch, pow10: _POW10.
# Rows are formatted in parallel into fixed slots out[i*stride : ...], then compacted in order to
# the front of out. Returns the number of bytes of the compacted result. n = 0 returns 0.
@njit(cache=True, nogil=True, parallel=True)
def _encode_rows(keys, bits, binary, stride, out, lens, pow10):
    n, D = bits.shape
    for i in prange(n):
        p0 = i * stride
        p = put_uint(out, p0, keys[i])
        if binary:
            out[p] = 32
            p += 1
            for j in range(D):
                b = bits[i, j]
                out[p] = b & 0xFF
                out[p + 1] = (b >> 8) & 0xFF
                out[p + 2] = (b >> 16) & 0xFF
                out[p + 3] = (b >> 24) & 0xFF
                p += 4
        else:
            for j in range(D):
                out[p] = 32
                p = _put_float32(out, p + 1, bits[i, j], pow10)
        out[p] = 10
        lens[i] = p + 1 - p0
    total = 0
    for i in range(n):
        src = i * stride
        if src != total:
            for t in range(lens[i]):
                out[total + t] = out[src + t]
        total += lens[i]
    return total


@njit(cache=True, nogil=True)
def _is_ws(b):
    return b == 32 or b == 9 or b == 13 or b == 10


# Parse a canonical non-negative decimal integer from buf[s:e] (no sign, no leading zero unless
# the token is "0", at most 19 digits, <= 2**63 - 1). Returns (ok, value).
@njit(cache=True, nogil=True)
def _parse_key(buf, s, e):
    n = e - s
    if n <= 0 or n > 19 or (n > 1 and buf[s] == 48):
        return False, np.int64(0)
    v, q = parse_uint(buf, s, e)
    return q == e, v


@njit(cache=True, nogil=True)
def _lower(b):
    return b + 32 if 65 <= b <= 90 else b


# Parse one decimal float token buf[s:e] (s < e) to float32.
# Grammar: [+-]? (digits [. digits*] | . digits) ([eE] [+-]? digits)?  |  [+-]? (nan|inf|infinity)
# (letters case-insensitive). Returns (status, value): _OK with the value when the mantissa has at
# most 19 significant digits, is <= 2**53 and the decimal exponent is within [-22, 22] -- then
# float64(m) * 10**e (or / 10**-e) is the correctly rounded float64, and rounding that to float32
# is exactly what numpy's float32(str) does; _SLOW for a valid token outside that range (the
# caller re-parses it with numpy); _ERR_VALUE for anything else.
@njit(cache=True, nogil=True)
def _parse_float(buf, s, e, pow10):
    i = s
    neg = False
    if buf[i] == 45 or buf[i] == 43:
        neg = buf[i] == 45
        i += 1
    n = e - i
    if n == 3 and _lower(buf[i]) == 110 and _lower(buf[i + 1]) == 97 and _lower(buf[i + 2]) == 110:
        return _OK, np.float32(np.nan)
    if (n == 3 or n == 8) and _lower(buf[i]) == 105 and _lower(buf[i + 1]) == 110 and _lower(buf[i + 2]) == 102:
        ok = True
        if n == 8:
            rest = (105, 110, 105, 116, 121)  # "inity"
            for t in range(5):
                if _lower(buf[i + 3 + t]) != rest[t]:
                    ok = False
        if ok:
            return _OK, np.float32(-np.inf if neg else np.inf)
        return _ERR_VALUE, np.float32(0.0)
    mant = np.uint64(0)
    ndig = 0
    dexp = 0
    inexact = False
    any_digit = False
    while i < e and 48 <= buf[i] <= 57:
        d = buf[i] - 48
        any_digit = True
        if mant == 0 and d == 0:
            pass
        elif ndig < 19:
            mant = mant * np.uint64(10) + np.uint64(d)
            ndig += 1
        else:
            dexp += 1
            if d != 0:
                inexact = True
        i += 1
    if i < e and buf[i] == 46:
        i += 1
        while i < e and 48 <= buf[i] <= 57:
            d = buf[i] - 48
            any_digit = True
            if mant == 0 and d == 0:
                dexp -= 1
            elif ndig < 19:
                mant = mant * np.uint64(10) + np.uint64(d)
                ndig += 1
                dexp -= 1
            elif d != 0:
                inexact = True
            i += 1
    if not any_digit:
        return _ERR_VALUE, np.float32(0.0)
    if i < e and (buf[i] == 101 or buf[i] == 69):
        i += 1
        eneg = False
        if i < e and (buf[i] == 45 or buf[i] == 43):
            eneg = buf[i] == 45
            i += 1
        if i >= e:
            return _ERR_VALUE, np.float32(0.0)
        x = 0
        while i < e and 48 <= buf[i] <= 57:
            if x < 100000:
                x = x * 10 + (buf[i] - 48)
            i += 1
        dexp += -x if eneg else x
    if i != e:
        return _ERR_VALUE, np.float32(0.0)
    if mant == 0:
        return _OK, np.float32(-0.0 if neg else 0.0)
    if inexact or mant > np.uint64(9007199254740992) or dexp < -22 or dexp > 22:
        return _SLOW, np.float32(np.nan)
    if dexp >= 0:
        v = float(mant) * pow10[dexp + _P10_OFF]
    else:
        v = float(mant) / pow10[-dexp + _P10_OFF]
    return _OK, np.float32(-v if neg else v)


# Parse text records, one per line, in parallel.
#   buf: uint8[:] (the file); starts/ends: int64[n], line i is buf[starts[i]:ends[i]] without
#   its "\n"; D: values per record; keys: int64[n] out; vals: float32[n, D] C-contiguous out;
#   status: int32[n] out (_OK, _SLOW, or an _ERR_* code); field: int64[n] out -- for _ERR_VALUE
#   the 0-based value index, for _ERR_COUNT the number of values found.
# Separators are runs of spaces/tabs; "\r" and surrounding whitespace are ignored. A _SLOW line
# has NaN in the slots of its slow values; the caller re-parses it.
@njit(cache=True, nogil=True, parallel=True)
def _parse_text_lines(buf, starts, ends, D, keys, vals, status, field, pow10):
    n = starts.shape[0]
    for r in prange(n):
        s = starts[r]
        e = ends[r]
        st = _OK
        fld = 0
        while s < e and _is_ws(buf[s]):
            s += 1
        while e > s and _is_ws(buf[e - 1]):
            e -= 1
        if s == e:
            status[r] = _ERR_EMPTY
            field[r] = 0
            continue
        t = s
        while t < e and not _is_ws(buf[t]):
            t += 1
        ok, key = _parse_key(buf, s, t)
        if not ok:
            status[r] = _ERR_KEY
            field[r] = 0
            continue
        keys[r] = key
        j = 0
        p = t
        while True:
            while p < e and _is_ws(buf[p]):
                p += 1
            if p >= e:
                break
            q = p
            while q < e and not _is_ws(buf[q]):
                q += 1
            if j < D:
                code, v = _parse_float(buf, p, q, pow10)
                if code == _ERR_VALUE:
                    st = _ERR_VALUE
                    fld = j
                    break
                if code == _SLOW:
                    st = _SLOW
                vals[r, j] = v
            j += 1
            p = q
        if st != _ERR_VALUE and j != D:
            st = _ERR_COUNT
            fld = j
        status[r] = st
        field[r] = fld


# Scan binary records: any "\n"/"\r" bytes, then "<key> " (canonical decimal), then 4*D bytes of
# little-endian float32.
#   buf: uint8[:] (the file), pos: offset of the first record, n: records wanted,
#   keys: int64[n] out, bits: uint32[n, D] C-contiguous out.
# Returns (pos after the last complete record, records read, status): status _OK when all n were
# read, _ERR_KEY when a key is malformed, _ERR_TRUNC when the file ends inside a record; on
# error, pos is the offset where the failing record starts.
@njit(cache=True, nogil=True)
def _scan_binary(buf, pos, n, D, keys, bits):
    size = buf.shape[0]
    for r in range(n):
        while pos < size and (buf[pos] == 10 or buf[pos] == 13):
            pos += 1
        if pos >= size:
            return pos, r, _ERR_TRUNC
        t = pos
        while t < size and t - pos <= 20 and 48 <= buf[t] <= 57:
            t += 1
        if t >= size:
            return pos, r, _ERR_TRUNC
        if buf[t] != 32:
            return pos, r, _ERR_KEY
        ok, key = _parse_key(buf, pos, t)
        if not ok:
            return pos, r, _ERR_KEY
        v = t + 1
        if v + 4 * D > size:
            return pos, r, _ERR_TRUNC
        keys[r] = key
        for j in range(D):
            b = v + 4 * j
            bits[r, j] = (np.uint32(buf[b]) | (np.uint32(buf[b + 1]) << 8)
                          | (np.uint32(buf[b + 2]) << 16) | (np.uint32(buf[b + 3]) << 24))
        pos = v + 4 * D
    return pos, n, _OK


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def _progress(enabled: bool, msg: str) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def write_word2vec(out_path: str | os.PathLike, aids: np.ndarray, vectors: np.ndarray, *,
                   binary: bool = False, chunk_bytes: int = 1 << 24, progress: bool = False,
                   inputs: tuple = ()) -> Path:
    """Write ``aids`` (int [V], each >= 0) and ``vectors`` (float32 [V, D]) as a word2vec file.

    The file appears atomically at ``out_path``. ``chunk_bytes`` bounds the scratch buffer (rows
    are encoded ``chunk_bytes // row_bytes`` at a time, at least one). ``inputs``: paths the
    output must not be, contain or lie inside (``data_prep.atomic.check_output``).
    """
    out_path = Path(out_path)
    aids = np.asarray(aids)
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or aids.shape != (vectors.shape[0],):
        raise ValueError(f"{out_path}: aids/vectors shapes {aids.shape}/{vectors.shape} must be [V]/[V, D]")
    if aids.dtype.kind not in "iu":
        raise ValueError(f"{out_path}: aids must be integers (dtype {aids.dtype})")
    V, D = vectors.shape
    if V and int(aids.min()) < 0:
        raise ValueError(f"{out_path}: aid {int(aids.min())} is negative; word2vec keys must be non-negative")
    if V and int(aids.max()) > _INT64_MAX:
        raise ValueError(f"{out_path}: aid {int(aids.max())} does not fit int64")
    stride = _MAX_KEY_CHARS + D * (4 if binary else _MAX_FLOAT_CHARS) + 1
    rows = max(1, int(chunk_bytes) // stride)
    out = np.empty(min(rows, max(V, 1)) * stride, np.uint8)
    lens = np.empty(min(rows, max(V, 1)), np.int64)
    with atomic_file(out_path, "wb", inputs=inputs) as fh:
        fh.write(f"{V} {D}\n".encode("ascii"))
        for a in range(0, V, rows):
            b = min(V, a + rows)
            keys = np.ascontiguousarray(aids[a:b], dtype=np.int64)
            bits = np.ascontiguousarray(vectors[a:b], dtype="<f4").view(np.uint32)
            n = _encode_rows(keys, bits, bool(binary), stride, out, lens, _POW10)
            fh.write(memoryview(out)[:n])
            _progress(progress, f"export: {b}/{V} rows")
    return out_path


def export_word2vec(model: str | os.PathLike | Model, out_path: str | os.PathLike, *, binary: bool = False,
                    which: str = "vectors", progress: bool = False) -> Path:
    """Export a model directory (or a loaded :class:`Model`) as a word2vec.c text or binary file.

    ``which="vectors"`` writes the input vectors (``vectors.npy``, what word2vec.c and gensim
    export); ``which="output"`` writes the output vectors (``output.npy``). Keys are the aids.
    """
    if which not in ("vectors", "output"):
        raise ValueError(f"which={which!r}: expected 'vectors' or 'output'")
    if not isinstance(model, Model):
        check_output(out_path, (model,))
        model = load_model(model)
    mat = model.vectors if which == "vectors" else model.output
    return write_word2vec(out_path, model.aids, mat, binary=binary, progress=progress, inputs=(model.path,))


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def _read_header(path: Path, fh) -> tuple[int, int, int]:
    head = fh.read(4096)
    nl = head.find(b"\n")
    if nl < 0:
        what = "is empty" if not head else "has no complete header line"
        raise Word2VecFormatError(f"{path}: line 1: file {what}; expected a header '<rows> <dimensions>'")
    parts = head[:nl].split()
    ok = len(parts) == 2 and all(p.isdigit() for p in parts)
    if not ok:
        shown = head[:min(nl, 80)].decode("utf-8", "replace")
        raise Word2VecFormatError(f"{path}: line 1: expected a header '<rows> <dimensions>' (two non-negative integers), got {shown!r}")
    return int(parts[0]), int(parts[1]), nl + 1


def _looks_binary(buf: np.ndarray, pos: int, probe: int = 1 << 16) -> bool:
    """True when the ``probe`` bytes after the header hold a control byte (other than tab, CR,
    LF), which text never contains and raw float32 data practically always does."""
    w = buf[pos:pos + probe]
    return bool(np.any(((w < 32) & (w != 9) & (w != 10) & (w != 13)) | (w == 127)))


def _show(raw: bytes, limit: int = 40) -> str:
    s = raw.decode("utf-8", "replace")
    return repr(s if len(s) <= limit else s[:limit] + "...")


def _text_error(path: Path, buf: np.ndarray, s: int, e: int, line: int, code: int, fld: int, D: int) -> Word2VecFormatError:
    toks = re.split(rb"[ \t\r]+", bytes(buf[s:e]).strip(b" \t\r"))  # the kernel's separators
    if code == _ERR_EMPTY:
        return Word2VecFormatError(f"{path}: line {line}: empty line where a record was expected")
    if code == _ERR_KEY:
        return Word2VecFormatError(f"{path}: line {line}: key {_show(toks[0])} is not a non-negative integer aid "
                                   "(canonical decimal, fitting int64)")
    if code == _ERR_VALUE:
        return Word2VecFormatError(f"{path}: line {line}: value {fld + 1} {_show(toks[fld + 1])} is not a number")
    hint = " (truncated file?)" if fld < D else ""
    return Word2VecFormatError(f"{path}: line {line}: found {fld} values, expected {D}{hint}")


def _slow_line(buf: np.ndarray, s: int, e: int, D: int) -> np.ndarray:
    toks = bytes(buf[s:e]).split()[1:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.array(toks, dtype="S").astype(np.float32)


def _first_non_ws(buf: np.ndarray, pos: int, step: int = 1 << 24) -> int:
    size = buf.shape[0]
    while pos < size:
        w = buf[pos:pos + step]
        bad = np.flatnonzero((w != 32) & (w != 9) & (w != 10) & (w != 13))
        if bad.size:
            return pos + int(bad[0])
        pos += step
    return -1


def _read_text(path: Path, buf: np.ndarray, pos: int, V: int, D: int, window: int, progress: bool):
    keys = np.empty(V, np.int64)
    vals = np.empty((V, D), np.float32)
    size = buf.shape[0]
    done = 0
    line = 2  # 1-based line number of the next record
    while done < V:
        w = buf[pos:pos + window]
        nl = np.flatnonzero(w == 10).astype(np.int64) + pos
        last = pos + window >= size
        if last:
            tail_start = int(nl[-1]) + 1 if nl.size else pos
            if tail_start < size:
                nl = np.append(nl, np.int64(size))
        elif nl.size == 0:
            window *= 2
            continue
        take = min(int(nl.size), V - done)
        if take == 0:
            raise Word2VecFormatError(f"{path}: line {line}: file ends after {done} records; the header declares {V} (truncated file?)")
        ends = nl[:take]
        starts = np.empty(take, np.int64)
        starts[0] = pos
        starts[1:] = ends[:-1] + 1
        status = np.empty(take, np.int32)
        field = np.empty(take, np.int64)
        _parse_text_lines(buf, starts, ends, D, keys[done:done + take], vals[done:done + take], status, field, _POW10)
        bad = np.flatnonzero(status < 0)
        if bad.size:
            r = int(bad[0])
            raise _text_error(path, buf, int(starts[r]), int(ends[r]), line + r, int(status[r]), int(field[r]), D)
        for r in np.flatnonzero(status == _SLOW):
            vals[done + r] = _slow_line(buf, int(starts[r]), int(ends[r]), D)
        done += take
        line += take
        pos = int(ends[-1]) + 1
        _progress(progress, f"import: {done}/{V} rows")
    extra = _first_non_ws(buf, min(pos, size))
    if extra >= 0:
        raise Word2VecFormatError(f"{path}: line {line + int(np.count_nonzero(buf[pos:extra] == 10))}: "
                                  f"content after the {V} records the header declares")
    return keys, vals


def _read_binary(path: Path, buf: np.ndarray, pos: int, V: int, D: int, chunk_rows: int, progress: bool):
    keys = np.empty(V, np.int64)
    bits = np.empty((V, D), np.uint32)
    done = 0
    while done < V:
        n = min(chunk_rows, V - done)
        pos, got, st = _scan_binary(buf, pos, n, D, keys[done:done + n], bits[done:done + n])
        if st != _OK:
            rec = done + got + 1
            if st == _ERR_KEY:
                end = pos
                while end < buf.shape[0] and end - pos < 40 and buf[end] != 32:
                    end += 1
                raise Word2VecFormatError(f"{path}: record {rec} (byte {pos}): key {_show(bytes(buf[pos:end]))} is not a "
                                          "non-negative integer aid (canonical decimal, fitting int64) followed by a space")
            raise Word2VecFormatError(f"{path}: record {rec} (byte {pos}): file ends inside the record; "
                                      f"the header declares {V} records of {D} float32 values (truncated file?)")
        done += n
        _progress(progress, f"import: {done}/{V} rows")
    extra = _first_non_ws(buf, pos)
    if extra >= 0:
        raise Word2VecFormatError(f"{path}: byte {extra}: content after the {V} records the header declares")
    return keys, bits.view(np.float32)


def read_word2vec(path: str | os.PathLike, *, binary: bool | None = None, window: int = 1 << 26,
                  chunk_rows: int = 1 << 18, progress: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a word2vec text or binary file: ``(aids int64[V], vectors float32[V, D], info)``.

    ``binary=None`` detects the variant: the file is binary when the 64 KiB after the header hold
    a control byte other than tab, CR and LF. ``info`` has ``binary``, ``rows``, ``dim``.
    ``window`` (text) is the initial number of bytes sliced per step (doubled while a single line
    does not fit); ``chunk_rows`` (binary) the records scanned per step. Both only affect memory
    and progress granularity, never the result.
    """
    path = Path(path)
    try:
        fh = open(path, "rb")
    except IsADirectoryError:
        raise Word2VecFormatError(f"{path}: is a directory, not a word2vec file") from None
    with fh:
        V, D, pos = _read_header(path, fh)
    size = path.stat().st_size
    buf = np.asarray(np.memmap(path, dtype=np.uint8, mode="r")) if size else np.zeros(0, np.uint8)
    if binary is None:
        binary = _looks_binary(buf, pos)
    if binary:
        keys, vecs = _read_binary(path, buf, pos, V, D, max(1, int(chunk_rows)), progress)
    else:
        keys, vecs = _read_text(path, buf, pos, V, D, max(1, int(window)), progress)
    del buf
    if V > 1:
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        dup = np.flatnonzero(sk[1:] == sk[:-1])
        if dup.size:
            second = order[dup + 1]
            i = int(np.argmin(second))
            r0, r1 = int(order[dup[i]]), int(second[i])
            if binary:
                where, first = f"record {r1 + 1}", f"record {r0 + 1}"
            else:
                where, first = f"line {r1 + 2}", f"line {r0 + 2}"
            raise Word2VecFormatError(f"{path}: {where}: duplicate key {int(keys[r1])} (first in {first})")
    return keys, vecs, {"binary": bool(binary), "rows": V, "dim": D}


def _check_importable(path: Path, vecs: np.ndarray, binary: bool) -> None:
    """A model needs at least one row and one dimension, and finite values (docs/FORMATS.md
    section 2); name the input line or record that breaks it."""
    V, D = vecs.shape
    if V == 0 or D == 0:
        raise Word2VecFormatError(f"{path}: line 1: the header declares {V} rows of {D} dimensions; "
                                  "a model needs at least one row and one dimension")
    bad = checks.first_nonfinite(vecs.reshape(-1))
    if bad >= 0:
        r, c = divmod(bad, D)
        where = f"record {r + 1}" if binary else f"line {r + 2}"
        raise Word2VecFormatError(f"{path}: {where}: value {c + 1} is {float(vecs[r, c])}; "
                                  "the vectors of a model must be finite")


def import_word2vec(path: str | os.PathLike, out_model_dir: str | os.PathLike, *, binary: bool | None = None,
                    overwrite: bool = False, progress: bool = False) -> Path:
    """Import a word2vec text/binary file (ours, word2vec.c's or gensim's) as a model directory.

    Rows keep the file order. The file carries no output vectors and no counts, so ``output.npy``
    is all zeros and ``counts.npy`` all zeros; ``meta.json`` says so (``"source":
    "word2vec-import"``, ``"output_known": false``, ``"counts_known": false``).
    """
    path = Path(path)
    out_model_dir = Path(out_model_dir)
    check_output(out_model_dir, (path,))
    if out_model_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_model_dir}: already exists (--overwrite, or overwrite=True, replaces it)")
    keys, vecs, info = read_word2vec(path, binary=binary, progress=progress)
    _check_importable(path, vecs, info["binary"])
    meta = {
        "source": "word2vec-import",
        "imported_from": {"name": path.name, "size": path.stat().st_size,
                          "format": "binary" if info["binary"] else "text"},
        "output_known": False,
        "counts_known": False,
        "note": "output.npy is all zeros and counts.npy all zeros: a word2vec file holds neither",
    }
    return save_model(out_model_dir, vecs, np.zeros_like(vecs), keys, np.zeros(keys.shape[0], np.int64), meta,
                      overwrite=overwrite, inputs=(path,))


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _cmd_export(args: argparse.Namespace) -> int:
    out = export_word2vec(args.model_dir, args.out, binary=args.binary,
                          which="output" if args.output_vectors else "vectors", progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    out = import_word2vec(args.input, args.model_dir, binary=args.binary, overwrite=args.overwrite,
                          progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {out}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add the ``export`` and ``import`` subcommands to an ``otto-train`` subparsers object."""
    from data_prep.flags import add_run_flags
    p = subparsers.add_parser(
        "export", help="write a model's vectors as a word2vec.c text or binary file",
        description="Write the vectors of a model directory in the word2vec.c format that gensim's "
                    "KeyedVectors.load_word2vec_format reads: a '<rows> <dimensions>' header, then one "
                    "record per aid. Text floats are the shortest strings that read back bit-exactly.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model directory to read")
    p.add_argument("out", metavar="OUT", help="word2vec file to write (replaced atomically if it exists)")
    p.add_argument("--binary", action="store_true",
                   help="write the binary variant (raw little-endian float32) instead of text")
    p.add_argument("--output-vectors", action="store_true",
                   help="export the output vectors (output.npy, gensim's syn1neg) instead of the input vectors")
    add_run_flags(p, quiet=True)
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser(
        "import", help="read a word2vec.c text or binary file into a model directory",
        description="Read a word2vec.c/gensim text or binary file whose keys are aids (non-negative "
                    "integers) into a model directory. Output vectors and counts are unknown and "
                    "stored as zeros (meta.json: source=word2vec-import).")
    p.add_argument("input", metavar="IN", help="word2vec file to read")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model directory to create")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--binary", dest="binary", action="store_const", const=True, default=None,
                   help="read the file as binary (default: detect from its content)")
    g.add_argument("--text", dest="binary", action="store_const", const=False,
                   help="read the file as text (default: detect from its content)")
    add_run_flags(p, overwrite="MODEL_DIR", quiet=True)
    p.set_defaults(func=_cmd_import)
