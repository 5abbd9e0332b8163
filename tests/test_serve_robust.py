"""Hostile and heavy traffic: garbage, limits, timeouts, slowloris, overload, concurrency, reload."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from serve.server import make_server
from w2v.model_io import load_model
from test_serve_support import call, make_model, parse_raw, raw, running


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("robust") / "m", V=200, D=8, table_k=10)


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


@pytest.fixture(scope="module")
def srv(model_dir):
    server = make_server(model_dir, threads=4, request_timeout=1.0, idle_timeout=1.0, max_request_line=1024,
                         max_headers=20, max_header_bytes=4096, max_body=8192)
    with running(server):
        yield server


def _problem(resp: bytes, status: int):
    st, h, body = parse_raw(resp)
    assert st == status, resp[:300]
    assert h["content-type"] == "application/problem+json" and "x-response-time" in h
    obj = json.loads(body)
    assert obj["status"] == status and obj["detail"]
    return h, obj


def _alive(port, model):
    status, _, body = call(port, "GET", f"/api/v1/recommendations/{int(model.aids[0])}?k=2")
    assert status == 200 and len(body) == 2


@pytest.mark.parametrize("payload,status", [
    (b"\x00\xff\xfe garbage\r\n\r\n", 400),
    (b"GET\r\n\r\n", 400),
    (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET nope HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / FTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nbad header line\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400),
    (b"POST /api/v1/recommendations HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
    (b"POST /api/v1/recommendations HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
    (b"POST /api/v1/recommendations HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
])
def test_garbage_is_answered_and_closed(srv, model, payload, status):
    resp = raw(srv.port, payload)
    h, _ = _problem(resp, status)
    assert h["connection"] == "close"
    _alive(srv.port, model)


def test_limits_414_431_413(srv, model):
    h, obj = _problem(raw(srv.port, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n"), 414)
    _problem(raw(srv.port, b"GET /" + b"a" * 5000), 414)   # not even terminated
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
    _problem(raw(srv.port, b"GET /healthz HTTP/1.1\r\n" + many + b"\r\n"), 431)
    _problem(raw(srv.port, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"v" * 5000 + b"\r\n\r\n"), 431)
    _problem(raw(srv.port, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"v" * 5000), 431)   # unterminated
    h, obj = _problem(raw(srv.port, b"POST /api/v1/recommendations HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\n"), 413)
    assert "8192" in obj["detail"]
    _alive(srv.port, model)


def test_body_too_large_via_http_client(srv):
    status, h, body = call(srv.port, "POST", "/api/v1/recommendations", b"[" + b"1," * 9000 + b"1]",
                           {"Content-Type": "application/json"})
    assert status == 413 and h["connection"] == "close"


def test_truncated_requests_do_not_hurt(srv, model):
    for payload in [b"GE", b"GET /healthz HTTP/1.1\r\nHost: x", b"POST /api/v1/recommendations HTTP/1.1\r\n"
                    b"Content-Length: 50\r\n\r\n{\"aids\""]:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(payload)
        s.close()   # client gives up half-way
    _alive(srv.port, model)


def test_request_deadline_408(srv):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")   # never finished
        t0 = time.monotonic()
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert time.monotonic() - t0 < 4.0
        _problem(data, 408)
    finally:
        s.close()


def test_idle_keepalive_connection_is_closed(srv):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert parse_raw(s.recv(4096))[0] == 200
        t0 = time.monotonic()
        assert s.recv(4096) == b""   # closed by the server after idle_timeout (1 s)
        assert 0.5 < time.monotonic() - t0 < 4.0
    finally:
        s.close()


def test_pipelining_expect_continue_http10(srv, model):
    aid = int(model.aids[3])
    two = (f"GET /api/v1/recommendations/{aid}?k=1 HTTP/1.1\r\nHost: x\r\n\r\n"
           "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode()
    out = raw(srv.port, two)
    assert out.count(b"HTTP/1.1 200 OK") == 2
    body = json.dumps({"aids": [aid]}).encode()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        s.sendall(b"POST /api/v1/recommendations HTTP/1.1\r\nExpect: 100-continue\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        assert s.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        assert parse_raw(s.recv(65536))[0] == 200
    finally:
        s.close()
    out = raw(srv.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert parse_raw(out)[2] == b'{"status":"ok"}' and parse_raw(out)[1]["connection"] == "close"
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    try:
        for _ in range(2):
            s.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            st, h, _ = parse_raw(s.recv(4096))
            assert st == 200 and h["connection"] == "keep-alive"
    finally:
        s.close()


def test_over_connection_cap_gets_503(model_dir, model):
    server = make_server(model_dir, threads=2, max_connections=3)
    with running(server):
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        try:
            for s in held:   # mid-request, so not idle: nothing may be evicted for a newcomer
                s.sendall(b"GET /healthz HTTP/1.1\r\n")
            time.sleep(0.2)
            h, obj = _problem(raw(server.port, b""), 503)
            assert h["retry-after"] == "1" and h["connection"] == "close"
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 5
        while server.open_connections and time.monotonic() < deadline:
            time.sleep(0.02)
        _alive(server.port, model)
        text = call(server.port, "GET", "/metrics")[2].decode()
        assert 'otto_events_total{event="rejected_over_capacity"} 1' in text


@pytest.mark.slow
def test_16_threads_x_500_requests_all_correct(srv, model):
    expected = {int(a): model.aids[model.neighbors[i, :5]].tolist() for i, a in enumerate(model.aids[:50])}
    aids = list(expected)
    errors, counts = [], [0] * 16

    def client(t):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        try:
            for i in range(500):
                aid = aids[(t * 31 + i) % len(aids)]
                s.sendall(f"GET /api/v1/recommendations/{aid}?k=5 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                status = f.readline()
                length = 0
                while True:
                    line = f.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = json.loads(f.read(length))
                if not status.startswith(b"HTTP/1.1 200") or body != expected[aid]:
                    errors.append((status, aid, body))
                counts[t] += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
        finally:
            f.close()
            s.close()

    threads = [threading.Thread(target=client, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert counts == [500] * 16


def test_slowloris_does_not_block_normal_clients(model_dir, model):
    server = make_server(model_dir, threads=2, request_timeout=30.0, idle_timeout=30.0, max_connections=1000)
    with running(server):
        slow = []
        try:
            for i in range(200):
                s = socket.create_connection(("127.0.0.1", server.port))
                s.sendall(b"GET /healthz HTTP/1.1\r\n" if i % 2 else b"")   # half idle, half mid-request
                slow.append(s)
            for rnd in range(3):
                for s in slow[1::2][:50]:
                    s.sendall(b"X-Drip: %d\r\n" % rnd)   # keep dripping bytes
                t0 = time.monotonic()
                _alive(server.port, model)
                assert time.monotonic() - t0 < 5.0   # the slow ones hold their sockets for 30 s
            assert server.open_connections >= 200
        finally:
            for s in slow:
                s.close()


def test_reload_under_load_loses_nothing(tmp_path):
    a = make_model(tmp_path / "a", V=100, D=8, seed=1, table_k=5)
    b = make_model(tmp_path / "b", V=120, D=8, seed=2, table_k=5)
    aids_a, aids_b = set(load_model(a).aids.tolist()), set(load_model(b).aids.tolist())
    server = make_server(a, threads=4)
    stop = threading.Event()
    errors, done = [], [0]

    def client():
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            while not stop.is_set():
                status, _, body = call(server.port, "POST", "/api/v1/recommendations",
                                       {"aids": sorted(aids_a | aids_b)[:50], "k": 3}, conn=c)
                if status != 200 or len(body) != 3:
                    errors.append((status, body))
                done[0] += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
        finally:
            c.close()

    with running(server):
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(6):
            time.sleep(0.05)
            assert server.reload(b if i % 2 == 0 else a)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert server.recommender.vocab_size == 100
        assert server.reload(b) and call(server.port, "GET", "/readyz")[2]["vocab_size"] == 120
    assert not errors, errors[:3]
    assert done[0] > 10


def test_long_pipeline_is_served_completely(srv):
    n = 150   # more than one worker turn (64 requests) of pipelined requests in one send
    out = raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * n
              + b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", timeout=10)
    assert out.count(b"HTTP/1.1 200 OK") == n + 1


def test_slow_reader_gets_every_pipelined_answer(srv):
    """Answers the kernel cannot take at once wait in the poller and resume when the client reads."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", srv.port))
    s.settimeout(10)
    n = 300   # ~2 MB of answers: far more than the socket buffers hold
    expected = parse_raw(raw(srv.port, b"GET /openapi.json HTTP/1.1\r\nConnection: close\r\n\r\n"))[2]
    try:
        s.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * n)
        time.sleep(0.3)   # not reading yet: the server parks the connection for writing
        data, bodies = bytearray(), []
        while len(bodies) < n:
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                status, h, _ = parse_raw(bytes(data[:end + 4]))
                size = end + 4 + int(h["content-length"])
                if len(data) >= size:
                    assert status == 200
                    bodies.append(bytes(data[end + 4:size]))
                    del data[:size]
                    continue
            chunk = s.recv(65536)
            assert chunk, len(bodies)
            data += chunk
        assert all(b == expected for b in bodies) and not data
    finally:
        s.close()


def test_the_oldest_idle_connection_is_evicted_first(model_dir, model):
    server = make_server(model_dir, threads=2, max_connections=3)
    with running(server):
        old = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        time.sleep(0.1)
        newer = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        busy = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            busy.sendall(b"GET /healthz HTTP/1.1\r\n")   # mid-request: never evicted
            time.sleep(0.2)
            _alive(server.port, model)                     # a fourth connection: evicts `old`
            assert old.recv(10) == b""
            newer.sendall(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert parse_raw(newer.recv(4096))[0] == 200
            busy.sendall(b"Connection: close\r\n\r\n")
            assert parse_raw(busy.recv(4096))[0] == 200
        finally:
            for s in (old, newer, busy):
                s.close()
        text = call(server.port, "GET", "/metrics")[2].decode()
        assert 'otto_events_total{event="idle_evicted"} 1' in text and 'event="rejected_over_capacity"} 0' in text
