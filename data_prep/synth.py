"""Synthetic OTTO sessions: a calibrated, learnable generator writing OTTO JSONL.

``otto-prep synth OUT.jsonl --sessions N --items M --seed S`` writes ``N`` sessions in exactly the
byte format of the published OTTO files (compact JSON, keys ``session``/``events`` and
``aid``/``ts``/``type``, one session per line, ``"\\n"`` after every line, session ids ``0..N-1``).
A ``.gz`` suffix writes gzip (deterministic header: no name, mtime 0).

The model
=========
*Catalog* (a pure function of the seed and ``M``). Item indices ``0..M-1`` are split into ``K``
contiguous topics (categories) with log-normally distributed sizes (about ``topic_size`` items on
average). Item ``i`` has a popularity weight ``w_i = w_floor + exp(sigma_item * z_i)`` (``z_i``
standard normal clipped to ``+-z_cap``, which bounds the top item's share at full size), so
popularity is heavy-tailed inside every topic and a topic's mass is the sum of its items' weights.
Each item has ``R`` *related* items in its topic: slot ``j`` is, with probability ``p_local``, a
popularity-weighted near neighbour in index order (within ``LOCAL_WINDOW`` indices, inside the
topic: a sub-category), otherwise a popularity-weighted draw from the whole topic. Item indices are
mapped to aids by a seeded random permutation of ``[0, M)``, so aids carry no information about
topics or popularity.

*Sessions* (a pure function of the seed and the session id, so the output is identical for any
thread count or batch size). Session ``s`` draws its length ``L = clip(floor(exp(mu + sigma z)), 2,
500)`` and a start time from the inverse CDF of a daily-cycle density over the four-week window at
quantile ``(s + u) / N`` (so session ids are ordered by start time, as in the real files). It opens
on a popularity-weighted item (which fixes its first topic) and then emits events until it holds
exactly ``L``:

* checkout (probability ``p_checkout`` while items are carted and not yet ordered): orders every
  pending carted item with probability ``q_order`` (the last carted item always), all at one ts;
* cart (probability ``p_cart``): the last clicked item (probability ``p_cart_current``), else a
  recency-weighted earlier item of the session;
* click, the walk: revisit an earlier event's item (probability ``p_revisit``; ``g`` events back,
  ``g`` geometric with ``p_back``), follow the current item's related list (``p_related``; slot ``j``
  with probability proportional to ``related_decay**j``), a popularity-weighted item of the current
  topic (``p_topic``), or switch topic (the rest, ``1 - p_revisit - p_related - p_topic``: a
  popularity-weighted item of the whole catalog).

A few sessions start with a cart (``p_lead_cart``) or with a checkout of one or two items
(``p_lead_order``), as real sessions cut by the window do. Gaps between events are log-normal
seconds to minutes; with probability ``p_break`` a gap is a break of hours to days (every gap is
clipped to ``max_gap_h`` hours and is at least 1 ms). A session that
would run past the end of the window has its gaps scaled down to fit (counted as
``sessions_time_compressed``); a checkout cut short by the session length drops its remaining
orders (counted as ``orders_dropped_by_length``).

Default parameters are calibrated so that at the real size (12.9M sessions, ``M = N / 6.952``) the
statistics land close to the published ones (see ``otto-prep stats``).
"""
from __future__ import annotations

import gzip
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numba import njit

from . import fastparse
from .atomic import atomic_file
from .parallel import default_threads, run_ranges
from .progress import Progress
from .splitmix import GOLDEN, mix64

T0_MS = 1659304800000            # 2022-07-31 22:00:00 UTC, first ts of the OTTO train set
WINDOW_MS = 28 * 24 * 3600 * 1000  # four weeks
ITEMS_PER_SESSION = 1855603 / 12899779  # real ratio of items to sessions
MAX_SESSION_LEN = 500
MIN_SESSION_LEN = 2
RELATED = 8                       # related-list length R
LOCAL_WINDOW = 8                  # a "local" related item is within this many indices (same topic)

_GOLDEN = GOLDEN
_KEY_ITEMS = np.uint64(0x6A09E667F3BCC908)
_KEY_SESSIONS = np.uint64(0xBB67AE8584CAA73B)
_KEY_TOPICS = np.uint64(0x3C6EF372FE94F82B)
_KEY_PERM = np.uint64(0xA54FF53A5F1D36F1)


