"""The two worker lanes: long requests (sessions, exact scans) on their own workers, so short ones
never wait behind them; a connection handed between lanes keeps its answers in order."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from serve import app
from serve.server import LONG, SHORT, Server, ServerConfig, make_server
from w2v.model_io import load_model
from test_serve_support import call, make_model, ref_topk, running

TABLE_K = 20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("lanes") / "m", V=200, D=8, table_k=TABLE_K)


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


def _req(method, target, body=b""):
    return app.Request(method, target, "HTTP/1.1", {}, body)


def test_long_requests_are_sessions_and_item_requests_beyond_the_table(model_dir, model, tmp_path):
    server = make_server(model_dir)
    try:
        aid = int(model.aids[0])
        item = f"/api/v1/recommendations/{aid}"
        assert server.is_long(_req("POST", "/api/v1/recommendations", b'{"aids":[1]}'))
        assert server.is_long(_req("POST", "/api/v1/recommendations?x=1"))           # the path decides
        assert not server.is_long(_req("GET", item))                                 # default k 10 <= 20
        assert not server.is_long(_req("GET", f"{item}?k={TABLE_K}&scores=true"))
        assert server.is_long(_req("GET", f"{item}?k={TABLE_K + 1}"))
        assert server.is_long(_req("HEAD", f"{item}?k={TABLE_K + 30}"))
        assert not server.is_long(_req("GET", f"{item}?k={app.MAX_K + 1}"))           # answered 400 at once
        assert not server.is_long(_req("GET", f"{item}?k=abc"))                      # answered 400 at once
        assert not server.is_long(_req("GET", f"{item}?k=5&bogus=1"))
        assert not server.is_long(_req("GET", f"{item}?k=0"))
        for method, target in (("GET", "/api/v1/popular"), ("POST", "/api/v1/popular"), ("GET", "/healthz"),
                               ("GET", "/metrics"), ("OPTIONS", item), ("DELETE", item), ("GET", "/api/v1/recommendations")):
            assert not server.is_long(_req(method, target)), (method, target)
    finally:
        server.server_close()
    no_table = make_model(tmp_path / "nt", V=50, D=8, table_k=0)
    server = make_server(no_table)
    try:
        assert server.is_long(_req("GET", f"/api/v1/recommendations/{int(load_model(no_table).aids[0])}"))
    finally:
        server.server_close()
    server = make_server(None)
    try:
        assert not server.is_long(_req("POST", "/api/v1/recommendations"))          # no model: 503 at once
    finally:
        server.server_close()


class _OneLane(Server):
    """Every request on the short lane: the single shared pool of earlier versions."""

    def is_long(self, req):
        return False


def _block_sessions(monkeypatch, server):
    """Make every session request wait for ``release``; ``entered`` is set when one is waiting."""
    entered, release = threading.Event(), threading.Event()
    real = server.recommender.session

    def session(*args, **kwargs):
        entered.set()
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(server.recommender, "session", session)
    return entered, release


def _post_session(port, aid, out, i):
    out[i] = call(port, "POST", "/api/v1/recommendations", {"aids": [aid]})[0]


@pytest.mark.parametrize("one_lane", [False, True])
def test_item_requests_are_answered_while_every_long_worker_is_busy(model_dir, model, monkeypatch, one_lane):
    """Two sessions stuck in their kernel (one running, one queued), one short worker: an item
    request is still answered at once. The control (one shared lane) shows the test can fail:
    there the item request waits behind the stuck session."""
    cls = _OneLane if one_lane else Server
    server = cls(("127.0.0.1", 0), None, ServerConfig(threads=1, long_threads=1))
    server.recommender = make_server(model_dir).recommender
    entered, release = _block_sessions(monkeypatch, server)
    aid = int(model.aids[7])
    with running(server):
        codes = [None, None]
        posts = [threading.Thread(target=_post_session, args=(server.port, aid, codes, i)) for i in range(2)]
        posts[0].start()
        assert entered.wait(10)
        posts[1].start()
        c = socket.create_connection(("127.0.0.1", server.port), timeout=1.5)
        try:
            c.sendall(f"GET /api/v1/recommendations/{aid}?k=3 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            if one_lane:
                with pytest.raises(socket.timeout):
                    c.recv(65536)
            else:
                resp = c.recv(65536)
                assert resp.startswith(b"HTTP/1.1 200 OK")
                got = json.loads(resp.partition(b"\r\n\r\n")[2])
                rows, _ = ref_topk(model.vectors, model.vectors[7], 3, exclude=[7])
                assert got == [int(model.aids[r]) for r in rows]
                assert codes == [None, None]             # both sessions still waiting for their kernel
        finally:
            c.close()
            release.set()
            for t in posts:
                t.join(30)
        assert codes == [200, 200]


def _responses(sock, n):
    """``n`` complete responses read from ``sock``: a list of (status, body bytes)."""
    buf, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, (out, buf)
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk
            rest += chunk
        out.append((int(head.split(b" ")[1]), rest[:length]))
        buf = rest[length:]
    return out


def test_a_pipelined_connection_crossing_lanes_keeps_its_answers_in_order(model_dir, model):
    server = make_server(model_dir, threads=1, long_threads=1)
    aids = [int(a) for a in model.aids[:6]]
    with running(server):
        want, payload = [], b""
        for i, aid in enumerate(aids):
            if i % 2:
                body = json.dumps({"aids": [aid]}).encode()
                payload += (b"POST /api/v1/recommendations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(body)) + body
                want.append(call(server.port, "POST", "/api/v1/recommendations", {"aids": [aid]})[2])
            else:
                k = TABLE_K + 5 if i == 4 else 4     # the third item request is a scan: long as well
                payload += f"GET /api/v1/recommendations/{aid}?k={k} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                want.append(call(server.port, "GET", f"/api/v1/recommendations/{aid}?k={k}")[2])
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            s.sendall(payload)
            got = _responses(s, len(aids))
        finally:
            s.close()
        assert [st for st, _ in got] == [200] * len(aids)
        assert [json.loads(b) for _, b in got] == want
        _, _, text = call(server.port, "GET", "/metrics")
        assert 'otto_worker_threads{lane="short"} 1' in text.decode()
        assert 'otto_worker_threads{lane="long"} 1' in text.decode()
    assert server.lanes[SHORT].queue.empty() and server.lanes[LONG].queue.empty()


def test_shutdown_closes_a_connection_still_queued_for_a_stuck_long_worker(model_dir, model, monkeypatch):
    """The one long worker is stuck in a session kernel beyond the shutdown's wait; a second
    session request, already handed to the long lane, is closed at shutdown instead of left open
    with nobody to answer it (its client sees the end of the stream, not a hang)."""
    server = Server(("127.0.0.1", 0), None, ServerConfig(threads=1, long_threads=1, request_timeout=1.0))
    server.recommender = make_server(model_dir).recommender
    entered, release = _block_sessions(monkeypatch, server)
    aid = int(model.aids[3])
    body = json.dumps({"aids": [aid]}).encode()
    post = (b"POST /api/v1/recommendations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    first = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    second = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        first.sendall(post)
        assert entered.wait(10)
        second.sendall(post)
        for _ in range(200):                         # until the short worker has handed it over
            if not server.lanes[LONG].queue.empty():
                break
            threading.Event().wait(0.01)
        assert not server.lanes[LONG].queue.empty()
        server.shutdown()                            # waits 1 s for the stuck worker, then gives up
        t.join(10)
        assert not t.is_alive()
        assert second.recv(65536) == b""             # closed, not left hanging
        assert server.lanes[LONG].queue.empty()
    finally:
        release.set()
        first.close()
        second.close()
        server.server_close()
