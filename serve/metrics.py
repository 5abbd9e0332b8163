"""Prometheus metrics (text exposition format 0.0.4) without a lock on the request path.

Each thread records into its own shard (plain dicts touched by that thread only); a scrape
sums the shards. Labels are bounded by construction: the route *template*
(``/api/v1/recommendations/{aid}``, never the aid itself), the method (one of a fixed set, else
``OTHER``) and the status code.

Exposed families:

* ``otto_http_requests_total{route,method,status}`` — counter
* ``otto_http_request_duration_seconds{route}`` — histogram (buckets :data:`BUCKETS`)
* ``otto_events_total{event}`` — counter of server events, including everything a limit drops;
  every event of :data:`EVENTS` is exposed from the start (0 until it happens)
* gauges supplied at scrape time by the server (model info, open connections, uptime)
"""
from __future__ import annotations

import bisect
import threading

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# event -> what it counts (the server's events; others may be counted too and are exposed as well)
EVENTS = {
    "connection_accepted": "a client connection was accepted",
    "accept_error": "accept() failed (e.g. out of file descriptors); accepting pauses for 0.1 s",
    "idle_evicted": "an idle keep-alive connection was closed to admit a new one at max_connections",
    "rejected_over_capacity": "a new connection got 503 at max_connections (no idle connection to evict)",
    "idle_closed": "a keep-alive connection idle for idle_timeout was closed",
    "request_timeout": "a request was not complete within request_timeout of its first byte (408)",
    "send_timeout": "a client left an answer unread for send_timeout; its connection was dropped",
    "reload": "a model reload succeeded",
    "reload_failed": "a model reload failed; the previous model is still served",
    "model_file_truncated": "a memory-mapped model file was truncated in place; the model was unloaded",
}


class _Shard:
    __slots__ = ("requests", "hist", "events")

    def __init__(self):
        self.requests: dict[tuple[str, str, int], int] = {}
        # route -> [per-bucket counts (len(BUCKETS)+1, last is +Inf), sum, count]
        self.hist: dict[str, list] = {}
        self.events: dict[str, int] = {}


class Metrics:
    """Request counters, a latency histogram per route and named event counters."""

    def __init__(self):
        self._local = threading.local()
        self._shards: list[_Shard] = []
        self._lock = threading.Lock()

    def _shard(self) -> _Shard:
        shard = getattr(self._local, "shard", None)
        if shard is None:
            shard = _Shard()
            with self._lock:
                self._shards.append(shard)
            self._local.shard = shard
        return shard

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency (``seconds`` >= 0)."""
        shard = self._shard()
        if method not in METHODS:
            method = "OTHER"
        key = (route, method, status)
        shard.requests[key] = shard.requests.get(key, 0) + 1
        h = shard.hist.get(route)
        if h is None:
            h = shard.hist[route] = [[0] * (len(BUCKETS) + 1), 0.0, 0]
        h[0][bisect.bisect_left(BUCKETS, seconds)] += 1
        h[1] += seconds
        h[2] += 1

    def event(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the event counter ``name``."""
        shard = self._shard()
        shard.events[name] = shard.events.get(name, 0) + n

    def snapshot(self) -> tuple[dict, dict, dict]:
        """Summed ``(requests, histograms, events)`` over all shards (a consistent-enough copy)."""
        with self._lock:
            shards = list(self._shards)
        requests: dict = {}
        hist: dict = {}
        events: dict = {}
        for s in shards:
            for k, v in list(s.requests.items()):
                requests[k] = requests.get(k, 0) + v
            for route, (counts, total, n) in list(s.hist.items()):
                h = hist.setdefault(route, [[0] * (len(BUCKETS) + 1), 0.0, 0])
                for i, c in enumerate(list(counts)):
                    h[0][i] += c
                h[1] += total
                h[2] += n
            for k, v in list(s.events.items()):
                events[k] = events.get(k, 0) + v
        return requests, hist, events

    def render(self, gauges: list[tuple[str, str, dict, float]]) -> bytes:
        """The exposition text. ``gauges`` are ``(name, help, labels, value)`` added as-is."""
        requests, hist, events = self.snapshot()
        out = ["# HELP otto_http_requests_total HTTP requests answered, by route template, method and status.",
               "# TYPE otto_http_requests_total counter"]
        for (route, method, status), v in sorted(requests.items()):
            out.append(f'otto_http_requests_total{{route="{_esc(route)}",method="{method}",status="{status}"}} {v}')
        out += ["# HELP otto_http_request_duration_seconds Time from a complete request to its response being built.",
                "# TYPE otto_http_request_duration_seconds histogram"]
        for route, (counts, total, n) in sorted(hist.items()):
            cum = 0
            r = _esc(route)
            for le, c in zip(BUCKETS, counts):
                cum += c
                out.append(f'otto_http_request_duration_seconds_bucket{{route="{r}",le="{le}"}} {cum}')
            out.append(f'otto_http_request_duration_seconds_bucket{{route="{r}",le="+Inf"}} {n}')
            out.append(f'otto_http_request_duration_seconds_sum{{route="{r}"}} {total!r}')
            out.append(f'otto_http_request_duration_seconds_count{{route="{r}"}} {n}')
        out += ["# HELP otto_events_total Server events, including connections and requests dropped by a limit.",
                "# TYPE otto_events_total counter"]
        for name, v in sorted({**dict.fromkeys(EVENTS, 0), **events}.items()):
            out.append(f'otto_events_total{{event="{_esc(name)}"}} {v}')
        seen = set()
        for name, help_, labels, value in gauges:
            if name not in seen:
                out += [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
                seen.add(name)
            lab = ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items())
            out.append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")
        return ("\n".join(out) + "\n").encode()


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))
