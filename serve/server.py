"""The HTTP/1.1 server: ``http.server`` shape, a bounded worker pool and a poller for idle sockets.

Shape. :class:`Server` is an :class:`http.server.HTTPServer` subclass holding the read-only
model (``server.recommender``: one reference, swapped whole on reload) and :class:`Handler` is a
:class:`http.server.BaseHTTPRequestHandler` subclass with one dispatch point
(:meth:`Handler.dispatch`). The pieces of the standard classes that answer in HTML or block
a thread per connection are replaced:

* **Threads.** ``serve_forever`` runs a poller (a ``selectors`` loop) that accepts connections and
  watches *idle* keep-alive sockets. When a socket becomes readable it is queued to one of
  ``threads`` worker threads (a fixed pool). The worker reads, parses and answers requests on
  that connection while bytes keep arriving; after an answer it waits at most ``linger`` seconds
  for the next request (only when no other connection is queued), then hands the socket back to
  the poller. So an idle or slow (slowloris) connection holds no thread, and a busy keep-alive
  connection costs no hand-off per request.
* **Limits** (all parameters of :class:`ServerConfig`; every drop is counted in
  ``otto_events_total``): ``max_connections`` open sockets (beyond: ``503`` + ``Retry-After`` and
  close, event ``rejected_over_capacity``); ``idle_timeout`` for a keep-alive socket with no
  request in progress (event ``idle_closed``); ``request_timeout`` from the first byte of a
  request to its last (``408`` and close, event ``request_timeout``); ``max_request_line``
  (``414``); ``max_headers`` / ``max_header_bytes`` (``431``); ``max_body`` (``413``).
* **Answers.** Every response, errors included, is one ``bytes`` object (status line, headers,
  body) written with one ``sendall``; it always carries ``Content-Length`` and ``X-Response-Time``.
  Errors are ``application/problem+json``. Nothing is raised into ``serve_forever``: an
  unexpected exception in a handler is logged and answered ``500``.
* **Lifecycle.** :meth:`Server.reload` loads a model fully, then swaps the reference; requests
  in flight finish on the model they started with. :meth:`Server.drain` stops accepting, closes
  idle sockets, lets requests in flight finish (each answered with ``Connection: close``) and
  makes ``serve_forever`` return; :meth:`Server.shutdown` is drain-and-wait.
"""
from __future__ import annotations

import collections
import email.utils
import http.server
import logging
import os
import queue
import re
import select
import selectors
import socket
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

from . import app
from .metrics import Metrics
from .problems import PROBLEM_CONTENT_TYPE, HTTPProblem, reason
from .recommend import DEFAULT_DECAY, DEFAULT_TYPE_WEIGHTS, Recommender

log = logging.getLogger("serve")
access_log = logging.getLogger("serve.access")

SERVER_NAME = "otto-serve"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_VERSION = re.compile(r"HTTP/(\d)\.(\d)\Z")
ROUTE_UNPARSED = "(unparsed)"
REQUEUE = "requeue"


