"""Ground-truth labels of the official OTTO protocol, held as arrays, and their JSONL form.

A cut test session has three targets: the next click (the first click after the cut), the set of
carts after the cut and the set of orders after the cut. ``Labels`` keeps them columnar:

==================  ========  ==========  ==========================================================
field               dtype     shape       meaning
==================  ========  ==========  ==========================================================
``session_ids``     int64     [S]         session id of label row i
``clicks``          int64     [S]         aid of the next click, -1 when there is none
``cart_offsets``    int64     [S+1]       carts of row i are ``carts[cart_offsets[i]:cart_offsets[i+1]]``
``carts``           int64     [C]         distinct aids, ascending within a row
``order_offsets``   int64     [S+1]       as above for orders
``orders``          int64     [O]         distinct aids, ascending within a row
==================  ========  ==========  ==========================================================

JSONL line: ``{"session": 42, "labels": {"clicks": 7, "carts": [3, 7], "orders": [3]}}``; a key is
absent when that target is empty (as in otto-de/recsys-dataset).
"""
from __future__ import annotations

import json
import os
from array import array
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np

from data_prep.atomic import atomic_file


class LabelsError(ValueError):
    """A labels file is malformed; the message names the file, line and field."""


@dataclass
class Labels:
    session_ids: np.ndarray
    clicks: np.ndarray
    cart_offsets: np.ndarray
    carts: np.ndarray
    order_offsets: np.ndarray
    orders: np.ndarray

    def __len__(self) -> int:
        return int(self.session_ids.shape[0])

    def row(self, i: int) -> dict:
        """Label row ``i`` as the JSON object written to the labels file."""
        out: dict = {}
        if self.clicks[i] >= 0:
            out["clicks"] = int(self.clicks[i])
        c = self.carts[self.cart_offsets[i]:self.cart_offsets[i + 1]]
        if c.size:
            out["carts"] = [int(x) for x in c]
        o = self.orders[self.order_offsets[i]:self.order_offsets[i + 1]]
        if o.size:
            out["orders"] = [int(x) for x in o]
        return out


# Sort a[lo:hi] ascending and move its distinct values to the front, in place; return the end of
# the distinct run (lo + the number of distinct values; hi when hi - lo <= 1).
@nb.njit(cache=True, nogil=True)
def _sort_unique(a, lo, hi):
    if hi - lo <= 1:
        return hi
    a[lo:hi] = np.sort(a[lo:hi])
    w = lo + 1
    for r in range(lo + 1, hi):
        if a[r] != a[w - 1]:
            a[w] = a[r]
            w += 1
    return w


# ---------------------------------------------------------------------------------------------
# Labels of cut sessions.
#   offsets int64[S+1], aid int32/int64[E], type uint8[E]: the FULL test sessions (CSR)
#   cut int64[S]: number of events kept in session i (1 <= cut[i] <= len_i - 1 for proper cuts;
#                 any value in [0, len_i] is accepted: cut == len_i yields empty labels)
# Returns clicks int64[S] (-1 = no later click), and for carts and orders CSR arrays
# (offsets int64[S+1], aids int64[*]) of the DISTINCT aids of that type strictly after the cut,
# ascending. Degenerate: empty sessions give -1 and empty sets.
# ---------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _labels_kernel(offsets, aid, type_, cut):
    S = offsets.shape[0] - 1
    clicks = np.full(S, -1, np.int64)
    n_cart = 0
    n_order = 0
    for i in range(S):
        for j in range(offsets[i] + cut[i], offsets[i + 1]):
            if type_[j] == 1:
                n_cart += 1
            elif type_[j] == 2:
                n_order += 1
    cart_off = np.zeros(S + 1, np.int64)
    order_off = np.zeros(S + 1, np.int64)
    carts = np.empty(n_cart, np.int64)
    orders = np.empty(n_order, np.int64)
    pc = 0
    po = 0
    for i in range(S):
        c0 = pc
        o0 = po
        for j in range(offsets[i] + cut[i], offsets[i + 1]):
            t = type_[j]
            if t == 0:
                if clicks[i] < 0:
                    clicks[i] = aid[j]
            elif t == 1:
                carts[pc] = aid[j]
                pc += 1
            else:
                orders[po] = aid[j]
                po += 1
        pc = _sort_unique(carts, c0, pc)
        po = _sort_unique(orders, o0, po)
        cart_off[i + 1] = pc
        order_off[i + 1] = po
    return clicks, cart_off, carts[:pc].copy(), order_off, orders[:po].copy()


