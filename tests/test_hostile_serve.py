"""Hostile clients and careless operators against otto-serve (what each test attacks: tests/HOSTILE.md).

Loopback only, port 0, every wait bounded. Latency bounds here are deliberately generous (they
catch a stall of seconds, not a slow machine); the latency target itself is measured by
``bench/bench_serve.py --hostile``.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from serve.server import make_server
from w2v.model_io import load_model
from test_serve_support import call, make_model, running

LOOPBACK = "127.0.0.1"
STALL = 3.0   # seconds: far above any normal answer here, far below the stalls these attacks caused


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("hostile") / "m", V=200, D=8, table_k=10)


def events(port) -> dict[str, int]:
    status, _, body = call(port, "GET", "/metrics")
    assert status == 200, (status, body)
    text = body.decode()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'otto_events_total\{event="(\w+)"\} (\d+)', text)}


# --- hostile clients ----------------------------------------------------------------------------

def pipeliner(port) -> socket.socket:
    """Sends 1,600 pipelined requests for a 7 KB answer and never reads one."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((LOOPBACK, port))
    s.settimeout(5)
    s.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 1600)   # 64 KB
    return s


class Drip(threading.Thread):
    """Sends ``chunk`` to every socket every ``interval`` seconds until stopped (errors ignored:
    the server is expected to close these sockets)."""

    def __init__(self, socks, chunk: bytes, interval: float):
        super().__init__(daemon=True)
        self.socks, self.chunk, self.interval = socks, chunk, interval
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(self.interval):
            for s in self.socks:
                try:
                    s.send(self.chunk)
                except OSError:
                    pass


def tricklers(port, n) -> tuple[list[socket.socket], Drip]:
    """``n`` connections that send nothing but empty lines (CRLF) every 2 ms, ~1 KB/s each."""
    socks = [socket.create_connection((LOOPBACK, port)) for _ in range(n)]
    for s in socks:
        s.setblocking(False)
    return socks, Drip(socks, b"\r\n", 0.002)