@dataclass
class ServerConfig:
    """Every limit of the server, with its default. Times are seconds, sizes bytes.

    threads             worker threads per process (a fixed pool).
    max_connections     open connections per process; beyond it new ones get 503 + Retry-After
                        and are closed.
    backlog             listen() backlog.
    idle_timeout        seconds a keep-alive connection may sit idle between requests before it
                        is closed.
    request_timeout     seconds from the first byte of a request to its last (slow clients get
                        408 and are closed).
    linger              seconds a worker thread waits for the next request on a busy keep-alive
                        connection before handing it back to the poller (0: never wait).
    max_request_line    bytes of the request line; 414 beyond.
    max_headers         header fields; 431 beyond.
    max_header_bytes    bytes of all headers; 431 beyond.
    max_body            request body bytes; 413 beyond.
    max_session_events  events per POST /api/v1/recommendations session; 413 beyond.
    drain_timeout       on SIGTERM, seconds to wait for requests in flight before exiting anyway.
    access_log          log one line per request on stderr.
    reuse_port          set SO_REUSEPORT on the listening socket (several processes on one port;
                        otto-serve --workers > 1 implies it).
    type_weights        weight of clicks, carts and orders in the session vector.
    decay               recency decay: event i of n is weighted decay^(n-1-i), 0 < decay <= 1.
    """

    threads: int = 8
    max_connections: int = 1024
    backlog: int = 1024
    idle_timeout: float = 30.0
    request_timeout: float = 10.0
    linger: float = 0.005
    max_request_line: int = 8192
    max_headers: int = 100
    max_header_bytes: int = 16384
    max_body: int = 1 << 20
    max_session_events: int = 500
    drain_timeout: float = 10.0
    access_log: bool = False
    reuse_port: bool = False
    type_weights: tuple = DEFAULT_TYPE_WEIGHTS
    decay: float = DEFAULT_DECAY

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("access_log", "reuse_port", "type_weights"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                if not (f.name == "linger" and v == 0):
                    raise ValueError(f"{f.name}: expected a positive number, got {v!r}")
        w = self.type_weights
        if (not isinstance(w, tuple) or len(w) != 3
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x < float("inf") for x in w)):
            raise ValueError(f"type_weights: expected three non-negative numbers (clicks, carts, orders), got {w!r}")
        if not self.decay <= 1:
            raise ValueError(f"decay: expected 0 < decay <= 1, got {self.decay!r}")


# --- date header, cached per second -------------------------------------------------------------
_date_cache = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[1] = email.utils.formatdate(now, usegmt=True)
        _date_cache[0] = now
    return _date_cache[1]


