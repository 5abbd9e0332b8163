"""Endpoints and their errors, in process, over real sockets on 127.0.0.1 (port 0)."""
from __future__ import annotations

import http.client
import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.server import make_server
from w2v import knn
from w2v.model_io import load_model
from test_serve_support import (TYPE_NAMES, assert_ranking, call, make_model, parse_raw, raw, ref_topk, running,
                                session_query)

ZERO_ROW = 7


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("serve") / "m", V=300, D=16, table_k=20, zero_rows=(ZERO_ROW,))


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


@pytest.fixture(scope="module")
def srv(model_dir):
    server = make_server(model_dir, "127.0.0.1", 0, threads=4)
    with running(server):
        yield server


def _check_common(h):
    assert int(h["content-length"]) >= 0
    assert h["x-response-time"].endswith("ms") and float(h["x-response-time"][:-2]) >= 0


def _check_problem(status, h, body, expect):
    assert status == expect, body
    assert h["content-type"] == "application/problem+json"
    assert body["status"] == expect and body["title"] and body["detail"] and body["type"].startswith("http")
    _check_common(h)


# --- popular ---------------------------------------------------------------------------------------

def test_popular_default_is_top10_orders(srv, model):
    status, h, body = call(srv.port, "GET", "/api/v1/popular")
    assert status == 200 and h["content-type"] == "application/json"
    _check_common(h)
    assert body == model.popular[2, :10].tolist()


@pytest.mark.parametrize("t", TYPE_NAMES)
def test_popular_type_and_k(srv, model, t):
    status, _, body = call(srv.port, "GET", f"/api/v1/popular?k=3&type={t}")
    assert status == 200 and body == model.popular[TYPE_NAMES.index(t), :3].tolist()


@pytest.mark.parametrize("q", ["k=0", "k=101", "k=abc", "k=-1", "k=", "type=views", "k=1&k=2", "limit=3", "k=1.5"])
def test_popular_bad_parameters(srv, q):
    _check_problem(*call(srv.port, "GET", f"/api/v1/popular?{q}"), 400)


def test_popular_without_table_is_404(tmp_path):
    d = make_model(tmp_path / "nopop", V=20, D=4, table_k=0, popular=False)
    with running(make_server(d, threads=1)) as s:
        status, h, body = call(s.port, "GET", "/api/v1/popular")
        _check_problem(status, h, body, 404)
        assert "popularity table" in body["detail"]


# --- item recommendations --------------------------------------------------------------------------

@pytest.mark.parametrize("row", [0, 1, 150, 299])
def test_item_table_path_equals_table_and_reference(srv, model, row):
    aid = int(model.aids[row])
    status, h, body = call(srv.port, "GET", f"/api/v1/recommendations/{aid}?scores=true")
    assert status == 200 and set(body) == {"items"}
    got = [x["aid"] for x in body["items"]]
    assert got == model.aids[model.neighbors[row, :10]].tolist()
    ref_rows, ref_s = ref_topk(model.vectors, model.vectors[row], 10, exclude=[row])
    assert_ranking(got, [x["score"] for x in body["items"]], model.aids[ref_rows].tolist(), ref_s.tolist())
    assert aid not in got


@pytest.mark.parametrize("row,k", [(3, 21), (42, 100), (ZERO_ROW, 25)])
def test_item_exact_path_equals_kernel_and_reference(srv, model, row, k):
    aid = int(model.aids[row])
    status, _, body = call(srv.port, "GET", f"/api/v1/recommendations/{aid}?k={k}&scores=true")
    body = body["items"]
    assert status == 200 and len(body) == k
    got = [x["aid"] for x in body]
    inv = knn.inverse_norms(model.vectors)
    s, rows = knn.topk(model.vectors, inv, model.vectors[row], k, exclude=np.array([row]))
    assert got == model.aids[rows].tolist()
    ref_rows, ref_s = ref_topk(model.vectors, model.vectors[row], k, exclude=[row])
    assert_ranking(got, [x["score"] for x in body], model.aids[ref_rows].tolist(), ref_s.tolist())
    if row == ZERO_ROW:   # a zero vector scores 0 against everything: ties broken by row
        assert all(x["score"] == 0 for x in body)


