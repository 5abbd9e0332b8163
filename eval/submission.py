"""Kaggle submission CSV: ``session_type,labels`` then rows like ``42_clicks,0 1 2``.

In memory a submission is CSR over rows (``Submission``): row r predicts for session
``session_ids[r]`` and type ``types[r]`` (0 clicks, 1 carts, 2 orders) the aids
``aids[offsets[r]:offsets[r+1]]`` in rank order. Reading and writing are Numba byte loops, so a
1.67M-session file (5M rows) takes seconds, not minutes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np

from data_prep.atomic import atomic_file
from data_prep.dataset import TYPE_NAMES
from data_prep.fastparse import parse_uint, put_int

HEADER = b"session_type,labels"


class SubmissionError(ValueError):
    """A submission file is malformed; the message names the file and line."""


@dataclass
class Submission:
    session_ids: np.ndarray  # int64[R]
    types: np.ndarray        # uint8[R]
    offsets: np.ndarray      # int64[R+1]
    aids: np.ndarray         # int64[N]

    def __len__(self) -> int:
        return int(self.session_ids.shape[0])


def from_predictions(session_ids: np.ndarray, preds: dict[int, np.ndarray]) -> Submission:
    """Build a submission from per-type ``int64[S, k]`` arrays (``-1`` = empty slot)."""
    session_ids = np.asarray(session_ids, np.int64)
    S = session_ids.shape[0]
    parts_sid, parts_t, parts_len, parts_aid = [], [], [], []
    for t in sorted(preds):
        p = np.asarray(preds[t], np.int64)
        if p.ndim != 2 or p.shape[0] != S:
            raise ValueError(f"predictions[{TYPE_NAMES[t]}]: shape {p.shape} (expected [{S}, k])")
        valid = p >= 0
        parts_sid.append(session_ids)
        parts_t.append(np.full(S, t, np.uint8))
        parts_len.append(valid.sum(axis=1))
        parts_aid.append(p[valid])  # row-major: keeps rank order within each row
    if not parts_sid:
        return Submission(np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros(0, np.int64))
    lens = np.concatenate(parts_len)
    offsets = np.zeros(lens.shape[0] + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    return Submission(np.concatenate(parts_sid), np.concatenate(parts_t), offsets, np.concatenate(parts_aid))


# ---------------------------------------------------------------------------------------------
# Format rows ``{sid}_{type},{a0} {a1} ...\n`` into one byte buffer.
#   sid int64[R], typ uint8[R] (0..2), offsets int64[R+1], aids int64[N],
#   names uint8[3, 6] (type names, zero padded), name_len int64[3].
# Negative numbers are written with a leading '-' (data_prep.fastparse.put_int). Empty rows end
# right after the comma.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _format_kernel(sid, typ, offsets, aids, names, name_len):
    R = sid.shape[0]
    # worst case: 20 digits + sign per number, 1 separator
    cap = R * (21 + 1 + 6 + 2) + aids.shape[0] * 21 + 1
    out = np.empty(cap, np.uint8)
    p = 0
    for r in range(R):
        p = put_int(out, p, sid[r])
        out[p] = 95  # '_'
        p += 1
        t = typ[r]
        for c in range(name_len[t]):
            out[p] = names[t, c]
            p += 1
        out[p] = 44  # ','
        p += 1
        for j in range(offsets[r], offsets[r + 1]):
            if j > offsets[r]:
                out[p] = 32  # ' '
                p += 1
            p = put_int(out, p, aids[j])
        out[p] = 10
        p += 1
    return out[:p]


def _names():
    names = np.zeros((3, 6), np.uint8)
    nl = np.zeros(3, np.int64)
    for i, n in enumerate(TYPE_NAMES):
        b = n.encode()
        names[i, :len(b)] = np.frombuffer(b, np.uint8)
        nl[i] = len(b)
    return names, nl


def write_submission(sub: Submission, path: str | os.PathLike) -> None:
    """Write the CSV (header then one row per (session, type)), atomically."""
    names, nl = _names()
    body = _format_kernel(np.ascontiguousarray(sub.session_ids, np.int64), np.ascontiguousarray(sub.types, np.uint8),
                          np.ascontiguousarray(sub.offsets, np.int64), np.ascontiguousarray(sub.aids, np.int64),
                          names, nl)
    with atomic_file(path, "wb") as fh:
        fh.write(HEADER + b"\n")
        fh.write(body.tobytes())


# ---------------------------------------------------------------------------------------------
# Parse the body (everything after the header line) of a submission CSV.
#   buf uint8[B]. Rows: optional '-' + digits, '_', one of clicks|carts|orders, ',', then aids
#   separated by single or repeated spaces (numbers fit int64: data_prep.fastparse.parse_uint); '\r' before '\n' tolerated; blank lines skipped.
# Returns (sid int64[R], typ uint8[R], offsets int64[R+1], aids int64[N], err_line, err_code):
#   err_line = -1 on success, else the 0-based body line of the first error and err_code
#   1 bad session id, 2 missing '_', 3 unknown type, 4 missing ',', 5 bad aid.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _parse_kernel(buf):
    B = buf.shape[0]
    n_lines = 1
    n_space = 0
    for i in range(B):
        if buf[i] == 10:
            n_lines += 1
        elif buf[i] == 32 or buf[i] == 44:
            n_space += 1
    sid = np.empty(n_lines, np.int64)
    typ = np.empty(n_lines, np.uint8)
    offsets = np.zeros(n_lines + 1, np.int64)
    aids = np.empty(n_space + n_lines, np.int64)
    r = 0
    na = 0
    line = 0
    i = 0
    while i < B:
        # line bounds
        j = i
        while j < B and buf[j] != 10:
            j += 1
        e = j
        if e > i and buf[e - 1] == 13:
            e -= 1
        if e == i:
            i = j + 1
            line += 1
            continue
        p = i
        neg = False
        if buf[p] == 45:
            neg = True
            p += 1
        v, p = parse_uint(buf, p, e)
        if p < 0:
            return sid[:r], typ[:r], offsets[:r + 1], aids[:na], line, 1
        if p >= e or buf[p] != 95:
            return sid[:r], typ[:r], offsets[:r + 1], aids[:na], line, 2
        p += 1
        # type name
        t = -1
        if e - p >= 6 and buf[p] == 99 and buf[p + 1] == 108 and buf[p + 2] == 105 and buf[p + 3] == 99 and buf[p + 4] == 107 and buf[p + 5] == 115:
            t = 0
            p += 6
        elif e - p >= 5 and buf[p] == 99 and buf[p + 1] == 97 and buf[p + 2] == 114 and buf[p + 3] == 116 and buf[p + 4] == 115:
            t = 1
            p += 5
        elif e - p >= 6 and buf[p] == 111 and buf[p + 1] == 114 and buf[p + 2] == 100 and buf[p + 3] == 101 and buf[p + 4] == 114 and buf[p + 5] == 115:
            t = 2
            p += 6
        if t < 0:
            return sid[:r], typ[:r], offsets[:r + 1], aids[:na], line, 3
        if p >= e or buf[p] != 44:
            return sid[:r], typ[:r], offsets[:r + 1], aids[:na], line, 4
        p += 1
        while p < e:
            if buf[p] == 32:
                p += 1
                continue
            a, p = parse_uint(buf, p, e)
            if p < 0:
                return sid[:r], typ[:r], offsets[:r + 1], aids[:na], line, 5
            if p < e and buf[p] != 32:
                return sid[:r], typ[:r], offsets[:r + 1], aids[:na], line, 5
            aids[na] = a
            na += 1
        sid[r] = -v if neg else v
        typ[r] = t
        r += 1
        offsets[r] = na
        i = j + 1
        line += 1
    return sid[:r], typ[:r], offsets[:r + 1], aids[:na], -1, 0


_ERRORS = {1: "bad session id", 2: "missing '_' between session and type",
           3: "unknown type (expected clicks, carts or orders)", 4: "missing ',' after the type",
           5: "bad aid (expected non-negative integers below 2**63 separated by spaces)"}


def read_submission(path: str | os.PathLike) -> Submission:
    """Read a submission CSV. Raises ``SubmissionError`` naming the line of the first problem."""
    path = Path(path)
    data = path.read_bytes()
    nl = data.find(b"\n")
    head = (data if nl < 0 else data[:nl]).rstrip(b"\r").lstrip(b"\xef\xbb\xbf")
    if head.strip() != HEADER:
        raise SubmissionError(f"{path}:1: header {head[:60]!r} (expected {HEADER.decode()!r})")
    body = np.frombuffer(data, np.uint8)[nl + 1:] if nl >= 0 else np.zeros(0, np.uint8)
    sid, typ, off, aids, err_line, code = _parse_kernel(body)
    if err_line >= 0:
        raise SubmissionError(f"{path}:{err_line + 2}: {_ERRORS[int(code)]}")
    return Submission(sid.copy(), typ.copy(), off.copy(), aids.copy())