@dataclass(frozen=True)
class SynthParams:
    """Every knob of the generative model (see the module docstring for their meaning)."""

    len_mu: float = 1.80
    len_sigma: float = 1.44
    topic_size: float = 60.0
    topic_sigma: float = 1.0
    sigma_item: float = 2.4
    z_cap: float = 4.1
    w_floor: float = 1.5
    p_local: float = 0.6
    related_decay: float = 0.7
    p_revisit: float = 0.30
    p_back: float = 0.45
    p_related: float = 0.42
    p_topic: float = 0.20
    p_cart: float = 0.082
    p_cart_current: float = 0.8
    p_checkout: float = 0.023
    q_order: float = 0.5
    p_lead_cart: float = 0.03
    p_lead_order: float = 0.01
    gap_median_s: float = 25.0
    gap_sigma: float = 1.3
    p_break: float = 0.04
    break_median_h: float = 8.0
    break_sigma: float = 1.5
    max_gap_h: float = 168.0
    daily_amplitude: float = 0.5

    def validate(self) -> "SynthParams":
        """Raise ``SynthError`` naming the first field outside its range; return self."""
        v = asdict(self)
        probs = ("p_local", "p_revisit", "p_back", "p_related", "p_topic", "p_cart", "p_cart_current",
                 "p_checkout", "q_order", "p_lead_cart", "p_lead_order", "p_break")
        for name in probs:
            if not 0.0 <= v[name] <= 1.0:
                raise SynthError(f"params.{name}: must be a probability in [0, 1], got {v[name]}")
        for name in ("len_sigma", "topic_size", "topic_sigma", "sigma_item", "z_cap", "gap_median_s",
                     "gap_sigma", "break_median_h", "break_sigma", "max_gap_h", "related_decay"):
            if not (v[name] >= 0.0 and math.isfinite(v[name])):
                raise SynthError(f"params.{name}: must be finite and >= 0, got {v[name]}")
        if v["topic_size"] < 1.0:
            raise SynthError(f"params.topic_size: must be >= 1, got {v['topic_size']}")
        if v["w_floor"] < 0.0 or not math.isfinite(v["w_floor"]):
            raise SynthError(f"params.w_floor: must be finite and >= 0, got {v['w_floor']}")
        if v["p_revisit"] + v["p_related"] + v["p_topic"] > 1.0:
            raise SynthError("params.p_revisit + p_related + p_topic: must be <= 1")
        if v["p_checkout"] + v["p_cart"] > 1.0:
            raise SynthError("params.p_checkout + p_cart: must be <= 1")
        if v["p_lead_cart"] + v["p_lead_order"] > 1.0:
            raise SynthError("params.p_lead_cart + p_lead_order: must be <= 1")
        if not 0.0 <= v["daily_amplitude"] < 1.0:
            raise SynthError(f"params.daily_amplitude: must be in [0, 1), got {v['daily_amplitude']}")
        return self

    def as_array(self) -> np.ndarray:
        """The parameters as a float64 vector in field order (what the kernels take)."""
        return np.array(list(asdict(self).values()), dtype=np.float64)


_PARAM_INDEX = {name: i for i, name in enumerate(SynthParams.__dataclass_fields__)}
# kernel-side indices into the parameter vector (constants, so numba folds them)
P_LEN_MU, P_LEN_SIGMA = _PARAM_INDEX["len_mu"], _PARAM_INDEX["len_sigma"]
P_LOCAL, P_DECAY = _PARAM_INDEX["p_local"], _PARAM_INDEX["related_decay"]
P_REVISIT, P_BACK = _PARAM_INDEX["p_revisit"], _PARAM_INDEX["p_back"]
P_RELATED, P_TOPIC = _PARAM_INDEX["p_related"], _PARAM_INDEX["p_topic"]
P_CART, P_CART_CUR = _PARAM_INDEX["p_cart"], _PARAM_INDEX["p_cart_current"]
P_CHECKOUT, Q_ORDER = _PARAM_INDEX["p_checkout"], _PARAM_INDEX["q_order"]
P_LEAD_CART, P_LEAD_ORDER = _PARAM_INDEX["p_lead_cart"], _PARAM_INDEX["p_lead_order"]
P_GAP_MED, P_GAP_SIG = _PARAM_INDEX["gap_median_s"], _PARAM_INDEX["gap_sigma"]
P_BREAK, P_BREAK_MED, P_BREAK_SIG = (_PARAM_INDEX["p_break"], _PARAM_INDEX["break_median_h"],
                                     _PARAM_INDEX["break_sigma"])
P_MAX_GAP = _PARAM_INDEX["max_gap_h"]


class SynthError(ValueError):
    """Invalid generator arguments; the message names the argument."""