def build_response(status: int, body: bytes, content_type: str, headers: dict[str, str] | None,
                   elapsed: float, *, close: bool, keep_alive_header: bool = False, head_only: bool = False) -> bytes:
    """The whole response as one bytes object."""
    lines = [f"HTTP/1.1 {status} {reason(status)}\r\nServer: {SERVER_NAME}\r\nDate: {_http_date()}\r\n"
             f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
             f"X-Response-Time: {elapsed * 1000.0:.3f}ms\r\n"]
    if headers:
        for k, v in headers.items():
            lines.append(f"{k}: {v}\r\n")
    if close:
        lines.append("Connection: close\r\n")
    elif keep_alive_header:
        lines.append("Connection: keep-alive\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    return head if head_only else head + body


def problem_response(p: HTTPProblem, elapsed: float, *, close: bool, instance: str | None = None) -> bytes:
    return build_response(p.status, p.body(instance), PROBLEM_CONTENT_TYPE, p.headers, elapsed, close=close)


OVERLOAD = HTTPProblem(503, "overloaded", "the server is at its connection limit; retry shortly",
                       headers={"Retry-After": "1"}, close=True)


class Handler(http.server.BaseHTTPRequestHandler):
    """One client connection.

    Unlike the base class, ``__init__`` does not run the request loop: the connection lives as
    long as the socket, and :meth:`handle` is called by a worker each time the socket is ready.
    It answers every complete request it can read within ``linger`` and returns ``True`` to keep
    the socket (handed back to the poller) or ``False`` when it was closed.
    """

    protocol_version = "HTTP/1.1"
    server_version = SERVER_NAME

    def __init__(self, request: socket.socket, client_address, server: "Server"):
        self.request = self.connection = request
        self.client_address = client_address
        self.server = server
        self.buf = bytearray()
        self.started: float | None = None   # first byte of the request in progress
        self.last_active = time.monotonic()
        self.continue_sent = False
        self.closed = False
        self.setup()

    def setup(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.setblocking(False)   # for good: waits are explicit polls (no settimeout per call)

    def _wait(self, events: int, seconds: float) -> bool:
        """Wait until the socket is ready for ``events`` (select.POLLIN/POLLOUT), at most ``seconds``."""
        p = select.poll()
        p.register(self.request.fileno(), events)
        return bool(p.poll(max(0.0, seconds) * 1000.0))

    def fileno(self) -> int:
        return self.request.fileno()

    # --- the connection loop -------------------------------------------------------------------
    def handle(self) -> bool | str:  # one loop, states spelled out
        """Serve the requests that arrive promptly. ``False``: closed; ``True``: hand the socket back
        to the poller; :data:`REQUEUE`: complete requests are still buffered, queue it again."""
        server, sock, cfg = self.server, self.request, self.server.config
        served = 0
        readable = True   # the poller saw data (or a new connection): read without waiting first
        while True:
            try:
                req = self.parse_request()
            except HTTPProblem as p:
                self._send(problem_response(p, 0.0, close=True))
                server.metrics.observe(ROUTE_UNPARSED, "OTHER", p.status, 0.0)
                self.close()
                return False
            if req is not None:
                if not self.handle_one_request(req):
                    self.close()
                    return False
                served += 1
                readable = False
                if self.buf and served < 64:
                    continue        # pipelined request already buffered
                if server.draining:
                    self.close()
                    return False
                if served >= 64 and self.buf:
                    return REQUEUE  # fairness: more pipelined requests, but after the others
                if served >= 64 or not server.work_queue.empty() or cfg.linger <= 0:
                    return True     # others are waiting: back to the poller
                wait = cfg.linger
            else:
                now = time.monotonic()
                if self.started is not None:
                    left = self.started + cfg.request_timeout - now
                    if left <= 0:
                        self.timeout_request()
                        return False
                    wait = min(cfg.linger, left) if cfg.linger > 0 else 0.0
                else:
                    wait = cfg.linger   # 0: one non-blocking read of a socket the poller saw readable
            if not readable and (wait <= 0 or not self._wait(select.POLLIN, wait)):
                return True
            readable = False
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return True
            except OSError:
                self.close()
                return False
            if not data:
                self.close()
                return False
            if not self.buf:
                self.started = time.monotonic()
            self.buf += data

    def timeout_request(self, wait: float | None = None):
        """Answer 408 and close. ``wait=0`` (from the poller): never block on a client that does not read."""
        self.server.metrics.event("request_timeout")
        p = HTTPProblem(408, "request-timeout", f"the request was not complete within {self.server.config.request_timeout:g} s")
        self._send(problem_response(p, 0.0, close=True), wait)
        self.server.metrics.observe(ROUTE_UNPARSED, "OTHER", 408, 0.0)
        self.close()

    def _send(self, data: bytes, wait: float | None = None) -> bool:
        """Write all of ``data``: one non-blocking ``send`` in the common case; if the socket buffer
        is full, poll for at most ``wait`` seconds (default ``request_timeout``) in total."""
        sock = self.request
        view = memoryview(data)
        deadline = None
        while True:
            try:
                n = sock.send(view)
            except BlockingIOError:
                n = 0
            except OSError:
                return False
            if n == len(view):
                return True
            view = view[n:]
            now = time.monotonic()
            if deadline is None:
                deadline = now + (self.server.config.request_timeout if wait is None else wait)
            if now >= deadline or not self._wait(select.POLLOUT, deadline - now):
                return False

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.request.close()
            except OSError:
                pass
            self.server.connection_closed()

    # --- parsing -------------------------------------------------------------------------------
    def parse_request(self) -> app.Request | None:
        """A complete request from the buffer (consumed), ``None`` if more bytes are needed.

        Raises :class:`HTTPProblem` (connection to be closed) for a malformed request or one over a
        limit: 400, 414 (request line), 431 (header count or size), 413 (body), 501 (transfer
        codings), 505 (HTTP version).
        """
        cfg = self.server.config
        buf = self.buf
        # RFC 9112 2.2: ignore empty lines before the request line
        while buf[:2] == b"\r\n" or buf[:1] == b"\n":
            del buf[:2 if buf[:2] == b"\r\n" else 1]
            if not buf:
                self.started = None
        if not buf:
            return None
        m = _HEAD_END.search(buf)
        nl = buf.find(b"\n")
        if nl < 0 and len(buf) > cfg.max_request_line:
            raise HTTPProblem(414, "uri-too-long", f"request line longer than {cfg.max_request_line} bytes", close=True)
        if nl > cfg.max_request_line:
            raise HTTPProblem(414, "uri-too-long", f"request line of {nl} bytes exceeds the limit of {cfg.max_request_line}", close=True)
        if m is None:
            if nl >= 0 and len(buf) - nl > cfg.max_header_bytes:
                raise HTTPProblem(431, "header-too-large", f"header section longer than {cfg.max_header_bytes} bytes", close=True)
            if nl >= 0 and buf.count(b"\n", nl + 1) > cfg.max_headers:
                raise HTTPProblem(431, "header-too-large", f"more than {cfg.max_headers} header fields", close=True)
            return None
        head_end = m.end()
        try:
            head = bytes(buf[:m.start()]).decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
            raise HTTPProblem(400, "bad-request", "request head is not decodable", close=True) from None
        lines = head.split("\n")
        line = lines[0].rstrip("\r")
        parts = line.split(" ")
        if len(parts) != 3:
            raise HTTPProblem(400, "bad-request", f"malformed request line {line[:80]!r} (expected 'METHOD /path HTTP/1.1')", close=True)
        method, target, version = parts
        vm = _VERSION.match(version)
        if not _TOKEN.match(method) or vm is None:
            raise HTTPProblem(400, "bad-request", f"malformed request line {line[:80]!r}", close=True)
        if vm.group(1) != "1":
            raise HTTPProblem(505, "http-version", f"{version} is not supported (use HTTP/1.1 or HTTP/1.0)", close=True)
        if target.startswith(("http://", "https://")):
            slash = target.find("/", target.find("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
        if not (target.startswith("/") or (target == "*" and method == "OPTIONS")) or any(c in target for c in "\x00\r\t"):
            raise HTTPProblem(400, "bad-request", f"request target {target[:80]!r} must be an absolute path", close=True)
        header_lines = lines[1:]
        if len(header_lines) > cfg.max_headers:
            raise HTTPProblem(431, "header-too-large", f"{len(header_lines)} header fields exceed the limit of {cfg.max_headers}", close=True)
        if len(head) - len(lines[0]) > cfg.max_header_bytes:
            raise HTTPProblem(431, "header-too-large", f"header section exceeds {cfg.max_header_bytes} bytes", close=True)
        headers: dict[str, str] = {}
        for hl in header_lines:
            hl = hl.rstrip("\r")
            name, sep, value = hl.partition(":")
            if not sep or not _TOKEN.match(name):
                raise HTTPProblem(400, "bad-request", f"malformed header line {hl[:80]!r}", close=True)
            name = name.lower()
            value = value.strip(" \t")
            if name in headers:
                if name == "content-length" and headers[name] != value:
                    raise HTTPProblem(400, "bad-request", "conflicting Content-Length headers", close=True)
                if name != "content-length":
                    headers[name] = headers[name] + ", " + value
            else:
                headers[name] = value
        if "transfer-encoding" in headers:
            raise HTTPProblem(501, "not-implemented", "Transfer-Encoding is not supported; send Content-Length", close=True)
        cl = headers.get("content-length")
        length = 0
        if cl is not None:
            if not (cl.isascii() and cl.isdigit()) or len(cl) > 18:
                raise HTTPProblem(400, "bad-request", f"Content-Length {cl[:40]!r} is not a non-negative integer", close=True)
            length = int(cl)
            if length > cfg.max_body:
                raise HTTPProblem(413, "body-too-large", f"body of {length} bytes exceeds the limit of {cfg.max_body}", close=True)
        if len(buf) < head_end + length:
            if (length and not self.continue_sent and headers.get("expect", "").lower() == "100-continue"):
                self._send(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.continue_sent = True
            return None
        body = bytes(buf[head_end:head_end + length])
        del buf[:head_end + length]
        self.continue_sent = False
        self.started = time.monotonic() if buf else None
        req = app.Request(method, target, version, headers, body)
        return req

    # --- one request ---------------------------------------------------------------------------
    def handle_one_request(self, req: app.Request) -> bool:
        """Answer ``req``; ``False`` if the connection must close afterwards."""
        t0 = time.perf_counter()
        server = self.server
        conn_tokens = req.headers.get("connection", "").lower()
        if req.version == "HTTP/1.0":
            keep = "keep-alive" in conn_tokens
        else:
            keep = "close" not in conn_tokens
        keep = keep and not server.draining
        route, status, data = self.dispatch(req, t0, close=not keep, http10=req.version == "HTTP/1.0")
        ok = self._send(data)
        elapsed = time.perf_counter() - t0
        self.last_active = time.monotonic()
        server.metrics.observe(route, req.method, status, elapsed)
        if server.config.access_log:
            access_log.info('%s "%s %s %s" %d %d %.3fms', self.client_address[0], req.method, req.target[:200],
                            req.version, status, len(data), elapsed * 1000)
        return ok and keep

    def dispatch(self, req: app.Request, t0: float, *, close: bool, http10: bool) -> tuple[str, int, bytes]:
        """The one dispatch point: route, call, and turn any failure into a problem answer."""
        route = app.ROUTE_UNKNOWN
        try:
            route, handler, params = app.route(req.method, req.path)
            resp = handler(self.server, req, params)
            return route, resp.status, build_response(resp.status, resp.body, resp.content_type, resp.headers,
                                                      time.perf_counter() - t0, close=close,
                                                      keep_alive_header=http10 and not close,
                                                      head_only=req.method == "HEAD")
        except HTTPProblem as exc:
            p = exc
            route = getattr(exc, "route", route)
        except Exception:  # answered 500, logged with traceback
            log.exception("unhandled error answering %s %s", req.method, req.target[:200])
            p = HTTPProblem(500, "internal-error", "the server failed to answer this request; it has been logged")
        return route, p.status, build_response(p.status, p.body(req.path[:200]), PROBLEM_CONTENT_TYPE, p.headers,
                                               time.perf_counter() - t0, close=close or p.close,
                                               keep_alive_header=http10 and not close,
                                               head_only=req.method == "HEAD")

    def log_message(self, format, *args):  # BaseHTTPRequestHandler's signature
        log.info("%s " + format, self.client_address[0], *args)


class Server(http.server.HTTPServer):
    """An HTTPServer with a bounded worker pool, connection limits, reload and drain."""

    daemon_threads = True

    def __init__(self, server_address, recommender: Recommender | None, config: ServerConfig | None = None,
                 bind_and_activate: bool = True):
        self.config = config or ServerConfig()
        self.request_queue_size = self.config.backlog
        self.recommender = recommender
        self.metrics = Metrics()
        self.work_queue: queue.SimpleQueue = queue.SimpleQueue()
        self.draining = False
        self.started_at = time.time()
        self._to_park: collections.deque = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._nconn = 0
        self._conn_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._done = threading.Event()
        self._running = False
        self._accept_paused_until = 0.0
        self._workers: list[threading.Thread] = []
        if ":" in str(server_address[0]):
            self.address_family = socket.AF_INET6
        super().__init__(server_address, Handler, bind_and_activate)

    # --- socket setup --------------------------------------------------------------------------
    def server_bind(self):
        if self.config.reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise OSError("SO_REUSEPORT is not available on this platform (needed for --workers > 1)")
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if self.allow_reuse_address:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def port(self) -> int:
        return self.server_port

    @property
    def url(self) -> str:
        host = f"[{self.server_name}]" if ":" in self.server_name else self.server_name
        return f"http://{host}:{self.server_port}"

    @property
    def open_connections(self) -> int:
        return self._nconn

    def connection_closed(self):
        with self._conn_lock:
            self._nconn -= 1

    # --- model ---------------------------------------------------------------------------------
    def reload(self, path: str | os.PathLike | None = None) -> bool:
        """Load the model at ``path`` (default: the current one's path) fully, then swap it in.

        Returns ``False`` (and keeps serving the old model) if loading fails; the error is logged
        and counted as event ``reload_failed``.
        """
        with self._reload_lock:
            old = self.recommender
            target = Path(path) if path is not None else (Path(old.path) if old is not None else None)
            if target is None:
                log.error("reload: no model path known")
                return False
            try:
                new = Recommender.load(target, type_weights=self.config.type_weights, decay=self.config.decay)
            except (ValueError, OSError, KeyError) as exc:
                self.metrics.event("reload_failed")
                log.error("reload of %s failed, still serving the previous model: %s", target, exc)
                return False
            self.recommender = new   # one reference swap; requests in flight keep the old object
            self.metrics.event("reload")
            log.info("model reloaded from %s (%d x %d)", target, new.vocab_size, new.vector_size)
            return True

    def metrics_text(self) -> bytes:
        rec = self.recommender
        gauges = [("otto_open_connections", "Open client connections.", {}, self._nconn),
                  ("otto_worker_threads", "Worker threads in the pool.", {}, self.config.threads),
                  ("otto_uptime_seconds", "Seconds since the server started.", {}, time.time() - self.started_at),
                  ("otto_model_loaded", "1 when a model is loaded.", {}, 0 if rec is None else 1)]
        if rec is not None:
            gauges += [("otto_model_info", "The loaded model (value is always 1).",
                        {"path": rec.path, "vocab_size": rec.vocab_size, "vector_size": rec.vector_size,
                         "neighbor_table_k": rec.table_k}, 1),
                       ("otto_model_vocab_size", "Rows of the loaded model.", {}, rec.vocab_size),
                       ("otto_model_vector_size", "Dimension of the loaded model.", {}, rec.vector_size),
                       ("otto_model_loaded_timestamp_seconds", "When the loaded model was loaded (Unix time).", {},
                        rec.loaded_at)]
        return self.metrics.render(gauges)

    # --- the loops -----------------------------------------------------------------------------
    def _worker(self):
        q = self.work_queue
        while True:
            conn = q.get()
            if conn is None:
                return
            try:
                keep = conn.handle()
            except Exception:  # never let a worker die (logged with traceback)
                log.exception("connection handler failed")
                conn.close()
                keep = False
            if keep is REQUEUE:
                q.put(conn)
            elif keep:
                self._to_park.append(conn)
                try:
                    self._wake_w.send(b"x")
                except (BlockingIOError, OSError):
                    pass

    def _accept(self, sel: selectors.BaseSelector, parked: dict):
        for _ in range(64):
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: count it, stop accepting for a moment, keep serving
                self.metrics.event("accept_error")
                log.warning("accept failed (pausing accepts for 0.1 s): %s", exc)
                sel.unregister(self.socket)
                self._accept_paused_until = time.monotonic() + 0.1
                return
            with self._conn_lock:
                over = self._nconn >= self.config.max_connections
                if not over:
                    self._nconn += 1
            if over:
                self.metrics.event("rejected_over_capacity")
                self.metrics.observe(ROUTE_UNPARSED, "OTHER", 503, 0.0)
                try:
                    sock.setblocking(False)
                    sock.send(problem_response(OVERLOAD, 0.0, close=True))
                except OSError:
                    pass
                sock.close()
                continue
            self.metrics.event("connection_accepted")
            try:
                conn = Handler(sock, addr, self)
            except OSError:   # reset before we got to it
                sock.close()
                self.connection_closed()
                continue
            self._park(sel, parked, conn)

    def _park(self, sel, parked: dict, conn: Handler):
        if conn.closed:
            return
        if self.draining and not conn.buf:
            conn.close()
            return
        try:
            sel.register(conn.request, selectors.EVENT_READ, conn)
        except (OSError, ValueError):
            conn.close()
            return
        parked[conn.request.fileno()] = conn

    def _sweep(self, sel, parked: dict, now: float):
        cfg = self.config
        for fd, conn in list(parked.items()):
            if conn.started is not None:
                expired = now - conn.started > cfg.request_timeout
            else:
                expired = self.draining or now - conn.last_active > cfg.idle_timeout
            if expired:
                sel.unregister(conn.request)
                del parked[fd]
                if conn.started is not None:
                    conn.timeout_request(wait=0.0)
                else:
                    if not self.draining:
                        self.metrics.event("idle_closed")
                    conn.close()

    def serve_forever(self, poll_interval: float = 0.25):
        """Accept and dispatch until :meth:`drain`/:meth:`shutdown`; then finish and return."""
        self._running = True
        self._done.clear()
        self._workers = [threading.Thread(target=self._worker, name=f"otto-serve-worker-{i}", daemon=True)
                         for i in range(self.config.threads)]
        for t in self._workers:
            t.start()
        sel = selectors.DefaultSelector()
        parked: dict[int, Handler] = {}
        listening = True
        self.socket.setblocking(False)
        sel.register(self.socket, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        _raise_fd_limit(self.config.max_connections + 64)
        tick = min(poll_interval, max(0.01, self.config.request_timeout / 4), max(0.01, self.config.idle_timeout / 4))
        next_sweep = time.monotonic() + tick
        drain_deadline = None
        try:
            while True:
                if self.draining and listening:
                    if not self._accept_paused_until:
                        sel.unregister(self.socket)
                    self.socket.close()   # new connections are refused (other SO_REUSEPORT workers take them)
                    listening = False
                    drain_deadline = time.monotonic() + self.config.drain_timeout
                    self._sweep(sel, parked, time.monotonic())
                if drain_deadline is not None and (self._nconn <= 0 or time.monotonic() > drain_deadline):
                    break
                try:
                    events = sel.select(tick)
                except InterruptedError:  # pragma: no cover - PEP 475 retries
                    events = []
                for key, _ in events:
                    what = key.data
                    if what == "listen":
                        self._accept(sel, parked)
                    elif what == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                    else:
                        sel.unregister(key.fileobj)
                        parked.pop(key.fd, None)
                        self.work_queue.put(what)
                while self._to_park:
                    self._park(sel, parked, self._to_park.popleft())
                now = time.monotonic()
                if self._accept_paused_until and now >= self._accept_paused_until and listening:
                    self._accept_paused_until = 0.0
                    sel.register(self.socket, selectors.EVENT_READ, "listen")
                if now >= next_sweep:
                    self._sweep(sel, parked, now)
                    next_sweep = now + tick
        finally:
            for conn in list(parked.values()):
                conn.close()
            for _ in self._workers:
                self.work_queue.put(None)
            for t in self._workers:
                t.join(timeout=max(1.0, self.config.request_timeout))
            while self._to_park:   # handed back by workers after the loop ended
                self._to_park.popleft().close()
            sel.close()
            self._running = False
            self._done.set()

    def drain(self):
        """Stop accepting, finish requests in flight, then let ``serve_forever`` return.

        Safe to call from a signal handler or any thread; returns at once.
        """
        self.draining = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def shutdown(self):
        """Drain and wait until ``serve_forever`` has returned."""
        self.drain()
        if self._running:
            self._done.wait()

    def server_close(self):
        super().server_close()
        for s in (self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass


def _raise_fd_limit(need: int) -> None:
    """Raise the soft open-file limit towards ``need`` (up to the hard limit); warn if it stays lower."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
        if soft < need:
            log.warning("open-file limit %d is below max_connections + 64 = %d; accepts may fail "
                        "(counted as accept_error)", soft, need)


def make_server(model_dir: str | os.PathLike | None, host: str = "127.0.0.1", port: int = 0,
                threads: int = 8, **config) -> Server:
    """Load ``model_dir`` (``None``: start without a model; ``/readyz`` answers 503 until
    :meth:`Server.reload` is given a path) and bind ``host:port`` (port 0: any free port,
    see ``server.port``). Keyword arguments are :class:`ServerConfig` fields."""
    cfg = ServerConfig(threads=threads, **config)
    rec = None
    if model_dir is not None:
        rec = Recommender.load(model_dir, type_weights=cfg.type_weights, decay=cfg.decay)
    return Server((host, port), rec, cfg)
