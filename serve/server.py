"""The HTTP/1.1 server: one poller thread, two fixed lanes of worker threads, no blocking on a client.

What it is, and what it takes from the standard library
--------------------------------------------------------
:class:`Server` and :class:`Connection` are this module's own classes; they subclass nothing from
``http.server`` or ``socketserver``. Where :class:`Server` keeps a name of
``socketserver.TCPServer`` it keeps its contract too: ``address_family``, ``socket_type``,
``allow_reuse_address``, ``allow_reuse_port``, ``request_queue_size``, ``server_address``,
``socket``, ``server_bind()`` (bind only), ``server_activate()`` (listen), ``serve_forever()``
(serve until ``shutdown()``), ``shutdown()`` (stop the loop and wait for it), ``server_close()``,
``fileno()``, ``handle_error(request, client_address)`` and use as a context manager. The
pieces of the standard library used as they are: :mod:`socket` and :mod:`selectors` (the
poller), :func:`email.utils.formatdate` for the ``Date`` header (as
``BaseHTTPRequestHandler.date_time_string`` does) and :class:`http.HTTPStatus` for reason
phrases (:mod:`serve.problems`).

Replaced, and why:

* ``BaseHTTPRequestHandler``'s request loop reads ``rfile`` with blocking calls, so each
  connection owns a thread for its whole life: one slow or idle client holds one thread.
  Here a connection owns no thread: it is a buffer and a state (:class:`Connection`).
* Its ``parse_request`` goes through ``email.parser``: it accepts obsolete line folding, bounds
  header lines but not the whole header section, and its body is read by the handler.
  :meth:`Connection.next_request` is a strict HTTP/1.1 parser with every size a parameter.
* ``send_error`` answers HTML; every error here is ``application/problem+json``.
* ``ThreadingMixIn`` starts a thread per connection (unbounded); here two fixed pools
  (``threads`` short-request and ``long_threads`` long-request workers) serve every connection.

How a connection is served
--------------------------
* **Poller** (:meth:`Server.serve_forever`, a :mod:`selectors` loop). It accepts, and reads every
  socket that is parked: an idle keep-alive connection, or one whose request is still arriving.
  Only when the buffer holds a complete request head (or breaks a limit) does it queue the
  connection to a worker, so a trickling client never costs a thread; one that keeps sending a
  request in tiny pieces is read at most 20 times a second (``SMALL_READS``, ``REST``).
* **Worker** (:meth:`Connection.serve`). It answers the complete requests in the buffer (at most
  64 per turn, then the connection goes to the back of the queue), reads only bytes that have
  already arrived (never waits for the rest of a request), and after an answer waits at most
  ``linger`` seconds for the next request, unless another connection is queued and no worker is
  free to take it. Keeping a busy connection on its worker spares the hand-over to the poller and
  back (a wake-up of the poller, its selector registering and unregistering the socket, and two
  thread switches per request).
* **Lanes.** Short requests (table rows, popular, health) are Python and hold the interpreter
  lock; long ones (a session, an item request the neighbour table cannot answer) run Numba
  kernels that release it for milliseconds. Each kind has its own queue and workers
  (:attr:`Server.lanes`, ``SHORT`` and ``LONG``), so long requests never occupy the workers short
  ones wait for. The poller queues every connection to the short lane; a short worker whose next
  complete request :meth:`Server.is_long` calls long hands the connection, request unanswered, to
  the long lane, and a long worker that meets a short request answers it itself. Which lane
  answers changes where a request waits, never its answer.
* **Writes never block.** Sockets are non-blocking. An answer the kernel does not take at once
  stays in :attr:`Connection.out` and the connection is parked *for writing*: the poller sends
  the rest when the socket is writable, and the connection reads nothing more until it has. A
  client that does not read its answer for ``send_timeout`` is dropped (event ``send_timeout``);
  ``send_buffer`` (``SO_SNDBUF``) bounds what the kernel buffers for it meanwhile.
* **Limits** (all :class:`ServerConfig` fields; every drop is counted in ``otto_events_total``):
  ``max_connections`` open sockets (at the cap the oldest idle keep-alive connection is closed,
  event ``idle_evicted``, and only if none is idle the new one gets ``503`` + ``Retry-After``,
  event ``rejected_over_capacity``); ``idle_timeout`` for a keep-alive socket with no request in
  progress (``idle_closed``); ``request_timeout`` from the first byte of a request, empty lines
  before the request line included, to its last byte (``408``, ``request_timeout``);
  ``max_request_line`` (``414``; also the most bytes of empty lines accepted before a request
  line, ``400`` beyond); ``max_headers`` / ``max_header_bytes`` (``431``); ``max_body`` (``413``).
* **Answers.** Every response, errors included, is one ``bytes`` object (status line, headers,
  body) with ``Content-Length`` and ``X-Response-Time``. Errors are ``application/problem+json``.
  An unexpected exception in a route is logged and answered ``500``.
* **Lifecycle.** :meth:`Server.reload` loads a model fully, then swaps the reference; requests
  in flight finish on the model they started with; a failed load keeps the old model (event
  ``reload_failed``). The poller checks once a second that no mapped model file was truncated
  in place (which would crash the process with ``SIGBUS`` on the missing pages): if one was, it
  logs which, unloads the model (``503`` until a reload, event ``model_file_truncated``).
  :meth:`Server.drain` stops accepting, closes idle sockets, lets requests in flight finish
  (answered with ``Connection: close``) and makes ``serve_forever`` return.

Extension points (labelled "May be overridden" below): :attr:`Server.connection_class`,
:meth:`Server.load_model`, :meth:`Server.is_long`, :meth:`Server.handle_error`, :meth:`Connection.dispatch`,
:meth:`Connection.log_access`.
"""
from __future__ import annotations