# ---------------------------------------------------------------------------------------------
# Random numbers: SplitMix64 (data_prep.splitmix). State is one uint64; every draw returns
# (new_state, value). Streams are keyed by hashing (key, index), so each session/item has its own
# stream.
# ---------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _stream(key, index):
    """Initial state of stream ``index`` under ``key`` (uint64, int) -> uint64."""
    return mix64(key ^ mix64(np.uint64(index) + _GOLDEN))


@njit(cache=True, nogil=True)
def _uniform(state):
    """(state) -> (state', u) with u uniform in [0, 1) at 53-bit resolution."""
    state = state + _GOLDEN
    return state, float(mix64(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, nogil=True)
def _normal(state):
    """(state) -> (state', z) with z standard normal (Box-Muller, one of the pair)."""
    state, u1 = _uniform(state)
    state, u2 = _uniform(state)
    return state, math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


@njit(cache=True, nogil=True)
def _geometric(state, p, cap):
    """(state) -> (state', g): failures before the first success, P(g) = (1-p)^g p, g <= cap."""
    state, u = _uniform(state)
    g = int(math.log(1.0 - u) / math.log(1.0 - p)) if p < 1.0 else 0
    return state, min(g, cap)


@njit(cache=True, nogil=True)
def _weighted_pick(cum, lo, hi, u):
    """Index i in [lo, hi) with probability (cum[i+1] - cum[i]) / (cum[hi] - cum[lo]).

    cum: float64 [M+1] non-decreasing cumulative weights, cum[0] = 0; requires hi > lo; u in [0,1).
    Binary search for the last i with cum[i] <= target = cum[lo] + u (cum[hi] - cum[lo]); zero-weight
    items are never returned unless the whole range has zero weight (then hi - 1).
    """
    target = cum[lo] + u * (cum[hi] - cum[lo])
    a, b = lo, hi - 1
    while a < b:
        m = (a + b + 1) >> 1
        if cum[m] <= target:
            a = m
        else:
            b = m - 1
    return a


# ---------------------------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _item_weights_kernel(lo, hi, key, sigma, z_cap, floor, w):
    """w[i] = floor + exp(sigma * clip(z_i, -z_cap, z_cap)) for i in [lo, hi); w float64 [M].

    z_i is the first normal of stream (key, i), so the result does not depend on the ranges.
    """
    for i in range(lo, hi):
        st = _stream(key, i)
        st, z = _normal(st)
        w[i] = floor + math.exp(sigma * min(max(z, -z_cap), z_cap))


@njit(cache=True, nogil=True)
def _related_kernel(lo_item, hi_item, key, topic_start, item_topic, cum_w, p_local, related):
    """Fill related[i, :] for items i in [lo_item, hi_item) (int32 [M, R], in place).

    topic_start: int64 [K+1], topic t holds items topic_start[t] .. topic_start[t+1]-1 (non-empty).
    item_topic: int32 [M]. cum_w: float64 [M+1] cumulative popularity weights (cum_w[0] = 0).
    Slot j: with probability p_local a popularity-weighted item within LOCAL_WINDOW indices of i in
    its topic, else a popularity-weighted item of the topic. Up to 8 draws avoid i itself and
    earlier slots; after that a repeat is kept (small topics). A one-item topic relates the item to
    itself. Item i uses stream (key ^ golden, i) only.
    """
    R = related.shape[1]
    for i in range(lo_item, hi_item):
        t = item_topic[i]
        lo, hi = topic_start[t], topic_start[t + 1]
        st = _stream(key ^ _GOLDEN, i)
        for j in range(R):
            if hi - lo == 1:
                related[i, j] = i
                continue
            cand = i
            for _attempt in range(8):
                st, u = _uniform(st)
                st, u2 = _uniform(st)
                if u < p_local:
                    cand = _weighted_pick(cum_w, max(lo, i - LOCAL_WINDOW), min(hi, i + LOCAL_WINDOW + 1), u2)
                else:
                    cand = _weighted_pick(cum_w, lo, hi, u2)
                dup = cand == i
                for k in range(j):
                    if related[i, k] == cand:
                        dup = True
                if not dup:
                    break
            related[i, j] = cand


@njit(cache=True, nogil=True)
def _permutation_kernel(key, n):
    """A uniformly random permutation of 0..n-1 (Fisher-Yates), int32 [n], from stream (key, 0)."""
    perm = np.arange(n).astype(np.int32)
    st = _stream(key, 0)
    for i in range(n - 1, 0, -1):
        st, u = _uniform(st)
        j = int(u * (i + 1))
        perm[i], perm[j] = perm[j], perm[i]
    return perm


@dataclass(frozen=True)
class Catalog:
    """Item-level structure: topics, popularity, related lists, index -> aid."""

    topic_start: np.ndarray   # int64 [K+1]
    item_topic: np.ndarray    # int32 [M]
    cum_w: np.ndarray         # float64 [M+1]
    related: np.ndarray       # int32 [M, R]
    aid_of: np.ndarray        # int32 [M]

    @property
    def n_items(self) -> int:
        return int(self.item_topic.shape[0])

    @property
    def n_topics(self) -> int:
        return int(self.topic_start.shape[0] - 1)


def _seed_key(seed: int, salt: np.uint64) -> np.uint64:
    s = np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        return np.uint64(mix64(np.uint64(s ^ salt)))


def build_catalog(n_items: int, seed: int, params: SynthParams | None = None, threads: int = 1) -> Catalog:
    """The catalog for ``n_items`` items under ``seed`` (deterministic; ``threads`` never matters)."""
    params = params or SynthParams()
    M = int(n_items)
    K = max(1, int(round(M / params.topic_size)))
    # topic sizes: log-normal shares of the M - K items left after one item per topic
    tkey = _seed_key(seed, _KEY_TOPICS)
    raw = np.exp(params.topic_sigma * _normals(tkey, K))
    share = np.concatenate(([0.0], np.cumsum(raw)))
    share /= share[-1]
    topic_start = np.arange(K + 1, dtype=np.int64) + np.floor(share * (M - K)).astype(np.int64)
    topic_start[-1] = M
    item_topic = np.repeat(np.arange(K, dtype=np.int32), np.diff(topic_start))
    w = np.empty(M, dtype=np.float64)
    run_ranges(M, threads, _item_weights_kernel, _seed_key(seed, _KEY_ITEMS), params.sigma_item,
               params.z_cap, params.w_floor, w, min_per_range=1024)
    cum_w = np.zeros(M + 1, dtype=np.float64)
    np.cumsum(w, out=cum_w[1:])
    related = np.empty((M, RELATED), dtype=np.int32)
    run_ranges(M, threads, _related_kernel, _seed_key(seed, _KEY_ITEMS), topic_start, item_topic,
               cum_w, params.p_local, related, min_per_range=1024)
    aid_of = _permutation_kernel(_seed_key(seed, _KEY_PERM), M)
    return Catalog(topic_start, item_topic, cum_w, related, aid_of)


@njit(cache=True, nogil=True)
def _normals_kernel(key, out):
    """out[i] = a standard normal from stream (key, i); out float64 [n]."""
    for i in range(out.shape[0]):
        st = _stream(key, i)
        st, z = _normal(st)
        out[i] = z


def _normals(key: np.uint64, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.float64)
    _normals_kernel(key, out)
    return out


# ---------------------------------------------------------------------------------------------
# Session start times: inverse CDF of a daily-cycle density over the window
# ---------------------------------------------------------------------------------------------
def start_time_table(amplitude: float, window_ms: int = WINDOW_MS, step_ms: int = 60_000) -> np.ndarray:
    """CDF knots of the start-time density, float64 [window/step + 1] with table[0] = 0, table[-1] = 1.

    Density at offset t (ms after T0 = 00:00 Berlin time) is 1 + a*cos(2 pi (h - 20) / 24), h the
    hour of day, peaking at 20:00 local and lowest at 08:00. Linear between knots of ``step_ms``.
    """
    if not 0.0 <= amplitude < 1.0:
        raise SynthError(f"daily_amplitude: must be in [0, 1), got {amplitude}")
    n = window_ms // step_ms
    mid_h = ((np.arange(n) + 0.5) * step_ms / 3.6e6) % 24.0
    dens = 1.0 + amplitude * np.cos(2 * np.pi * (mid_h - 20.0) / 24.0)
    cdf = np.concatenate(([0.0], np.cumsum(dens)))
    return cdf / cdf[-1]


# ---------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _session_length(st, params):
    """(state) -> (state', L) with L = clip(floor(exp(mu + sigma z)), 2, 500)."""
    st, z = _normal(st)
    x = math.exp(params[P_LEN_MU] + params[P_LEN_SIGMA] * z)
    if x > MAX_SESSION_LEN:
        x = MAX_SESSION_LEN
    L = int(x)
    return st, max(L, MIN_SESSION_LEN)


@njit(cache=True, nogil=True)
def _lengths_kernel(lo, hi, key, first_session, params, lengths):
    """lengths[j] = length of session first_session + j for j in [lo, hi) (int64 [B]).

    The length is the first draw of the session's stream (key, session), as in _sessions_kernel.
    """
    for j in range(lo, hi):
        st = _stream(key, first_session + j)
        st, L = _session_length(st, params)
        lengths[j] = L


@njit(cache=True, nogil=True)
def _gap_ms(st, params):
    """(state) -> (state', gap in ms): log-normal seconds, or with p_break a break of hours.

    Clipped to [1 ms, max_gap_h hours]; always two draws (uniform, normal).
    """
    st, u = _uniform(st)
    st, z = _normal(st)
    if u < params[P_BREAK]:
        g = params[P_BREAK_MED] * 3.6e6 * math.exp(params[P_BREAK_SIG] * z)
    else:
        g = params[P_GAP_MED] * 1000.0 * math.exp(params[P_GAP_SIG] * z)
    if g > params[P_MAX_GAP] * 3.6e6:
        g = params[P_MAX_GAP] * 3.6e6
    return st, max(int(g), 1)


@njit(cache=True, nogil=True)
def _sessions_kernel(lo_row, hi_row, key, first_session, n_total, offsets, topic_start, item_topic,
                     cum_w, related, start_cdf, params, item, ts, typ, dropped_orders, compressed):
    """Generate the events of batch rows [lo_row, hi_row), i.e. sessions first_session + row.

    key: uint64 stream key; session s uses stream (key, s) only, so output does not depend on the
    batch boundaries or the thread count. n_total: N, total sessions (for start-time quantiles).
    offsets: int64 [B+1] CSR offsets from the lengths kernel (its lengths are re-drawn here, equal).
    Catalog arrays (``Catalog``): topic_start int64 [K+1], item_topic int32 [M], cum_w float64 [M+1],
    related int32 [M, R], all C-contiguous. start_cdf: float64 [T+1] from ``start_time_table``.
    Degenerate cases: a one-item catalog repeats item 0; a one-item topic relates to itself; the
    last session of the window may be squeezed into the final milliseconds (equal ts allowed).
    params: float64 vector (``SynthParams.as_array``). Outputs (length E = offsets[B]): item int32
    item indices, ts int64 ms, typ uint8 (0 clicks, 1 carts, 2 orders). Per session (int64 [B]):
    dropped_orders = orders of a checkout cut off by the length; compressed = 1 when the gaps were
    scaled to end inside the window.
    """
    M = item_topic.shape[0]
    R = related.shape[1]
    # related-slot CDF: P(slot j) proportional to decay^j
    rel_cdf = np.empty(R, dtype=np.float64)
    acc = 0.0
    for j in range(R):
        acc += params[P_DECAY] ** j
        rel_cdf[j] = acc
    for j in range(R):
        rel_cdf[j] /= acc
    n_knots = start_cdf.shape[0] - 1
    step = WINDOW_MS / n_knots
    c_revisit = params[P_REVISIT]
    c_related = c_revisit + params[P_RELATED]
    c_topic = c_related + params[P_TOPIC]
    pending = np.empty(MAX_SESSION_LEN, dtype=np.int32)   # carted, not yet ordered (item indices)
    for j in range(lo_row, hi_row):
        s = first_session + j
        st = _stream(key, s)
        st, L = _session_length(st, params)
        a = offsets[j]
        # start time: inverse CDF at quantile (s + u) / N
        st, u = _uniform(st)
        q = (s + u) / n_total
        lo, hi = 0, n_knots
        while lo + 1 < hi:
            m = (lo + hi) >> 1
            if start_cdf[m] <= q:
                lo = m
            else:
                hi = m
        span = start_cdf[lo + 1] - start_cdf[lo]
        frac = (q - start_cdf[lo]) / span if span > 0 else 0.0
        start = int((lo + frac) * step)
        n_pending = 0
        n = 0
        t_off = 0
        last_click = -1
        st, u = _uniform(st)
        cur = _weighted_pick(cum_w, 0, M, u)
        topic = item_topic[cur]
        # session openings cut by the window: a checkout or a cart
        st, u = _uniform(st)
        if u < params[P_LEAD_ORDER]:
            st, u2 = _uniform(st)
            k = 1 if u2 < 0.6 else 2
            for _ in range(min(k, L - 1)):
                if n > 0:
                    st, u3 = _uniform(st)
                    cur = _weighted_pick(cum_w, topic_start[topic], topic_start[topic + 1], u3)
                item[a + n] = cur
                ts[a + n] = 0
                typ[a + n] = 2
                n += 1
            st, g = _gap_ms(st, params)
            t_off += g
        elif u < params[P_LEAD_ORDER] + params[P_LEAD_CART]:
            item[a + n] = cur
            ts[a + n] = 0
            typ[a + n] = 1
            pending[n_pending] = cur
            n_pending += 1
            n += 1
            st, g = _gap_ms(st, params)
            t_off += g
        dropped = 0
        while n < L:
            st, r = _uniform(st)
            if n_pending > 0 and r < params[P_CHECKOUT]:
                # checkout: every pending item with prob q_order, the last carted always; one ts
                keep = 0
                for k in range(n_pending):
                    st, u2 = _uniform(st)
                    if k == n_pending - 1 or u2 < params[Q_ORDER]:
                        if n < L:
                            item[a + n] = pending[k]
                            ts[a + n] = t_off
                            typ[a + n] = 2
                            n += 1
                        else:
                            dropped += 1
                    else:
                        pending[keep] = pending[k]
                        keep += 1
                n_pending = keep
            elif params[P_CHECKOUT] <= r < params[P_CHECKOUT] + params[P_CART] and n > 0:
                st, u2 = _uniform(st)
                if u2 < params[P_CART_CUR] and last_click >= 0:
                    it = last_click
                else:
                    st, g = _geometric(st, params[P_BACK], n - 1)
                    it = item[a + n - 1 - g]
                item[a + n] = it
                ts[a + n] = t_off
                typ[a + n] = 1
                n += 1
                dup = False
                for k in range(n_pending):
                    if pending[k] == it:
                        dup = True
                if not dup:
                    pending[n_pending] = it
                    n_pending += 1
            else:
                if n == 0:
                    nxt = cur
                else:
                    st, u2 = _uniform(st)
                    st, u3 = _uniform(st)
                    if u2 < c_revisit:
                        st, g = _geometric(st, params[P_BACK], n - 1)
                        nxt = item[a + n - 1 - g]
                    elif u2 < c_related:
                        sl = 0
                        while sl < R - 1 and rel_cdf[sl] <= u3:
                            sl += 1
                        nxt = related[cur, sl]
                    elif u2 < c_topic:
                        nxt = _weighted_pick(cum_w, topic_start[topic], topic_start[topic + 1], u3)
                    else:
                        nxt = _weighted_pick(cum_w, 0, M, u3)
                cur = nxt
                topic = item_topic[cur]
                last_click = cur
                item[a + n] = cur
                ts[a + n] = t_off
                typ[a + n] = 0
                n += 1
            if n < L:
                st, g = _gap_ms(st, params)
                t_off += g
        # fit the session inside the window: scale the offsets when it would run past the end
        last = ts[a + L - 1]
        room = WINDOW_MS - 1 - start
        comp = 0
        if last > room:
            comp = 1
            scale = room / last
            for k in range(L):
                ts[a + k] = int(ts[a + k] * scale)
        for k in range(L):
            ts[a + k] += T0_MS + start
        dropped_orders[j] = dropped
        compressed[j] = comp


# ---------------------------------------------------------------------------------------------
# JSON formatting: the one compact OTTO JSONL writer (data_prep.fastparse.export_sizes/export_fill)
# ---------------------------------------------------------------------------------------------
def format_batch(first_session: int, offsets: np.ndarray, aid: np.ndarray, ts: np.ndarray,
                 typ: np.ndarray, threads: int = 1) -> np.ndarray:
    """Compact OTTO JSONL bytes (uint8 array) of consecutive sessions numbered from ``first_session``.

    offsets int64 [B+1], aid int32 [E] (>= 0), ts int64 [E] (>= 0), typ uint8 [E] in {0, 1, 2}.
    Equal to ``json.dumps(obj, separators=(",", ":")) + "\\n"`` per session.
    """
    B = offsets.shape[0] - 1
    sids = np.arange(first_session, first_session + B, dtype=np.int64)
    offsets = np.ascontiguousarray(offsets, np.int64)
    aid = np.ascontiguousarray(aid, np.int32)
    lens = np.empty(B, dtype=np.int64)
    run_ranges(B, threads, lambda lo, hi: fastparse.export_sizes(sids, offsets, aid, ts, typ, 0, lo, hi, lens),
               min_per_range=1024)
    if B and lens.min() < 0:
        raise SynthError(f"session {first_session + int(np.argmax(lens < 0))}: cannot be written as an OTTO record")
    line_start = np.zeros(B + 1, dtype=np.int64)
    np.cumsum(lens, out=line_start[1:])
    buf = np.empty(int(line_start[-1]), dtype=np.uint8)
    run_ranges(B, threads, lambda lo, hi: fastparse.export_fill(sids, offsets, aid, ts, typ, 0, lo, hi, line_start, buf),
               min_per_range=1024)
    return buf


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def default_items(n_sessions: int) -> int:
    """Items for ``n_sessions`` at the real ratio (12,899,779 sessions : 1,855,603 items), >= 1."""
    return max(1, int(round(n_sessions * ITEMS_PER_SESSION)))


def generate_batch(catalog: Catalog, first_session: int, n_batch: int, n_sessions: int, seed: int,
                   params: SynthParams | None = None, start_cdf: np.ndarray | None = None,
                   threads: int = 1):
    """Sessions ``first_session .. first_session + n_batch - 1`` of an ``n_sessions`` run, as arrays.

    Returns ``(offsets int64 [B+1], aid int32 [E], ts int64 [E], type uint8 [E],
    item int32 [E] (item indices), dropped_orders int64 [B], compressed int64 [B])``. The same
    session always comes out the same, whatever the batch boundaries or ``threads``.
    """
    params = params or SynthParams()
    pv = params.as_array()
    if start_cdf is None:
        start_cdf = start_time_table(params.daily_amplitude)
    key = _seed_key(seed, _KEY_SESSIONS)
    lengths = np.empty(n_batch, dtype=np.int64)
    run_ranges(n_batch, threads, _lengths_kernel, key, first_session, pv, lengths, min_per_range=1024)
    offsets = np.zeros(n_batch + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    E = int(offsets[-1])
    item = np.empty(E, dtype=np.int32)
    ts = np.empty(E, dtype=np.int64)
    typ = np.empty(E, dtype=np.uint8)
    dropped = np.empty(n_batch, dtype=np.int64)
    compressed = np.empty(n_batch, dtype=np.int64)
    run_ranges(n_batch, threads, _sessions_kernel, key, first_session, n_sessions, offsets,
               catalog.topic_start, catalog.item_topic, catalog.cum_w, catalog.related, start_cdf,
               pv, item, ts, typ, dropped, compressed, min_per_range=1024)
    aid = catalog.aid_of[item]
    return offsets, aid, ts, typ, item, dropped, compressed


def _check_args(n_sessions, n_items, seed, batch_sessions, threads):
    for name, v, lo, hi in (("sessions", n_sessions, 1, 2**40), ("items", n_items, 1, 2**31 - 1),
                            ("batch_sessions", batch_sessions, 1, 2**40)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
            raise SynthError(f"{name}: must be an integer in [{lo}, {hi}], got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise SynthError(f"seed: must be an integer in [0, 2**64), got {seed!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise SynthError(f"threads: must be a positive integer, got {threads!r}")


def generate(out_path: str | os.PathLike, n_sessions: int, n_items: int | None = None, seed: int = 0, *,
             quiet: bool = False, threads: int | None = None, batch_sessions: int = 65536,
             params: SynthParams | None = None) -> dict:
    """Write ``n_sessions`` synthetic sessions over ``n_items`` items as OTTO JSONL; return a summary.

    ``n_items`` None means ``default_items(n_sessions)``. The output is a pure function of
    (``n_sessions``, ``n_items``, ``seed``, ``params``): ``threads`` (worker threads, default all CPUs) and
    ``batch_sessions`` (sessions generated and formatted per write; bounds the memory) do not change
    a byte. Suffix ``.gz`` writes gzip. The file appears atomically (an existing one is replaced).
    """
    if n_items is None:
        n_items = default_items(int(n_sessions))
    _check_args(n_sessions, n_items, seed, batch_sessions, threads)
    params = (params or SynthParams()).validate()
    n_sessions, n_items, seed = int(n_sessions), int(n_items), int(seed)
    threads = default_threads() if threads is None else int(threads)
    out_path = Path(out_path)
    t_start = time.perf_counter()
    catalog = build_catalog(n_items, seed, params, threads)
    start_cdf = start_time_table(params.daily_amplitude)
    item_counts = np.zeros(n_items, dtype=np.int64)
    type_counts = np.zeros(3, dtype=np.int64)
    dropped_orders = compressed = n_events = n_bytes = 0
    progress = Progress("synth", n_sessions, unit="sessions", quiet=quiet)
    with atomic_file(out_path, "wb") as raw, ThreadPoolExecutor(max_workers=1) as writer:
        fh = (gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0)
              if out_path.suffix == ".gz" else raw)
        pending_write = None  # batch k is written while batch k+1 is generated
        try:
            for first in range(0, n_sessions, batch_sessions):
                nb = min(batch_sessions, n_sessions - first)
                offsets, aid, ts, typ, item, dr, comp = generate_batch(
                    catalog, first, nb, n_sessions, seed, params, start_cdf, threads)
                buf = format_batch(first, offsets, aid, ts, typ, threads)
                if pending_write is not None:
                    pending_write.result()
                pending_write = writer.submit(fh.write, memoryview(buf))
                item_counts += np.bincount(item, minlength=n_items)
                type_counts += np.bincount(typ, minlength=3)
                dropped_orders += int(dr.sum())
                compressed += int(comp.sum())
                n_events += int(offsets[-1])
                n_bytes += int(buf.shape[0])
                progress.update(first + nb, f"{n_bytes / 1e6:,.1f} MB")
            if pending_write is not None:
                pending_write.result()
        finally:
            if pending_write is not None:
                pending_write.exception()  # wait; an error is re-raised by result() above
            if fh is not raw:
                fh.close()
    seconds = time.perf_counter() - t_start
    summary = {
        "path": str(out_path),
        "sessions": n_sessions,
        "events": n_events,
        "clicks": int(type_counts[0]),
        "carts": int(type_counts[1]),
        "orders": int(type_counts[2]),
        "items": int(np.count_nonzero(item_counts)),
        "n_items": n_items,
        "topics": catalog.n_topics,
        "seed": seed,
        "jsonl_bytes": n_bytes,
        "orders_dropped_by_length": dropped_orders,
        "sessions_time_compressed": compressed,
        "seconds": round(seconds, 3),
    }
    progress.close(n_sessions, f"{n_bytes / 1e6:,.1f} MB")
    return summary


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def register(subparsers) -> None:
    from .command import int_at_least, positive_int
    from .flags import add_run_flags
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic OTTO sessions (JSONL)",
        description="Write synthetic sessions in the exact OTTO JSONL format (one compact JSON object "
                    "per line, session ids 0..N-1 ordered by start time, ts in ms over the four weeks "
                    "from 2022-07-31 22:00 UTC). Items fall into topics with heavy-tailed popularity; "
                    "sessions walk between related items, revisit earlier ones, cart some and check "
                    "out carted items with one shared ts. Defaults are calibrated to the published "
                    "OTTO train statistics. The output is fully determined by --sessions, --items and "
                    "--seed; it is written atomically, in batches of bounded memory.",
    )
    p.add_argument("out", metavar="OUT.jsonl", help="output file; a .gz suffix writes gzip")
    p.add_argument("--sessions", type=positive_int, default=100_000, metavar="N",
                   help="number of sessions N (default 100000; the real train set has 12899779)")
    p.add_argument("--items", type=positive_int, default=None, metavar="M",
                   help="size M of the item catalog; aids are in [0, M) (default N/6.952, the real "
                        "ratio of sessions to items; items that get no event do not appear)")
    p.add_argument("--seed", type=int_at_least(0), default=0, metavar="S", help="random seed, 0 <= S < 2**64 (default 0)")
    add_run_flags(p, threads="worker threads; never changes the output")
    p.add_argument("--batch-sessions", type=positive_int, default=65536, metavar="B",
                   help="sessions generated per batch before writing; bounds memory (default 65536); "
                        "never changes the output")
    add_run_flags(p, quiet=True)
    p.set_defaults(func=_main)


def _main(args) -> int:
    from .command import UsageError
    try:  # every argument checked before any work, reported by its flag
        n_items = default_items(args.sessions) if args.items is None else args.items
        _check_args(args.sessions, n_items, args.seed, args.batch_sessions, args.threads)
    except SynthError as exc:
        name, _, why = str(exc).partition(": ")
        raise UsageError(f"--{name.replace('_', '-')}: {why}") from None
    s = generate(args.out, args.sessions, args.items, args.seed, quiet=args.quiet,
                 threads=args.threads, batch_sessions=args.batch_sessions)
    if not args.quiet:
        print(f"synth: wrote {s['path']}: {s['sessions']:,} sessions, {s['events']:,} events "
              f"({s['clicks']:,} clicks, {s['carts']:,} carts, {s['orders']:,} orders), "
              f"{s['items']:,} of {s['n_items']:,} items used, {s['jsonl_bytes'] / 1e6:,.1f} MB JSONL, "
              f"{s['orders_dropped_by_length']:,} orders dropped by session length, "
              f"{s['sessions_time_compressed']:,} sessions compressed to fit the window, "
              f"{s['seconds']:.1f} s", file=sys.stderr)
    return 0