def labels_from_cut(session_ids: np.ndarray, offsets: np.ndarray, aid: np.ndarray,
                    type_: np.ndarray, cut: np.ndarray) -> Labels:
    """Labels of sessions cut after ``cut[i]`` events (see the kernel comment above)."""
    offsets = np.ascontiguousarray(offsets, np.int64)
    cut = np.ascontiguousarray(cut, np.int64)
    lens = np.diff(offsets)
    if cut.shape[0] != lens.shape[0] or np.any(cut < 0) or np.any(cut > lens):
        raise ValueError("cut: every cut point must lie in [0, session length]")
    clicks, co, c, oo, o = _labels_kernel(offsets, np.ascontiguousarray(aid), np.ascontiguousarray(type_), cut)
    return Labels(np.asarray(session_ids, np.int64).copy(), clicks, co, c, oo, o)


def write_labels(labels: Labels, path: str | os.PathLike) -> None:
    """Write labels as OTTO JSONL, atomically."""
    with atomic_file(path, "w") as fh:
        buf = []
        for i in range(len(labels)):
            buf.append(json.dumps({"session": int(labels.session_ids[i]), "labels": labels.row(i)},
                                  separators=(",", ":")))
            if len(buf) >= 65536:
                fh.write("\n".join(buf) + "\n")
                buf = []
        if buf:
            fh.write("\n".join(buf) + "\n")


def _aid(value, path, lineno, field) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LabelsError(f"{path}:{lineno}: field {field!r}: expected a non-negative integer aid, got {value!r}")
    return value


def read_labels(path: str | os.PathLike) -> Labels:
    """Read an OTTO labels JSONL file. Carts/orders become distinct ascending aids.

    Blank lines are skipped; anything else malformed raises ``LabelsError`` naming the line.
    A session id appearing twice is an error (the official evaluator would silently keep one).
    """
    path = Path(path)
    # int64 arrays, not lists: no Python object is kept per session or label
    sids, clicks, carts, orders = array("q"), array("q"), array("q"), array("q")
    co, oo = array("q", [0]), array("q", [0])
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise LabelsError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            except RecursionError:
                raise LabelsError(f"{path}:{lineno}: JSON nested too deeply") from None
            if not isinstance(obj, dict) or "session" not in obj or not isinstance(obj.get("labels"), dict):
                raise LabelsError(f"{path}:{lineno}: expected {{\"session\": int, \"labels\": {{...}}}}")
            sid = obj["session"]
            if isinstance(sid, bool) or not isinstance(sid, int):
                raise LabelsError(f"{path}:{lineno}: field 'session': expected an integer, got {sid!r}")
            lab = obj["labels"]
            unknown = set(lab) - {"clicks", "carts", "orders"}
            if unknown:
                raise LabelsError(f"{path}:{lineno}: field 'labels': unknown key {sorted(unknown)[0]!r}")
            c = lab.get("clicks")
            clicks.append(-1 if c is None else _aid(c, path, lineno, "labels.clicks"))
            for key, dest, offs in (("carts", carts, co), ("orders", orders, oo)):
                vals = lab.get(key, [])
                if not isinstance(vals, list):
                    raise LabelsError(f"{path}:{lineno}: field 'labels.{key}': expected a list, got {vals!r}")
                dest.extend(sorted({_aid(v, path, lineno, f"labels.{key}") for v in vals}))
                offs.append(len(dest))
            sids.append(sid)
    s = np.frombuffer(sids, np.int64).copy()
    if s.size != np.unique(s).size:
        u, cnt = np.unique(s, return_counts=True)
        raise LabelsError(f"{path}: session {int(u[cnt > 1][0])} appears on more than one line")
    arr = lambda a: np.frombuffer(a, np.int64).copy()  # noqa: E731
    return Labels(s, arr(clicks), arr(co), arr(carts), arr(oo), arr(orders))