import collections
import email.utils
import logging
import os
import queue
import re
import select
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from . import app
from .metrics import Metrics
from .problems import PROBLEM_CONTENT_TYPE, HTTPProblem, reason
from data_prep.parallel import default_threads
from w2v.keyed import TABLE_ROWS

from .recommend import DEFAULT_DECAY, DEFAULT_TABLE_ROWS, DEFAULT_TYPE_WEIGHTS, Recommender

log = logging.getLogger("serve")
access_log = logging.getLogger("serve.access")

SERVER_NAME = "otto-serve"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_EMPTY_LINES = re.compile(rb"(?:\r?\n)+")
_CR_LF = (13, 10)
_VERSION = re.compile(r"HTTP/(\d)\.(\d)\Z")
ROUTE_UNPARSED = "(unparsed)"
RECV_SIZE = 65536
MAX_PER_TURN = 64        # requests a worker answers on one connection before serving the others
SMALL_READS = 4          # tiny reads of one request before the poller rests its connection ...
REST = 0.05              # ... for this many seconds (a trickler costs at most 20 reads a second)

# what Connection.serve returns
CLOSED = "closed"        # the connection is closed
PARK = "park"            # hand it back to the poller (to read, or to write Connection.out)
REQUEUE = "requeue"      # complete requests are still buffered: queue it again, after the others
HANDOFF = "handoff"      # its next request is long (``app.is_long``): queue it for a long-request worker

SHORT, LONG = 0, 1       # the worker lanes: Server.lanes[SHORT] takes every connection first


def default_server_threads() -> int:
    """The default size of each worker lane (short and long requests): one thread per CPU this
    process may run on, at least 2 (bench/RESULTS.md 5g and 5h)."""
    return max(2, default_threads())


@dataclass
class ServerConfig:
    """Every limit of the server, with its default. Times are seconds, sizes bytes.

    threads             worker threads for short requests (table rows, popular, health), a fixed
                        pool per process (default: one per CPU this process may run on, at least
                        2). Short requests are Python and contend for the interpreter lock: on 2
                        cores 2 threads serve item traffic best (1.2x the requests of 8 at 0.6x
                        the p99, bench/RESULTS.md 5g).
    long_threads        worker threads for long requests (a session, an item request the
                        neighbour table cannot answer), a second fixed pool (default: one per
                        CPU, at least 2). Long requests run Numba kernels that release the
                        interpreter lock; on their own workers they never hold up short ones (with
                        one shared pool of 2, item p99 was 30 ms under a 90/10 item/session mix on
                        the full-size model, bench/RESULTS.md 5g). A worker that finds a long
                        request hands its connection to this pool; a long worker answers the
                        requests that follow on that connection too.
    max_connections     open connections per process; at the cap the oldest idle keep-alive
                        connection is closed for a new one, and if none is idle the new one gets
                        503 + Retry-After.
    backlog             listen() backlog.
    idle_timeout        seconds a keep-alive connection may sit idle between requests before it
                        is closed.
    request_timeout     seconds from the first byte of a request (empty lines before it
                        included) to its last (slow clients get 408 and are closed).
    send_timeout        seconds a client may leave an answer unread before its connection is
                        dropped (writes never block a worker thread).
    send_buffer         SO_SNDBUF of client sockets in bytes: what the kernel buffers for a client
                        that reads slowly or not at all (0: the kernel's default autotuning).
    linger              seconds a worker thread waits for the next request on a busy keep-alive
                        connection before handing it back to the poller (0: never wait); it does
                        not wait while a queued connection finds no free worker.
    max_request_line    bytes of the request line (and of empty lines before it); 414 beyond.
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
    table_rows          how item requests read neighbour-table rows: pread (from the file, only the
                        rows asked for stay resident) or map (through the memory map: 10-20% more
                        item requests per second, bench/RESULTS.md section 5c, but scattered item
                        requests make the whole table resident, 276 MB at full size).
    """

    threads: int = field(default_factory=default_server_threads)
    long_threads: int = field(default_factory=default_server_threads)
    max_connections: int = 1024
    backlog: int = 1024
    idle_timeout: float = 30.0
    request_timeout: float = 10.0
    send_timeout: float = 10.0
    send_buffer: int = 65536
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
    table_rows: str = DEFAULT_TABLE_ROWS

    FLAG_CHOICES: ClassVar[dict] = {"table_rows": TABLE_ROWS}  # for data_prep.flags

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "table_rows":
                if v not in TABLE_ROWS:
                    raise ValueError(f"table_rows: expected one of {', '.join(TABLE_ROWS)}, got {v!r}")
                continue
            if f.name in ("access_log", "reuse_port", "type_weights"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                if not (f.name in ("linger", "send_buffer") and v == 0):
                    raise ValueError(f"{f.name}: expected a positive number, got {v!r}")
        w = self.type_weights
        if (not isinstance(w, tuple) or len(w) != 3
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x < float("inf") for x in w)):
            raise ValueError(f"type_weights: expected three non-negative numbers (clicks, carts, orders), got {w!r}")
        if not self.decay <= 1:
            raise ValueError(f"decay: expected 0 < decay <= 1, got {self.decay!r}")