def test_item_plain_list_and_default_k(srv, model):
    status, _, body = call(srv.port, "GET", f"/api/v1/recommendations/{int(model.aids[5])}")
    assert status == 200 and body == model.aids[model.neighbors[5, :10]].tolist()


def test_item_unknown_and_malformed(srv, model):
    unknown = int(model.aids.max()) + 1
    status, h, body = call(srv.port, "GET", f"/api/v1/recommendations/{unknown}")
    _check_problem(status, h, body, 404)
    assert str(unknown) in body["detail"]
    for seg in ["abc", "-1", "1.0", "99999999999999999999", "%2D1", "1%2F2", "%ff", "%31.0"]:
        _check_problem(*call(srv.port, "GET", f"/api/v1/recommendations/{seg}"), 400)
    for q in ["k=0", "k=1000", "scores=maybe", "x=1"]:
        _check_problem(*call(srv.port, "GET", f"/api/v1/recommendations/{int(model.aids[0])}?{q}"), 400)


def test_item_small_vocab_padding_dropped(tmp_path):
    d = make_model(tmp_path / "tiny", V=5, D=3, table_k=10)
    m = load_model(d)
    assert (m.neighbors[:, 4:] == -1).all()
    with running(make_server(d, threads=1)) as s:
        for k in (3, 10, 50):   # table path (k <= 10) and exact path
            status, _, body = call(s.port, "GET", f"/api/v1/recommendations/{int(m.aids[2])}?k={k}")
            assert status == 200 and len(body) == min(k, 4) and int(m.aids[2]) not in body


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=st.integers(0, 299), k=st.integers(1, 100))
def test_item_property_sorted_excludes_self(srv, model, row, k):
    aid = int(model.aids[row])
    status, _, body = call(srv.port, "GET", f"/api/v1/recommendations/{aid}?k={k}&scores=true")
    body = body["items"]
    assert status == 200 and len(body) == k
    scores = [x["score"] for x in body]
    assert scores == sorted(scores, reverse=True)
    assert aid not in {x["aid"] for x in body} and len({x["aid"] for x in body}) == k


# --- session recommendations -----------------------------------------------------------------------

def _session_ref(model, aids, types, k):
    row_of = {int(a): i for i, a in enumerate(model.aids)}
    rows = [row_of.get(a, -1) for a in aids]
    q = session_query(model.vectors, rows, types)
    ref_rows, ref_s = ref_topk(model.vectors, q, k)   # the session's own aids are not excluded
    return model.aids[ref_rows].tolist(), ref_s.tolist()


def test_session_aids_equals_reference(srv, model):
    aids = [int(model.aids[r]) for r in (10, 20, 30, 20)]   # a repeated aid counts twice
    status, h, body = call(srv.port, "POST", "/api/v1/recommendations", {"aids": aids, "k": 15, "scores": True})
    assert status == 200
    got = [x["aid"] for x in body["items"]]
    ref_a, ref_s = _session_ref(model, aids, [0] * 4, 15)
    assert_ranking(got, [x["score"] for x in body["items"]], ref_a, ref_s)
    assert set(got) & set(aids) and body["unknown"] == [] and body["used_events"] == 4


