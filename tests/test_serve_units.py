"""Pieces of the service without sockets: parameters, weights, metrics, config, problems."""
from __future__ import annotations

import json
import logging
import re
import threading
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serve import app
from serve.metrics import BUCKETS, Metrics
from serve.problems import HTTPProblem
from serve.recommend import Recommender
from serve.server import ServerConfig, build_response, make_server
from w2v.model_io import load_model
from test_serve_support import call, make_model, raw, parse_raw, running


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return Recommender(load_model(make_model(tmp_path_factory.mktemp("units") / "m", V=50, D=4, table_k=5)))


@pytest.mark.parametrize("v,ok", [("1", 1), ("100", 100), ("0", None), ("101", None), ("", None), ("1e2", None),
                                  ("٣", None), ("5.0", None), (5, 5), (True, None), (5.0, None), (None, None),
                                  (Decimal("5.0"), 5), (Decimal("1E+1"), 10), (Decimal("5.5"), None),
                                  (Decimal("1E+999999999"), None), (Decimal("NaN"), None), (Decimal("Infinity"), None)])
def test_parse_k(v, ok):
    if ok is None:
        with pytest.raises(HTTPProblem) as e:
            app.parse_k(v)
        assert e.value.status == 400 and "'k'" in e.value.detail
    else:
        assert app.parse_k(v) == ok


def test_parse_query_rules():
    assert app.parse_query("k=5&type=carts", ("k", "type")) == {"k": "5", "type": "carts"}
    assert app.parse_query("", ()) == app.parse_query("&&&", ()) == {}
    assert app.parse_query("&k=5&&", ("k",)) == {"k": "5"}                          # empty segments ignored
    assert app.parse_query("scores&k=", ("k", "scores")) == {"scores": None, "k": ""}   # a bare name is a flag
    assert app.parse_query("k=%35&t=a+b%20c", ("k", "t")) == {"k": "5", "t": "a b c"}
    for q in ("k=1&k=2", "zz=1", "=1", "k=%ff", "&".join(["k=1"] * 17)):
        with pytest.raises(HTTPProblem) as e:
            app.parse_query(q, ("k",))
        assert e.value.status == 400


@pytest.mark.parametrize("v,ok", [(None, True), ("true", True), ("1", True), ("FALSE", False), ("no", False),
                                  (True, True), (False, False), ("", None), ("maybe", None), (1, None)])
def test_parse_bool(v, ok):
    if ok is None:
        with pytest.raises(HTTPProblem):
            app.parse_bool(v, "x")
    else:
        assert app.parse_bool(v, "x") is ok


@given(st.integers(-2**70, 2**70), st.sampled_from(["{}", "{}.0", "{}.000", "{}e0", "{}.0e0"]))
def test_json_int_is_exact_for_integer_valued_literals(n, fmt):
    """Any integer-valued JSON literal is that integer, exactly (no float rounding), within range."""
    value = app.load_json(fmt.format(n).encode())
    got = app.json_int(value, 0, app.MAX_AID)
    assert got == (n if 0 <= n <= app.MAX_AID else None)
    assert app.json_int(app.load_json(f"{n}.5".encode()), -2**80, 2**80) is None


def test_load_json_rejects_non_json_constants():
    for bad in (b"NaN", b"[Infinity]", b"-Infinity", b"\xff"):
        with pytest.raises(HTTPProblem) as e:
            app.load_json(bad)
        assert e.value.status == 400


@pytest.mark.parametrize("ctype,ok", [("application/json", True), ("Application/JSON", True),
                                      ("application/json; charset=utf-8", True), ('application/json;charset="UTF-8"', True),
                                      ("application/json;", True), (None, False), ("text/plain", False),
                                      ("application/x-www-form-urlencoded", False), ("application/json-seq", False),
                                      ("application/json; charset=latin-1", False), ("application/json; v=1", False)])