# --- addresses ----------------------------------------------------------------------------------

def format_address(host: str, port: int) -> str:
    """``127.0.0.1:8000``, ``[::1]:8000``."""
    host = str(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class BindError(OSError):
    """The listening address cannot be bound; the message names it (``cannot bind HOST:PORT: why``)."""


def bind_socket(sock: socket.socket, host: str, port: int, *, reuse_address: bool = True,
                reuse_port: bool = False) -> None:
    """``bind`` with ``SO_REUSEADDR`` / ``SO_REUSEPORT`` as asked, as ``socketserver.TCPServer.server_bind``
    does; any failure is a :class:`BindError` naming the address."""
    where = format_address(host, port)
    try:
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise BindError(f"cannot bind {where}: SO_REUSEPORT is not available on this platform "
                                f"(needed for --workers > 1)")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BindError:
        raise
    except OSError as exc:
        raise BindError(f"cannot bind {where}: {exc.strerror or exc}") from None


def family_of(host: str) -> socket.AddressFamily:
    """The socket family for a numeric host: IPv6 if it has a colon."""
    return socket.AF_INET6 if ":" in str(host) else socket.AF_INET


# --- responses ----------------------------------------------------------------------------------
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


class Connection:
    """One client socket: its input buffer, its unsent output and where its current request stands.

    The socket is non-blocking for its whole life. At any moment a connection is owned by exactly
    one thread: registered in the poller, queued, or being served by one worker. The poller calls
    :meth:`receive`, :meth:`wants_worker`, :meth:`flush`; a worker calls :meth:`serve`.
    """

    def __init__(self, sock: socket.socket, client_address, server: "Server"):
        self.socket = sock
        self.client_address = client_address
        self.server = server
        self.config: ServerConfig = server.config
        self.buf = bytearray()                # bytes received and not yet consumed by a request
        self.out = bytearray()                # answer bytes the kernel has not taken yet
        self.started: float | None = None    # first byte of the request in progress (empty lines included)
        self.empty_bytes = 0                  # bytes of empty lines before the request line in progress
        self.need = 0                         # total buffer length the current request needs, once known
        self.write_since: float | None = None  # when ``out`` first failed to drain
        self.last_active = time.monotonic()
        self.close_after = False              # close once ``out`` is written
        self.small_reads = 0                  # reads of < 512 bytes that left the current request incomplete
        self.resting = False                  # not watched by the poller for a moment (see _Poller)
        self.continue_sent = False
        self.pending: app.Request | None = None  # parsed, not answered: waits for a long-request worker
        self.closed = False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.config.send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer)
        sock.setblocking(False)

    def fileno(self) -> int:
        return self.socket.fileno()

    # --- input ---------------------------------------------------------------------------------
    def receive(self) -> int:
        """One non-blocking ``recv`` into the buffer: bytes read, ``0`` if none were waiting,
        ``-1`` when the peer closed or the socket failed (the caller closes)."""
        try:
            data = self.socket.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return -1
        if not data:
            return -1
        if self.started is None:
            self.started = time.monotonic()
        buf = self.buf
        buf += data
        if buf[0] in _CR_LF and not self.need:
            self._strip_empty_lines()
        return len(data)

    def _strip_empty_lines(self) -> None:
        # RFC 9112 2.2: empty lines before a request line are ignored -- but they belong to the
        # request: its deadline runs from their first byte, and their bytes are limited.
        buf = self.buf
        if buf and buf[0] in _CR_LF:
            m = _EMPTY_LINES.match(buf)
            if m is not None:
                del buf[:m.end()]
                self.empty_bytes += m.end()

    def _head_end(self) -> tuple[int, int] | None:
        """``(start, end)`` of the blank line ending the header section, ``None`` while incomplete.
        Raises :class:`HTTPProblem` when what has arrived already breaks a limit."""
        cfg, buf = self.config, self.buf
        if self.empty_bytes > cfg.max_request_line:
            raise HTTPProblem(400, "bad-request", f"more than {cfg.max_request_line} bytes of empty lines "
                              f"before the request line", close=True)
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
        return m.start(), m.end()

    def wants_worker(self) -> bool:
        """Whether a worker can make progress: a complete request (or one over a limit) is buffered."""
        if self.pending is not None:
            return True
        if self.need:
            return len(self.buf) >= self.need
        if not self.buf and self.empty_bytes <= self.config.max_request_line:
            return False
        try:
            return self._head_end() is not None
        except HTTPProblem:
            return True   # the worker answers it

    def next_request(self) -> app.Request | None:  # one pass over the head, each rule spelled out
        """The next complete request from the buffer (consumed), ``None`` if more bytes are needed.

        Raises :class:`HTTPProblem` (connection to be closed) for a malformed request or one over a
        limit: 400, 414 (request line), 431 (header count or size), 413 (body), 501 (transfer
        codings), 505 (HTTP version).
        """
        cfg, buf = self.config, self.buf
        if self.need:
            if len(buf) < self.need:
                return None
        elif buf and buf[0] in _CR_LF:
            self._strip_empty_lines()
        if not buf and self.empty_bytes <= cfg.max_request_line:
            return None
        span = self._head_end()
        if span is None:
            return None
        head_end = span[1]
        head = buf[:span[0]].decode("latin-1")
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
        if not (target.startswith("/") or (target == "*" and method == "OPTIONS")) or "\x00" in target or "\r" in target or "\t" in target:
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
            self.need = head_end + length
            if length and not self.continue_sent and headers.get("expect", "").lower() == "100-continue":
                self.out += b"HTTP/1.1 100 Continue\r\n\r\n"
                self.continue_sent = True
            return None
        body = bytes(buf[head_end:head_end + length])
        del buf[:head_end + length]
        self.need = 0
        self.empty_bytes = 0
        self.small_reads = 0
        self.continue_sent = False
        self.started = time.monotonic() if buf else None
        return app.Request(method, target, version, headers, body)

    # --- output --------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send ``data`` now as far as the kernel takes it; keep the rest in :attr:`out`."""
        if self.out:
            self.out += data
            self.flush()
            return
        try:
            n = self.socket.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.close()
            return
        if n < len(data):
            self.out += memoryview(data)[n:]
            if self.write_since is None:
                self.write_since = time.monotonic()

    def flush(self) -> bool:
        """Send as much of :attr:`out` as the kernel takes now, without waiting. ``True`` when
        nothing is left to send (or the socket failed: then the connection is closed)."""
        out = self.out
        while out:
            try:
                n = self.socket.send(out)
            except (BlockingIOError, InterruptedError):
                if self.write_since is None:
                    self.write_since = time.monotonic()
                return False
            except OSError:
                out.clear()
                self.close()
                return True
            del out[:n]
        self.write_since = None
        return True

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.socket.close()
            except OSError:
                pass
            self.server.connection_closed()

    def timeout(self):
        """Answer 408 (if the kernel takes it at once) and close: the request missed its deadline."""
        self.server.metrics.event("request_timeout")
        p = HTTPProblem(408, "request-timeout", f"the request was not complete within {self.config.request_timeout:g} s")
        self.out = bytearray(problem_response(p, 0.0, close=True))
        self.flush()
        self.server.metrics.observe(ROUTE_UNPARSED, "OTHER", 408, 0.0)
        self.close()

    # --- a worker's turn -----------------------------------------------------------------------
    def serve(self, lane: int = SHORT) -> str:  # one loop, its states spelled out
        """Answer the requests that are complete; read only what has already arrived.

        Returns :data:`CLOSED`, :data:`PARK` (back to the poller: to read, or to write the rest of
        :attr:`out`), :data:`REQUEUE` (complete requests still buffered after a full turn) or, on
        the :data:`SHORT` lane, :data:`HANDOFF` (the next request is long: it is kept in
        :attr:`pending` for a worker of the :data:`LONG` lane, which answers it first).
        """
        server, cfg = self.server, self.config
        served = 0
        read_more = True   # whether bytes may be waiting that no recv of this turn has seen
        while True:
            if self.out and not self.flush():
                return PARK                      # the client is not reading: the poller waits for it
            if self.closed:
                return CLOSED
            if self.close_after:
                self.close()
                return CLOSED
            if self.pending is not None:
                req, self.pending = self.pending, None
            else:
                try:
                    req = self.next_request()
                except HTTPProblem as p:
                    self.out += problem_response(p, 0.0, close=True)
                    self.close_after = True
                    server.metrics.observe(ROUTE_UNPARSED, "OTHER", p.status, 0.0)
                    continue
                if self.out:
                    continue                     # 100 Continue to send first
            if req is not None:
                if lane == SHORT and server.is_long(req):
                    self.pending = req
                    return HANDOFF
                self.answer(req)
                served += 1
                if served >= MAX_PER_TURN and not self.close_after:
                    if self.out and not self.flush():
                        return PARK
                    return REQUEUE if self.wants_worker() else PARK
                continue
            # nothing complete is buffered
            if served >= MAX_PER_TURN:
                return PARK
            if self.started is None:
                # between requests: wait briefly for the next one unless a queued connection lacks a worker
                if (not served or cfg.linger <= 0 or not server.may_linger(lane)
                        or not self._wait_readable(cfg.linger)):
                    return PARK
            elif not read_more:
                return PARK                      # the rest of the request has not arrived: never wait for it
            n = self.receive()
            if n <= 0:
                if n < 0:
                    self.close()
                    return CLOSED
                return PARK
            read_more = n == RECV_SIZE

    def _wait_readable(self, seconds: float) -> bool:
        p = select.poll()
        p.register(self.socket.fileno(), select.POLLIN)
        return bool(p.poll(max(0.0, seconds) * 1000.0))

    def answer(self, req: app.Request) -> None:
        """Dispatch ``req`` and queue its response in :attr:`out` (then try to send it)."""
        t0 = time.perf_counter()
        server = self.server
        conn_tokens = req.headers.get("connection", "").lower()
        if req.version == "HTTP/1.0":
            keep = "keep-alive" in conn_tokens
        else:
            keep = "close" not in conn_tokens
        keep = keep and not server.draining
        route, status, data = self.dispatch(req, t0, close=not keep, http10=req.version == "HTTP/1.0")
        # a response that says "Connection: close" (a problem that distrusts the stream) closes
        if not keep or data.find(b"\r\nConnection: close\r\n", 0, data.find(b"\r\n\r\n") + 2) >= 0:
            self.close_after = True
        # counted before it is sent, so a client that has its answer finds it in /metrics
        elapsed = time.perf_counter() - t0
        server.metrics.observe(route, req.method, status, elapsed)
        self.write(data)
        self.last_active = time.monotonic()
        if server.config.access_log:
            self.log_access(req, status, len(data), elapsed)

    def dispatch(self, req: app.Request, t0: float, *, close: bool, http10: bool) -> tuple[str, int, bytes]:
        """The one dispatch point: route, call, and turn any failure into a problem answer.

        Returns ``(route template, status, whole response bytes)``. May be overridden.
        """
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

    def log_access(self, req: app.Request, status: int, size: int, elapsed: float) -> None:
        """One access-log line (logger ``serve.access``) when ``access_log`` is on. May be overridden."""
        access_log.info('%s "%s %s %s" %d %d %.3fms', self.client_address[0], req.method, req.target[:200],
                        req.version, status, size, elapsed * 1000)