def test_session_events_types_and_unknown(srv, model):
    unknown = int(model.aids.max()) + 7
    events = [{"aid": int(model.aids[1]), "type": "clicks"}, {"aid": unknown, "type": "orders"},
              {"aid": int(model.aids[2]), "type": "carts"}, {"aid": int(model.aids[3]), "type": 2, "ts": 5}]
    status, h, body = call(srv.port, "POST", "/api/v1/recommendations", {"events": events, "scores": True})
    assert status == 200 and body["unknown"] == [unknown] and body["used_events"] == 3
    ref_a, ref_s = _session_ref(model, [e["aid"] for e in events], [0, 2, 1, 2], 10)
    assert_ranking([x["aid"] for x in body["items"]], [x["score"] for x in body["items"]], ref_a, ref_s)
    status, h, plain = call(srv.port, "POST", "/api/v1/recommendations", {"events": events})
    assert status == 200 and plain == [x["aid"] for x in body["items"]]
    assert h["x-unknown-aids"] == str(unknown)


def test_session_weights_matter(srv, model):
    a, b = int(model.aids[11]), int(model.aids[12])
    s1 = call(srv.port, "POST", "/api/v1/recommendations", {"events": [{"aid": a, "type": "orders"}, {"aid": b}], "k": 20})[2]
    s2 = call(srv.port, "POST", "/api/v1/recommendations", {"events": [{"aid": a}, {"aid": b, "type": "orders"}], "k": 20})[2]
    assert s1 != s2
    assert s1 == _session_ref(model, [a, b], [2, 0], 20)[0]


def test_session_errors(srv, model):
    p = "/api/v1/recommendations"
    unknown = int(model.aids.max()) + 1
    status, h, body = call(srv.port, "POST", p, {"aids": [unknown, unknown + 1]})
    _check_problem(status, h, body, 404)
    for bad in [{"aids": []}, {"aids": [1], "events": [{"aid": 1}]}, {}, {"aids": ["1"]}, {"aids": [True]},
                {"aids": [-3]}, {"aids": [1], "k": 0}, {"aids": [1], "k": "5"}, {"aids": [1], "extra": 1},
                {"events": [{"aid": 1, "type": "view"}]}, {"events": [5]}, {"events": [{"type": "clicks"}]},
                {"aids": 5}, [1, 2], {"aids": [1], "scores": "x"}]:
        _check_problem(*call(srv.port, "POST", p, bad), 400)
    for raw_body in [b"{not json", b"", b"\xff\xfe", b"[" * 100000]:
        _check_problem(*call(srv.port, "POST", p, raw_body, {"Content-Type": "application/json"}), 400)
    too_long = {"aids": [int(model.aids[0])] * 501}
    status, h, body = call(srv.port, "POST", p, too_long)
    _check_problem(status, h, body, 413)
    assert "500" in body["detail"]
    status, _, _ = call(srv.port, "POST", p, {"aids": [int(model.aids[0])] * 500})
    assert status == 200


# --- probes, metrics, openapi, methods -------------------------------------------------------------