def header_senders(port, n) -> tuple[list[socket.socket], Drip]:
    """``n`` connections that send a request head at 1 byte/s."""
    socks = []
    for _ in range(n):
        s = socket.create_connection((LOOPBACK, port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        s.setblocking(False)
        socks.append(s)
    return socks, Drip(socks, b"a", 1.0)


def closed_by_server(s: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``s`` within ``timeout`` (whatever it answered first)."""
    s.setblocking(True)
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except OSError:
        return False
    return False


def normal_client(port, aid, n) -> tuple[list, list[float]]:
    """``n`` requests on keep-alive connections, a new connection every 10: (errors, latencies)."""
    errors, lat = [], []
    conn = None
    for i in range(n):
        if i % 10 == 0:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=12)
        t0 = time.monotonic()
        try:
            path = f"/api/v1/recommendations/{aid}?k=5" if i % 2 else "/api/v1/popular?k=3"
            status, _, body = call(port, "GET", path, conn=conn)
            if status != 200 or not isinstance(body, list) or not body:
                errors.append((i, status, body))
        except Exception as exc:  # noqa: BLE001 - a stall shows up as a timeout here
            errors.append((i, repr(exc)))
            conn.close()
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=12)
        lat.append(time.monotonic() - t0)
    conn.close()
    return errors, lat


def close_all(socks):
    for s in socks:
        s.close()


# --- item 7: pipelining clients that never read ------------------------------------------------

def test_never_reading_pipeliners_hold_no_worker(model_dir):
    """64 connections pipeline requests and never read: every worker used to block in a write."""
    model = load_model(model_dir)
    server = make_server(model_dir, threads=4, send_timeout=1.5)
    with running(server):
        socks = [pipeliner(server.port) for _ in range(64)]
        try:
            errors, lat = normal_client(server.port, int(model.aids[0]), 40)
            assert not errors, errors[:3]
            assert max(lat) < STALL, max(lat)
            # the pipeliners are dropped once their unread answers are older than send_timeout
            # (waiting without reading: reading would let their answers flow again)
            deadline = time.monotonic() + 10
            while events(server.port).get("send_timeout", 0) < 64 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert events(server.port).get("send_timeout", 0) == 64
            assert all(closed_by_server(s, 5) for s in socks)
        finally:
            close_all(socks)


# --- item 8: empty lines trickled --------------------------------------------------------------

def test_crlf_tricklers_hold_no_worker_and_meet_the_deadline(model_dir):
    """Empty lines before a request line used to reset the request deadline, and a worker kept
    reading them as long as they kept coming."""
    model = load_model(model_dir)
    server = make_server(model_dir, threads=4, request_timeout=2.0)
    with running(server):
        socks, drip = tricklers(server.port, 64)
        drip.start()
        try:
            errors, lat = normal_client(server.port, int(model.aids[0]), 40)
            assert not errors, errors[:3]
            assert max(lat) < STALL, max(lat)
            # the deadline runs from the first empty line: all are cut after 2 s (408), while dripping
            t0 = time.monotonic()
            assert all(closed_by_server(s, 10) for s in socks)
            assert time.monotonic() - t0 < 8
            assert events(server.port).get("request_timeout", 0) == 64
        finally:
            drip.stop.set()
            drip.join(5)
            close_all(socks)


def test_empty_lines_count_towards_the_request_line_limit(model_dir):
    server = make_server(model_dir, threads=1, max_request_line=1024)
    with running(server):
        s = socket.create_connection((LOOPBACK, server.port), timeout=5)
        try:
            s.sendall(b"\r\n" * 600)   # 1,200 bytes of empty lines
            data = s.recv(4096)
            assert data.startswith(b"HTTP/1.1 400 ") and b"empty lines" in data
        finally:
            s.close()
        assert call(server.port, "GET", "/healthz")[0] == 200


# --- all three kinds at once -------------------------------------------------------------------

def test_64_of_each_hostile_kind_at_once_a_normal_client_is_served(model_dir):
    """64 never-reading pipeliners + 64 CRLF tricklers + 64 1-byte/s header senders, default limits."""
    model = load_model(model_dir)
    server = make_server(model_dir)
    with running(server):
        pipes = [pipeliner(server.port) for _ in range(64)]
        crlf, drip1 = tricklers(server.port, 64)
        slow, drip2 = header_senders(server.port, 64)
        drip1.start()
        drip2.start()
        try:
            time.sleep(0.3)
            errors, lat = normal_client(server.port, int(model.aids[1]), 200)
            assert not errors, errors[:3]
            assert max(lat) < STALL, max(lat)
            assert server.open_connections >= 192   # the hostile ones are still there (deadlines are 10 s)
        finally:
            for d in (drip1, drip2):
                d.stop.set()
                d.join(5)
            close_all(pipes + crlf + slow)


# --- item 9: idle connections beyond the cap ---------------------------------------------------

@contextlib.contextmanager
def open_files(n):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {n}: cannot hold the connections this test needs")
    if soft != resource.RLIM_INFINITY and soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_2000_idle_connections_do_not_lock_a_client_out(model_dir):
    """More idle connections than max_connections used to get every newcomer a 503."""
    model = load_model(model_dir)
    with open_files(4096 + 512):
        server = make_server(model_dir, threads=4)   # max_connections 1024
        with running(server):
            idle = []
            try:
                for _ in range(2000):
                    idle.append(socket.create_connection((LOOPBACK, server.port), timeout=10))
                deadline = time.monotonic() + 10
                while events(server.port).get("connection_accepted", 0) < 2000 and time.monotonic() < deadline:
                    time.sleep(0.05)
                errors, lat = normal_client(server.port, int(model.aids[2]), 20)
                assert not errors, errors[:3]
                ev = events(server.port)
                assert ev.get("rejected_over_capacity", 0) == 0
                assert ev.get("idle_evicted", 0) >= 2000 - 1024
                assert server.open_connections <= 1024
            finally:
                close_all(idle)


# --- a failed reload ---------------------------------------------------------------------------

def test_failed_reloads_keep_the_model_and_are_counted(model_dir, tmp_path, caplog):
    """Load errors other than ValueError/OSError escaped the reload (a traceback, no count)."""
    npz = make_model(tmp_path / "npz", V=20, D=4, table_k=0)
    np.savez(npz / "vectors.npy", a=np.zeros((20, 4), np.float32))   # an .npz under an .npy name
    os.replace(npz / "vectors.npy.npz", npz / "vectors.npy")
    empty = make_model(tmp_path / "empty", V=20, D=4, table_k=0)
    (empty / "vectors.npy").write_bytes(b"")                            # 0 bytes
    deep = make_model(tmp_path / "deep", V=20, D=4, table_k=0)
    (deep / "meta.json").write_text("[" * 200_000)                      # nesting beyond the recursion limit
    bad = [npz, empty, deep, tmp_path / "missing"]
    model = load_model(model_dir)
    server = make_server(model_dir, threads=2)
    with running(server), caplog.at_level("INFO", logger="serve"):
        for path in bad:
            assert server.reload(path) is False
        assert events(server.port).get("reload_failed", 0) == len(bad)
        status, _, body = call(server.port, "GET", "/readyz")
        assert status == 200 and body["vocab_size"] == 200 and body["model"] == str(model_dir)
        assert call(server.port, "GET", f"/api/v1/recommendations/{int(model.aids[0])}")[0] == 200
        assert server.reload() is True   # the model it serves is still the one it reloads
    failures = [r for r in caplog.records if "reload of" in r.getMessage()]
    assert len(failures) == len(bad)
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in failures)
    assert all(str(p) in r.getMessage() for p, r in zip(bad, failures))


# --- processes ---------------------------------------------------------------------------------

class Proc:
    """``python -m serve ARGS --port 0`` with stderr collected line by line."""

    def __init__(self, args, timeout=120):
        self.p = subprocess.Popen([sys.executable, "-m", "serve", *map(str, args), "--port", "0", "--quiet"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if "listening on" in line or not line:
                break
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.p.kill()
            raise AssertionError(f"no 'listening on' line: {line!r} {self.stderr}")
        self.port = int(m.group(1))

    def _read(self):
        for line in self.p.stderr:
            self.err.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.stderr)
            if m:
                return m.group(0)
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not logged within {timeout} s; stderr: {self.stderr[-2000:]}")

    def stop(self, timeout=30) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise
        self._t.join(5)
        return self.p.returncode


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="signals, SO_REUSEPORT: Linux")


# --- item 10: a mapped model file truncated in place -------------------------------------------

@linux_only
def test_truncated_mapped_vectors_are_logged_and_unloaded_not_a_silent_crash(tmp_path):
    """Truncating vectors.npy in place killed the server with SIGBUS and no log line."""
    d = make_model(tmp_path / "m", V=400, D=16, table_k=0)   # no table: every answer scans all vectors
    aid = int(load_model(d).aids[0])
    srv = Proc([d, "--threads", "2"])
    try:
        assert call(srv.port, "GET", f"/api/v1/recommendations/{aid}")[0] == 200
        os.truncate(d / "vectors.npy", 128)   # what `cp new.npy vectors.npy` or `> vectors.npy` does first
        srv.wait_for(r"vectors\.npy was truncated in place .*never truncate", 10)
        status, _, body = call(srv.port, "GET", f"/api/v1/recommendations/{aid}")
        assert status == 503 and call(srv.port, "GET", "/readyz")[0] == 503
        assert srv.p.poll() is None   # alive, not killed by SIGBUS
        assert 'event="model_file_truncated"} 1' in call(srv.port, "GET", "/metrics")[2].decode()
        make_model(d, V=400, D=16, table_k=0)   # the right way: a new model swapped into place
        srv.p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while call(srv.port, "GET", "/readyz")[0] != 200:
            assert time.monotonic() < deadline, srv.stderr
            time.sleep(0.1)
        assert call(srv.port, "GET", f"/api/v1/recommendations/{aid}")[0] == 200
    finally:
        code = srv.stop()
    assert code == 0 and "Traceback" not in srv.stderr


# --- --workers: a worker that dies -------------------------------------------------------------

def _pids(port, want, seen=(), timeout=30.0) -> set[int]:
    """Worker pids answering /readyz on new connections, until ``want`` distinct ones not in ``seen``."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids - set(seen)) < want:
        assert time.monotonic() < deadline, pids
        try:
            status, _, body = call(port, "GET", "/readyz")
            if status == 200:
                pids.add(body["pid"])
        except OSError:
            pass
    return pids - set(seen)


@linux_only
def test_a_dead_worker_is_logged_and_restarted(model_dir):
    """A --workers child that died was neither restarted nor logged until all had died."""
    srv = Proc([model_dir, "--workers", "2", "--threads", "2"])
    try:
        first = _pids(srv.port, 2)
        victim = min(first)
        os.kill(victim, signal.SIGBUS)   # as a truncated mapped file would
        srv.wait_for(r"Fatal Python error: Bus error", 10)   # the worker's own last words (faulthandler)
        srv.wait_for(rf"worker \d \(pid {victim}\) exited unexpectedly .*killed by SIGBUS.*truncated in place"
                     r".*restarting it in 0\.5 s", 10)
        new = _pids(srv.port, 1, seen=first)
        assert victim not in new
        os.kill(new.pop(), signal.SIGKILL)   # and again: restarted again
        srv.wait_for(r"killed by SIGKILL\); restarting it in", 10)
        _pids(srv.port, 1, seen=first | new)
    finally:
        code = srv.stop()
    assert code == 0


# --- bind errors -------------------------------------------------------------------------------

@linux_only
@pytest.mark.parametrize("workers", [1, 2])
def test_bind_error_names_the_address(model_dir, workers):
    taken = socket.create_server((LOOPBACK, 0))   # listening, without SO_REUSEPORT
    port = taken.getsockname()[1]
    try:
        r = subprocess.run([sys.executable, "-m", "serve", str(model_dir), "--port", str(port),
                            "--workers", str(workers)], capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert r.returncode == 1
    assert r.stderr == f"otto-serve: error: cannot bind {LOOPBACK}:{port}: Address already in use\n"