class Server:
    """Listening socket, poller, worker pool, connection limits, model reload and drain."""

    address_family = socket.AF_INET
    socket_type = socket.SOCK_STREAM
    allow_reuse_address = True
    allow_reuse_port = False
    connection_class = Connection      # the class made for each accepted socket. May be overridden.

    def __init__(self, server_address, recommender: Recommender | None, config: ServerConfig | None = None,
                 bind_and_activate: bool = True):
        self.config = config or ServerConfig()
        self.request_queue_size = self.config.backlog
        self.allow_reuse_port = self.config.reuse_port
        self.server_address = tuple(server_address)
        self.address_family = family_of(server_address[0])
        self.recommender = recommender
        self.model_path: str | None = None if recommender is None else getattr(recommender, "path", None)
        self.metrics = Metrics()
        self.lanes = (_Lane(), _Lane())   # SHORT, LONG
        self.work_queue = self.lanes[SHORT].queue   # where the poller queues every connection
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
        self._watched: list[tuple[Path, int, int, int]] = []
        self._next_watch = 0.0
        self.socket = socket.socket(self.address_family, self.socket_type)
        if self.model_path is not None:
            self._watch(self.model_path)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server_close()

    # --- socket --------------------------------------------------------------------------------
    def server_bind(self):
        """Bind the socket to ``server_address`` (a :class:`BindError` names it on failure)."""
        bind_socket(self.socket, self.server_address[0], self.server_address[1],
                    reuse_address=self.allow_reuse_address, reuse_port=self.allow_reuse_port)
        self.server_address = self.socket.getsockname()

    def server_activate(self):
        """Listen (backlog ``request_queue_size``)."""
        self.socket.listen(self.request_queue_size)

    def fileno(self) -> int:
        return self.socket.fileno()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return "http://" + format_address(self.server_address[0], self.port)

    @property
    def open_connections(self) -> int:
        return self._nconn

    def connection_closed(self):
        with self._conn_lock:
            self._nconn -= 1

    def handle_error(self, request, client_address):
        """Called when serving a connection raised (a bug): log the traceback. May be overridden."""
        log.exception("serving the connection from %s failed", client_address)

    # --- model ---------------------------------------------------------------------------------
    def load_model(self, path: str | os.PathLike) -> Recommender:
        """Load the model directory at ``path`` completely. May be overridden."""
        return Recommender.load(path, type_weights=self.config.type_weights, decay=self.config.decay,
                                table_rows=self.config.table_rows)

    def reload(self, path: str | os.PathLike | None = None) -> bool:
        """Load the model at ``path`` (default: the last one loaded) fully, then swap it in.

        Returns ``False`` (and keeps serving the old model) if loading fails for any reason; the
        error is logged on one line and counted as event ``reload_failed``.
        """
        with self._reload_lock:
            target = path if path is not None else self.model_path
            if target is None:
                self.metrics.event("reload_failed")
                log.error("reload failed: no model path known")
                return False
            try:
                new = self.load_model(target)
            except (ValueError, OSError) as exc:   # ModelError is a ValueError
                why = str(exc)
            except Exception as exc:  # noqa: BLE001 - a reload must never take the server down
                why = f"{type(exc).__name__}: {str(exc)[:300]}"
            else:
                self.recommender = new   # one reference swap; requests in flight keep the old object
                self.model_path = str(target)
                self._watch(target)
                self.metrics.event("reload")
                log.info("model reloaded from %s (%d x %d)", target, new.vocab_size, new.vector_size)
                return True
            self.metrics.event("reload_failed")
            log.error("reload of %s failed, %s: %s", target,
                      "still serving the previous model" if self.recommender is not None else "no model is loaded",
                      why.replace("\n", " "))
            return False

    def _watch(self, model_dir) -> None:
        """Remember identity and size of the model's memory-mapped files (see :meth:`check_model_files`)."""
        watched = []
        try:
            for p in sorted(Path(model_dir).glob("*.npy")):
                st = p.stat()
                watched.append((p, st.st_dev, st.st_ino, st.st_size))
        except OSError:
            pass
        self._watched = watched

    def check_model_files(self) -> bool:
        """``False`` (logged, model unloaded, event ``model_file_truncated``) if a mapped model file
        was truncated in place: reading its missing pages would kill the process with ``SIGBUS``.
        A file replaced by a new one (another inode) is harmless: the old mapping stays valid."""
        if not self._reload_lock.acquire(blocking=False):
            return True   # a reload is swapping the model (and the watched files) right now
        try:
            return self._check_model_files()
        finally:
            self._reload_lock.release()

    def _check_model_files(self) -> bool:
        for p, dev, ino, size in self._watched:
            try:
                st = p.stat()
            except OSError:
                continue   # removed or renamed away: the mapping still holds the old inode
            if (st.st_dev, st.st_ino) == (dev, ino) and st.st_size < size:
                self._watched = []
                self.recommender = None
                self.metrics.event("model_file_truncated")
                log.error("%s was truncated in place (%d -> %d bytes) while memory-mapped; the model is "
                          "unloaded (answers 503) until a reload (SIGHUP). Replace model files "
                          "(write a new file, then rename it over the old), never truncate or rewrite "
                          "them in place", p, size, st.st_size)
                return False
        return True

    def metrics_text(self) -> bytes:
        rec = self.recommender
        gauges = [("otto_open_connections", "Open client connections.", {}, self._nconn),
                  ("otto_worker_threads", "Worker threads per lane (short requests; long: sessions, scans).",
                   {"lane": "short"}, self.config.threads),
                  ("otto_worker_threads", "Worker threads per lane (short requests; long: sessions, scans).",
                   {"lane": "long"}, self.config.long_threads),
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
    def is_long(self, req: app.Request) -> bool:
        """Whether ``req`` is answered on the long lane (``app.is_long``). May be overridden."""
        return app.is_long(self, req)

    def may_linger(self, lane: int = SHORT) -> bool:
        """Whether a worker of ``lane`` may wait (``linger``) for the next request on the connection
        it holds: not while draining, nor while a connection is queued in its lane and no worker
        of the lane is free to take it."""
        return not self.draining and self.lanes[lane].has_room()

    def _worker(self, lane: int, i: int):
        q, waiting = self.lanes[lane].queue, self.lanes[lane].waiting
        while True:
            waiting[i] = True
            conn = q.get()
            waiting[i] = False
            if conn is None:
                return
            try:
                state = conn.serve(lane)
            except Exception:  # noqa: BLE001 - never let a worker die
                self.handle_error(conn.socket, conn.client_address)
                conn.close()
                state = CLOSED
            if state is REQUEUE:
                self.work_queue.put(conn)
            elif state is HANDOFF:
                self.lanes[LONG].queue.put(conn)
            elif state is PARK:
                self._to_park.append(conn)
                try:
                    self._wake_w.send(b"x")
                except OSError:
                    pass

    def serve_forever(self, poll_interval: float = 0.25):
        """Accept and serve until :meth:`drain`/:meth:`shutdown`; then finish and return."""
        self._running = True
        self._done.clear()
        self._workers = []
        for lane, n, name in ((SHORT, self.config.threads, "worker"), (LONG, self.config.long_threads, "long")):
            self.lanes[lane].waiting = [False] * n
            self._workers += [threading.Thread(target=self._worker, args=(lane, i), name=f"otto-serve-{name}-{i}",
                                               daemon=True) for i in range(n)]
        for t in self._workers:
            t.start()
        _raise_fd_limit(self.config.max_connections + 64)
        poller = _Poller(self, poll_interval)
        try:
            poller.run()
        finally:
            poller.close_all()
            for lane in self.lanes:
                for _ in lane.waiting:
                    lane.queue.put(None)
            for t in self._workers:
                t.join(timeout=max(1.0, self.config.request_timeout))
            while self._to_park:   # handed back by workers after the loop ended
                self._to_park.popleft().close()
            for lane in self.lanes:   # queued (handed over, requeued) after its workers stopped
                while not lane.queue.empty():
                    conn = lane.queue.get()
                    if conn is not None:
                        conn.close()
            poller.sel.close()
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
        """Close the listening socket (and the poller's wake-up pair)."""
        for s in (self.socket, self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass


class _Lane:
    """One pool of worker threads: the queue its workers take connections from and, per worker,
    whether it is blocked on that queue (``waiting[i]`` is written by worker i only, so no update
    is lost and no lock is needed)."""

    def __init__(self):
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.waiting: list[bool] = []

    def has_room(self) -> bool:
        """Whether no queued connection lacks a worker: the queue is empty or a worker is free."""
        return self.queue.empty() or any(self.waiting)


class _Poller:
    """The poller thread's state: which connections it holds and why. Used by one thread only.

    ``parked`` maps a descriptor to its connection (registered to read or to write, or resting:
    see ``resting``); ``idle`` holds the parked connections with no request in progress, oldest
    first (the eviction order); ``resting`` holds connections whose request keeps arriving in tiny
    pieces (more than :data:`SMALL_READS` reads of < 512 bytes): they are not watched for
    :data:`REST` seconds, so a trickling client costs at most ``1 / REST`` reads a second.
    """

    def __init__(self, server: "Server", poll_interval: float):
        self.server = server
        self.cfg = cfg = server.config
        self.sel = selectors.DefaultSelector()
        self.parked: dict[int, Connection] = {}
        self.idle: collections.OrderedDict[int, Connection] = collections.OrderedDict()
        self.resting: collections.deque[tuple[float, int, Connection]] = collections.deque()
        self.listening = True
        server.socket.setblocking(False)
        self.sel.register(server.socket, selectors.EVENT_READ, "listen")
        self.sel.register(server._wake_r, selectors.EVENT_READ, "wake")
        self.tick = min(poll_interval, max(0.01, cfg.request_timeout / 4), max(0.01, cfg.idle_timeout / 4),
                        max(0.01, cfg.send_timeout / 4))

    def run(self):
        server, cfg = self.server, self.cfg
        next_sweep = time.monotonic() + self.tick
        drain_deadline = None
        while True:
            if server.draining and self.listening:
                if not server._accept_paused_until:
                    self.sel.unregister(server.socket)
                server.socket.close()   # new connections are refused (other SO_REUSEPORT workers take them)
                self.listening = False
                drain_deadline = time.monotonic() + cfg.drain_timeout
                self.sweep(time.monotonic())
            if drain_deadline is not None and (server._nconn <= 0 or time.monotonic() > drain_deadline):
                return
            timeout = self.tick
            if self.resting:
                timeout = min(timeout, max(0.0, self.resting[0][0] - time.monotonic()))
            try:
                events = self.sel.select(timeout)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                events = []
            accept = False
            for key, mask in events:
                what = key.data
                if what == "listen":
                    accept = True     # after the other events: an eviction then cannot meet a stale event
                elif what == "wake":
                    try:
                        while server._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                else:
                    self.ready(key.fd, key.data, mask)
            while server._to_park:
                self.park(server._to_park.popleft())
            if accept and self.listening:
                self.accept()
            now = time.monotonic()
            while self.resting and self.resting[0][0] <= now:
                _, fd, conn = self.resting.popleft()
                if self.parked.get(fd) is conn and conn.resting:
                    conn.resting = False
                    self.sel.register(conn.socket, selectors.EVENT_READ, conn)
            if server._accept_paused_until and now >= server._accept_paused_until and self.listening:
                server._accept_paused_until = 0.0
                self.sel.register(server.socket, selectors.EVENT_READ, "listen")
            if now >= next_sweep:
                self.sweep(now)
                next_sweep = now + self.tick

    def close_all(self):
        for conn in list(self.parked.values()):
            conn.close()
        self.parked.clear()

    def unpark(self, fd: int) -> Connection:
        """Take the connection on ``fd`` out of the poller (by descriptor: its socket may be closed)."""
        conn = self.parked.pop(fd)
        self.idle.pop(fd, None)
        if conn.resting:
            conn.resting = False   # its entry in ``resting`` is skipped when it comes due
        else:
            self.sel.unregister(fd)
        return conn

    def park(self, conn: Connection):
        """Take a connection back from a worker (or the accept): register it to write the rest of
        its answer, to read, or queue it again if a complete request is already buffered."""
        server = self.server
        if conn.closed:
            return
        if conn.out:
            events = selectors.EVENT_WRITE
        elif conn.wants_worker():
            server.work_queue.put(conn)
            return
        elif server.draining and conn.started is None:
            conn.close()
            return
        else:
            events = selectors.EVENT_READ
        try:
            self.sel.register(conn.socket, events, conn)
        except (OSError, ValueError):
            conn.close()
            return
        fd = conn.socket.fileno()
        self.parked[fd] = conn
        if events == selectors.EVENT_READ and conn.started is None:
            self.idle[fd] = conn

    def ready(self, fd: int, conn: Connection, mask: int):
        """A parked connection's socket is readable or writable."""
        if self.parked.get(fd) is not conn:
            return
        if mask & selectors.EVENT_WRITE:
            if not conn.flush():
                return                        # still not taken; the sweep enforces send_timeout
            self.unpark(fd)
            if conn.closed or conn.close_after:
                conn.close()
            else:
                self.park(conn)
            return
        n = conn.receive()
        if n < 0:
            self.unpark(fd).close()
        elif n:
            self.idle.pop(fd, None)           # a request is arriving: no longer idle
            if conn.wants_worker():
                self.unpark(fd)
                self.server.work_queue.put(conn)
            elif n < 512:
                conn.small_reads += 1
                if conn.small_reads > SMALL_READS:   # trickling: read it again in REST seconds
                    self.sel.unregister(fd)
                    conn.resting = True
                    self.resting.append((time.monotonic() + REST, fd, conn))

    def accept(self):
        server, cfg = self.server, self.cfg
        for _ in range(64):
            try:
                sock, addr = server.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: count it, stop accepting for a moment, keep serving
                server.metrics.event("accept_error")
                log.warning("accept failed (pausing accepts for 0.1 s): %s", exc)
                self.sel.unregister(server.socket)
                server._accept_paused_until = time.monotonic() + 0.1
                return
            while server._nconn >= cfg.max_connections and self.idle:
                self.unpark(next(iter(self.idle))).close()   # the oldest idle keep-alive connection
                server.metrics.event("idle_evicted")
            with server._conn_lock:
                over = server._nconn >= cfg.max_connections
                if not over:
                    server._nconn += 1
            if over:
                server.metrics.event("rejected_over_capacity")
                server.metrics.observe(ROUTE_UNPARSED, "OTHER", 503, 0.0)
                try:
                    sock.setblocking(False)
                    sock.send(problem_response(OVERLOAD, 0.0, close=True))
                except OSError:
                    pass
                sock.close()
                continue
            server.metrics.event("connection_accepted")
            try:
                conn = server.connection_class(sock, addr, server)
            except OSError:   # reset before we got to it
                sock.close()
                server.connection_closed()
                continue
            self.park(conn)

    def sweep(self, now: float):
        server, cfg = self.server, self.cfg
        for fd, conn in list(self.parked.items()):
            if conn.out:
                expired = now - (conn.write_since or now) > cfg.send_timeout
                event = "send_timeout"
            elif conn.started is not None:
                expired = now - conn.started > cfg.request_timeout
                event = "request_timeout"
            else:
                expired = server.draining or now - conn.last_active > cfg.idle_timeout
                event = None if server.draining else "idle_closed"
            if not expired:
                continue
            self.unpark(fd)
            if event == "request_timeout":
                conn.timeout()
                continue
            if event:
                server.metrics.event(event)
            conn.close()
        if server._watched and now >= server._next_watch:
            server._next_watch = now + 1.0
            server.check_model_files()


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
                **config) -> Server:
    """Bind ``host:port`` (port 0: any free port, see ``server.port``; a :class:`BindError` names the
    address), load ``model_dir`` (``None``: start without a model; ``/readyz`` answers 503 until
    :meth:`Server.reload` is given a path), then listen. Keyword arguments are :class:`ServerConfig`
    fields."""
    cfg = ServerConfig(**config)
    server = Server((host, port), None, cfg, bind_and_activate=False)
    try:
        server.server_bind()
        if model_dir is not None:
            server.recommender = server.load_model(model_dir)
            server.model_path = str(model_dir)
            server._watch(model_dir)
        server.server_activate()
    except BaseException:
        server.server_close()
        raise
    return server