def test_health_ready_openapi(srv, model_dir):
    assert call(srv.port, "GET", "/healthz")[:1] == (200,)
    status, _, body = call(srv.port, "GET", "/readyz")
    assert status == 200 and body["vocab_size"] == 300 and body["vector_size"] == 16
    status, h, doc = call(srv.port, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {"/api/v1/popular", "/api/v1/recommendations/{aid}", "/api/v1/recommendations",
                                 "/healthz", "/readyz", "/metrics", "/openapi.json",
                                 "/", "/static/explorer.js", "/static/explorer.css"}
    assert "aids of the session included" in doc["paths"]["/api/v1/recommendations"]["post"]["description"]


def test_readyz_without_model_then_reload(model_dir):
    server = make_server(None, threads=1)
    with running(server):
        _check_problem(*call(server.port, "GET", "/readyz"), 503)
        status, h, body = call(server.port, "GET", "/api/v1/popular")
        _check_problem(status, h, body, 503)
        assert h["retry-after"] == "1"
        assert server.reload(model_dir)
        assert call(server.port, "GET", "/readyz")[0] == 200
        assert not server.reload(model_dir.parent / "missing")   # failed reload keeps the model
        assert call(server.port, "GET", "/readyz")[0] == 200


def test_metrics(srv, model):
    call(srv.port, "GET", f"/api/v1/recommendations/{int(model.aids[0])}")
    call(srv.port, "GET", "/no/such/route")
    status, h, text = call(srv.port, "GET", "/metrics")
    assert status == 200 and h["content-type"].startswith("text/plain; version=0.0.4")
    text = text.decode()
    assert 'otto_http_requests_total{route="/api/v1/recommendations/{aid}",method="GET",status="200"}' in text
    assert 'route="(unmatched)",method="GET",status="404"' in text
    assert 'otto_http_request_duration_seconds_bucket{route="/api/v1/recommendations/{aid}",le="+Inf"}' in text
    assert "otto_model_info{" in text and 'vocab_size="300"' in text and 'vector_size="16"' in text
    assert str(int(model.aids[0])) not in text.replace('"300"', "")   # no per-aid labels
    for line in text.splitlines():   # exposition format: comments or 'name{labels} value'
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2 and float(line.rsplit(" ", 1)[1]) >= 0


def test_methods_and_unknown_routes(srv):
    status, h, body = call(srv.port, "POST", "/api/v1/popular", b"{}")
    _check_problem(status, h, body, 405)
    assert h["allow"] == "GET, HEAD, OPTIONS"
    status, h, body = call(srv.port, "GET", "/api/v1/recommendations")
    _check_problem(status, h, body, 405)
    assert h["allow"] == "OPTIONS, POST"
    for path in ["/index.html", "/static/", "/static/other.js", "/api/v1/recommendations/", "/api/v1/recommendations/1/2",
                 "/API/v1/popular", "/api/v1/popular%2F"]:
        _check_problem(*call(srv.port, "GET", path), 404)
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    c.request("HEAD", "/api/v1/popular")
    r = c.getresponse()
    assert r.status == 200 and int(r.getheader("Content-Length")) > 2 and r.read() == b""
    c.close()


def test_keep_alive_many_requests_one_connection(srv, model):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        call(srv.port, "GET", "/healthz", conn=c)
        sock = c.sock
        for i in range(30):
            aid = int(model.aids[i])
            status, h, body = call(srv.port, "GET", f"/api/v1/recommendations/{aid}?k=3", conn=c)
            assert status == 200 and body == model.aids[model.neighbors[i, :3]].tolist()
            assert "connection" not in h
            status, _, _ = call(srv.port, "GET", "/nope", conn=c)   # errors keep the connection too
            assert status == 404
        assert c.sock is sock
    finally:
        c.close()


def test_openapi_is_json_serialisable_for_any_config():
    from serve.openapi import openapi_document
    json.dumps(openapi_document(7, (1.0, 2.0, 3.0), 0.5))


# --- request rules: queries, paths, bodies, OPTIONS (the module rules of serve.app) -------------------

def test_empty_query_segments_are_ignored(srv, model):
    plain = call(srv.port, "GET", "/api/v1/popular?k=5")[2]
    for q in ["k=5&", "&k=5", "&&k=5&&", "k=%35"]:   # and the query is percent-decoded
        status, _, body = call(srv.port, "GET", f"/api/v1/popular?{q}")
        assert status == 200 and body == plain == model.popular[2, :5].tolist(), q
    assert call(srv.port, "GET", "/api/v1/popular?")[2] == model.popular[2, :10].tolist()


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/static/explorer.js"])
def test_operational_routes_ignore_the_query(srv, path):
    base = call(srv.port, "GET", path)
    for q in ["x=1", "probe", "x=1&x=2", "%ff=%fe", "&&"]:
        status, _, body = call(srv.port, "GET", f"{path}?{q}")
        assert status == base[0] == 200, (path, q)
        if path not in ("/metrics", "/readyz"):   # these two change with every request / carry the pid
            assert body == base[2]


def test_data_routes_reject_unknown_parameters(srv, model):
    aid = int(model.aids[0])
    for path in ["/api/v1/popular?x=1", f"/api/v1/recommendations/{aid}?k=3&limit=2", "/api/v1/popular?=3"]:
        status, h, body = call(srv.port, "GET", path)
        _check_problem(status, h, body, 400)
        assert "not accepted here" in body["detail"] and "accepted:" in body["detail"]
    status, h, body = call(srv.port, "POST", "/api/v1/recommendations?k=5", {"aids": [aid]})
    _check_problem(status, h, body, 400)
    assert "'k'" in body["detail"] and "none" in body["detail"]


def test_bare_scores_flag_means_true(srv, model):
    aid = int(model.aids[4])
    want = call(srv.port, "GET", f"/api/v1/recommendations/{aid}?scores=true&k=4")[2]
    assert isinstance(want, dict) and len(want["items"]) == 4
    for q in ["scores&k=4", "k=4&scores", "k=4&scores&"]:
        assert call(srv.port, "GET", f"/api/v1/recommendations/{aid}?{q}")[2] == want, q
    assert isinstance(call(srv.port, "GET", f"/api/v1/recommendations/{aid}?scores=false&k=4")[2], list)
    _check_problem(*call(srv.port, "GET", f"/api/v1/recommendations/{aid}?scores="), 400)   # '=' with no value
    _check_problem(*call(srv.port, "GET", f"/api/v1/recommendations/{aid}?k"), 400)         # k is no flag


def test_percent_encoded_path_decoded_like_the_query(srv, model):
    aid = int(model.aids[9])
    plain = call(srv.port, "GET", f"/api/v1/recommendations/{aid}?k=3")
    assert plain[0] == 200
    every_digit = "".join(f"%{ord(c):02X}" for c in str(aid))
    for path in [f"/api/v1/recommendations/{every_digit}?k=3", f"/api/v1/recommendations/%3{str(aid)[0]}{str(aid)[1:]}?k=%33",
                 f"/%61pi/v1/recommendations/{aid}?k=3"]:
        status, _, body = call(srv.port, "GET", path)
        assert status == 200 and body == plain[2], path
    assert call(srv.port, "GET", "/api/v1/%70opular")[2] == model.popular[2, :10].tolist()
    status, _, text = call(srv.port, "GET", "/metrics")
    assert 'route="/api/v1/recommendations/{aid}",method="GET",status="200"' in text.decode()


def test_scores_shape_is_the_same_on_get_and_post(srv, model):
    aid = int(model.aids[6])
    get = call(srv.port, "GET", f"/api/v1/recommendations/{aid}?k=5&scores=true")[2]
    post = call(srv.port, "POST", "/api/v1/recommendations", {"aids": [aid], "k": 5, "scores": True})[2]
    for body in (get, post):
        assert isinstance(body, dict) and isinstance(body["items"], list) and len(body["items"]) == 5
        assert all(set(x) == {"aid", "score"} and isinstance(x["aid"], int) for x in body["items"])
    assert set(post) == {"items", "unknown", "used_events"} and set(get) == {"items"}
    # one known aid: the session query is that aid's unit vector, so the session answer is the aid
    # itself (not excluded) followed by its neighbours
    assert [x["aid"] for x in post["items"]] == [aid] + [x["aid"] for x in get["items"]][:4]


def test_post_content_type_is_checked(srv, model):
    p, body = "/api/v1/recommendations", json.dumps({"aids": [int(model.aids[0])], "k": 2}).encode()
    for ctype in [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"]:
        status, h, problem = call(srv.port, "POST", p, body, {} if ctype is None else {"Content-Type": ctype})
        _check_problem(status, h, problem, 415)
        assert h["accept-post"] == "application/json" and "Content-Type" in problem["detail"]
    for ctype in ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON;charset=\"UTF-8\""]:
        status, _, got = call(srv.port, "POST", p, body, {"Content-Type": ctype})
        assert status == 200 and len(got) == 2, ctype


def test_options(srv):
    st_, h, body = parse_raw(raw(srv.port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert st_ == 200 and h["allow"] == "GET, HEAD, OPTIONS, POST" and body == b"" and h["content-length"] == "0"
    for path, allow in [("/api/v1/popular", "GET, HEAD, OPTIONS"), ("/api/v1/recommendations", "OPTIONS, POST"),
                        ("/api/v1/recommendations/5", "GET, HEAD, OPTIONS"), ("/", "GET, HEAD, OPTIONS")]:
        status, h, body = call(srv.port, "OPTIONS", path)
        assert status == 200 and h["allow"] == allow and body == b"", path
    _check_problem(*call(srv.port, "OPTIONS", "/nope"), 404)
    st_, _, _ = parse_raw(raw(srv.port, b"GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert st_ == 400


def test_every_json_body_is_compact(srv, model):
    """One JSON style everywhere (/readyz included): no spaces after ',' and ':'."""
    aid = int(model.aids[2])
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        for method, path, body in [("GET", "/healthz", None), ("GET", "/readyz", None), ("GET", "/openapi.json", None),
                                   ("GET", "/api/v1/popular", None), ("GET", f"/api/v1/recommendations/{aid}?scores", None),
                                   ("GET", "/api/v1/recommendations/x", None),
                                   ("POST", "/api/v1/recommendations", b'{"aids": [%d], "scores": true}' % aid)]:
            c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            r = c.getresponse()
            raw_body = r.read()
            assert raw_body == json.dumps(json.loads(raw_body), separators=(",", ":")).encode(), path
    finally:
        c.close()


def test_openapi_version_is_the_package_version(srv):
    import tomllib
    from pathlib import Path
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert call(srv.port, "GET", "/openapi.json")[2]["info"]["version"] == pyproject["project"]["version"]


def test_integer_valued_json_numbers_are_integers(srv, model):
    p = "/api/v1/recommendations"
    aid = int(model.aids[8])
    want = call(srv.port, "POST", p, {"aids": [aid], "k": 19})[2]
    assert len(want) == 19
    for raw_body in [b'{"aids": [%d], "k": 19.0}' % aid, b'{"aids": [%d.0], "k": 1.9e1}' % aid,
                     b'{"aids": [%de0], "k": 190E-1}' % aid,
                     b'{"events": [{"aid": %d.00, "type": 0.0, "ts": 1659304800025.0}], "k": 19}' % aid]:
        status, _, body = call(srv.port, "POST", p, raw_body, {"Content-Type": "application/json"})
        assert status == 200 and body == want, raw_body
    for raw_body in [b'{"aids": [%d], "k": 19.5}' % aid, b'{"aids": [%d.5]}' % aid, b'{"aids": [%d], "k": NaN}' % aid,
                     b'{"aids": [9223372036854775808.0]}', b'{"aids": [1e400]}', b'{"events": [{"aid": 1, "type": 1.5}]}',
                     b'{"events": [{"aid": 1, "ts": "x"}]}', b'{"events": [{"aid": 1, "ts": 1.5}]}',
                     b'{"aids": [%d], "k": "19"}' % aid, b'{"aids": [%d], "k": null}' % aid]:
        _check_problem(*call(srv.port, "POST", p, raw_body, {"Content-Type": "application/json"}), 400)


def test_readme_lists_every_error_status():
    """The README's error list names every status the OpenAPI document declares."""
    from pathlib import Path

    from serve.openapi import openapi_document
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## HTTP API", 1)[1].split("\n## ", 1)[0]
    declared = {s for item in openapi_document()["paths"].values() for op in item.values() for s in op["responses"]}
    assert {"400", "404", "413", "415", "501", "503"} <= declared
    missing = sorted(s for s in declared | {"405"} if s != "200" and not re.search(rf"\b{s}\b", section))
    assert missing == []