def test_require_json_body(ctype, ok):
    req = app.Request("POST", "/api/v1/recommendations", "HTTP/1.1", {} if ctype is None else {"content-type": ctype})
    if ok:
        app.require_json_body(req)
    else:
        with pytest.raises(HTTPProblem) as e:
            app.require_json_body(req)
        assert e.value.status == 415 and e.value.headers["Accept-Post"] == "application/json"
        assert "Content-Type" in e.value.detail


def test_route_decodes_paths_per_segment():
    assert app.route("GET", "/api/v1/%70opular")[0] == app.ROUTE_POPULAR
    assert app.route("GET", "/api/v1/recommendations/%34%32")[2]["aid"] == "42"
    assert app.route("GET", "/api/v1/recommendations/1%2F2")[2]["aid"] == "1/2"   # stays one segment (then 400)
    assert app.route("OPTIONS", "*")[0] == app.ROUTE_SERVER
    for method, path, status in [("GET", "/api%2Fv1/popular", 404), ("GET", "/%ff", 400), ("GET", "*", 400),
                                 ("DELETE", "/healthz", 405)]:
        with pytest.raises(HTTPProblem) as e:
            app.route(method, path)
        assert e.value.status == status and e.value.route


@given(st.lists(st.integers(0, 2**63 - 1), max_size=40))
def test_aid_list_is_compact_json(aids):
    assert app.aid_list(aids) == json.dumps(aids, separators=(",", ":")).encode()


def test_route_answers_the_same_with_and_without_percent_encoding():
    # the unencoded fast path and the decoding path agree, Allow lists included
    for plain, encoded in [("/api/v1/popular", "/api/v1/%70opular"), ("/healthz", "/%68ealthz"),
                           ("/api/v1/recommendations/42", "/api/v1/recommendations/%34%32")]:
        for method in ("GET", "HEAD", "OPTIONS"):
            a, b = app.route(method, plain), app.route(method, encoded)
            assert (a[0], a[2]) == (b[0], b[2])
            if method == "OPTIONS":
                assert a[1](None, None, {}).headers == b[1](None, None, {}).headers
            else:
                assert a[1] is b[1]
        with pytest.raises(HTTPProblem) as e:
            app.route("DELETE", plain)
        assert e.value.status == 405 and "GET" in e.value.headers["Allow"]


def test_session_unknown_and_own_aids(rec):
    aids = rec.model.aids
    res = rec.session([int(aids[0]), 10**12, int(aids[1])], [0, 2, 1], 48)
    assert res.unknown == [10**12] and res.used == 2
    assert len(res.aids) == 48 and {int(aids[0]), int(aids[1])} <= set(res.aids)   # own aids rank high
    res = rec.session([int(aids[3])] * 3, [0, 0, 0], 100)
    assert len(res.aids) == 50 and res.aids[0] == int(aids[3])
    with pytest.raises(LookupError):
        rec.session([10**12], [0], 5)


def test_recommender_rejects_bad_parameters(rec):
    with pytest.raises(ValueError):
        Recommender(rec.model, decay=0.0)
    with pytest.raises(ValueError):
        Recommender(rec.model, type_weights=(1.0, -1.0, 2.0))


def test_metrics_shards_sum_and_histogram():
    m = Metrics()

    def work():
        for i in range(1000):
            m.observe("/r", "GET", 200, 0.0002 if i % 2 else 0.003)
        m.event("x", 2)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    m.observe("/r", "BREW", 418, 10.0)
    text = m.render([("g", "help", {"a": 'q"uote'}, 1.5)]).decode()
    assert 'otto_http_requests_total{route="/r",method="GET",status="200"} 4000' in text
    assert 'method="OTHER",status="418"' in text
    assert 'le="0.00025"} 2000' in text and 'le="0.005"} 4000' in text and 'le="+Inf"} 4001' in text
    assert 'otto_events_total{event="x"} 8' in text and 'g{a="q\\"uote"} 1.5' in text
    # one histogram series: its buckets rise strictly, end at +Inf, and count cumulatively
    series = re.findall(r'le="([^"]+)"\} (\d+)', text)[:len(BUCKETS) + 1]
    bounds = [float(b) for b, _ in series]
    counts = [int(c) for _, c in series]
    assert len(series) == len(BUCKETS) + 1 and bounds[-1] == float("inf")
    assert all(a < b for a, b in zip(bounds, bounds[1:])) and counts == sorted(counts) and counts[-1] == 4001


def test_config_validation():
    with pytest.raises(ValueError, match="threads"):
        ServerConfig(threads=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        ServerConfig(idle_timeout=-1)
    assert ServerConfig(linger=0).linger == 0


def test_default_lanes_are_one_thread_per_cpu(monkeypatch):
    import serve.server as srv
    for cpus, want in ((1, 2), (2, 2), (6, 6)):
        monkeypatch.setattr(srv, "default_threads", lambda cpus=cpus: cpus)
        assert ServerConfig().threads == want
        assert ServerConfig().long_threads == want
    assert ServerConfig(threads=3).threads == 3
    assert ServerConfig(long_threads=5).long_threads == 5
    with pytest.raises(ValueError, match="long_threads"):
        ServerConfig(long_threads=0)


def test_a_worker_lingers_only_when_no_queued_connection_lacks_a_worker():
    from serve.server import LONG, SHORT
    server = make_server(None, threads=3, long_threads=2)
    try:
        short, long_ = server.lanes[SHORT], server.lanes[LONG]
        short.waiting, long_.waiting = [False] * 3, [False] * 2
        assert server.may_linger(SHORT) and server.may_linger(LONG)   # nothing queued
        server.work_queue.put(object())
        assert not server.may_linger(SHORT)         # queued, every worker busy: hand the connection back
        assert server.may_linger(LONG)              # the other lane's queue does not count
        short.waiting[2] = True
        assert server.may_linger(SHORT)             # queued, but a free worker takes it
        long_.queue.put(object())
        assert not server.may_linger(LONG)
        long_.waiting[0] = True
        assert server.may_linger(LONG)
        server.draining = True
        assert not server.may_linger(SHORT) and not server.may_linger(LONG)   # draining: never wait
    finally:
        server.server_close()


def test_build_response_is_complete():
    r = build_response(200, b"[1]", "application/json", {"X-A": "b"}, 0.001, close=True)
    head, body = r.split(b"\r\n\r\n")
    assert body == b"[1]" and b"Content-Length: 3" in head and b"X-Response-Time: 1.000ms" in head
    assert b"Connection: close" in head and b"X-A: b" in head
    assert build_response(200, b"[1]", "a/b", None, 0, close=False, head_only=True).endswith(b"\r\n\r\n")


def test_odd_but_valid_requests_and_access_log(tmp_path, caplog):
    d = make_model(tmp_path / "m", V=30, D=4, table_k=5)
    server = make_server(d, threads=1, access_log=True)
    with caplog.at_level(logging.INFO, logger="serve.access"), running(server):
        out = raw(server.port, b"\r\nGET http://example/healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert parse_raw(out)[0] == 200   # leading empty line, absolute-form target
        st_, h, _ = parse_raw(raw(server.port, b"BREW /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"))
        assert st_ == 405 and h["allow"] == "GET, HEAD, OPTIONS"
        assert parse_raw(raw(server.port, b"GET /healthz HTTP/1.1\nConnection: close\n\n"))[0] == 200   # bare LF
        assert call(server.port, "GET", "/healthz")[0] == 200
    assert any('"GET /healthz HTTP/1.1" 200' in r.getMessage() for r in caplog.records)


def test_unexpected_error_is_a_logged_500_and_the_server_lives_on(tmp_path, caplog):
    d = make_model(tmp_path / "m", V=30, D=4, table_k=5)
    server = make_server(d, threads=1)
    good = server.recommender

    class Broken:
        has_popular = True

        def popular(self, t, k):
            raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="serve"), running(server):
        server.recommender = Broken()
        status, h, body = call(server.port, "GET", "/api/v1/popular")
        assert status == 500 and body["status"] == 500 and "boom" not in body["detail"]
        server.recommender = good
        assert call(server.port, "GET", "/api/v1/popular")[0] == 200
    assert any("boom" in (r.exc_text or "") for r in caplog.records)
