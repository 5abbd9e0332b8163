"""Routes, parameter validation and JSON bodies: the part of the service that knows no sockets.

:func:`route` maps ``(method, path)`` to a handler ``(server, request, params) -> Response``; the
server's one dispatch point (:meth:`serve.server.Handler.dispatch`) calls it. A handler either
returns a response or raises :class:`~serve.problems.HTTPProblem`, which the server turns into a
problem+json answer. Validation is strict and every message names the offending parameter.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from data_prep.dataset import TYPE_NAMES

from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .problems import HTTPProblem
from .recommend import UnknownAid

JSON = "application/json"
MAX_K = 100
DEFAULT_K = 10
MAX_AID = 2**63 - 1

ROUTE_POPULAR = "/api/v1/popular"
ROUTE_RECS = "/api/v1/recommendations"
ROUTE_REC_ITEM = "/api/v1/recommendations/{aid}"
ROUTE_UNKNOWN = "(unmatched)"


@dataclass
class Request:
    """One parsed HTTP request. ``headers`` keys are lower-case; ``body`` is the raw body."""

    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    path: str = ""
    query: str = ""

    def __post_init__(self):
        path, _, query = self.target.partition("?")
        self.path, self.query = path, query


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


# --- parameters ------------------------------------------------------------------------------

def parse_query(query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """``k=5&scores=true`` -> dict. Unknown or repeated parameters are a 400 naming them."""
    if not query:
        return {}
    out: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, errors="strict", max_num_fields=16)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPProblem(400, "bad-parameter", f"query string: not valid ({exc})") from None
    for name, value in pairs:
        if name not in allowed:
            raise HTTPProblem(400, "bad-parameter", f"query parameter {name!r} is not accepted here "
                              f"(accepted: {', '.join(allowed) or 'none'})")
        if name in out:
            raise HTTPProblem(400, "bad-parameter", f"query parameter {name!r} is given more than once")
        out[name] = value
    return out


def parse_k(value, where: str = "query parameter 'k'") -> int:
    """An integer 1..MAX_K (``str`` from a query, or a JSON number that is an integer)."""
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > 4:
            raise HTTPProblem(400, "bad-parameter", f"{where}: expected an integer 1..{MAX_K}, got {value!r}")
        value = int(value)
    elif isinstance(value, bool) or not isinstance(value, int):
        raise HTTPProblem(400, "bad-parameter", f"{where}: expected an integer 1..{MAX_K}, got {json.dumps(value)}")
    if not 1 <= value <= MAX_K:
        raise HTTPProblem(400, "bad-parameter", f"{where}: expected an integer 1..{MAX_K}, got {value}")
    return value


def parse_bool(value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no"):
        return False
    raise HTTPProblem(400, "bad-parameter", f"{where}: expected true or false, got {json.dumps(value)}")


def parse_aid_segment(segment: str) -> int:
    if not (segment.isascii() and segment.isdigit()) or len(segment) > 19 or int(segment) > MAX_AID:
        raise HTTPProblem(400, "bad-aid", f"path segment {segment[:40]!r}: an aid is a non-negative integer below 2^63")
    return int(segment)


def _json_aid(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AID:
        raise HTTPProblem(400, "bad-aid", f"{where}: an aid is a non-negative integer below 2^63, got {json.dumps(value)[:40]}")
    return value


# --- bodies ----------------------------------------------------------------------------------

def aid_list(aids: list[int]) -> bytes:
    return ("[" + ",".join(map(str, aids)) + "]").encode()


def _score(s: float):
    return round(s, 6) if math.isfinite(s) else None


def scored_list(aids: list[int], scores: list[float], **extra) -> bytes:
    items = [{"aid": a, "score": _score(s)} for a, s in zip(aids, scores)]
    if extra:
        return json.dumps({"items": items, **extra}, separators=(",", ":")).encode()
    return json.dumps(items, separators=(",", ":")).encode()


# --- handlers --------------------------------------------------------------------------------

def _recommender(server):
    rec = server.recommender
    if rec is None:
        raise HTTPProblem(503, "not-ready", "no model is loaded yet", headers={"Retry-After": "1"})
    return rec


def get_popular(server, req: Request, params: dict) -> Response:
    q = parse_query(req.query, ("k", "type"))
    k = parse_k(q["k"]) if "k" in q else DEFAULT_K
    tname = q.get("type", "orders")
    if tname not in TYPE_NAMES:
        raise HTTPProblem(400, "bad-parameter", f"query parameter 'type': expected one of {', '.join(TYPE_NAMES)}, got {tname!r}")
    rec = _recommender(server)
    if not rec.has_popular:
        raise HTTPProblem(404, "no-popularity-table", f"the loaded model has no popularity table (popular.npy); "
                          f"rebuild it with the trainer to serve {ROUTE_POPULAR}")
    aids, _ = rec.popular(TYPE_NAMES.index(tname), k)
    return Response(200, aid_list(aids))


def get_item_recs(server, req: Request, params: dict) -> Response:
    aid = parse_aid_segment(params["aid"])
    q = parse_query(req.query, ("k", "scores"))
    k = parse_k(q["k"]) if "k" in q else DEFAULT_K
    scores = parse_bool(q["scores"], "query parameter 'scores'") if "scores" in q else False
    rec = _recommender(server)
    try:
        aids, sc = rec.similar(aid, k)
    except KeyError:
        raise HTTPProblem(404, "unknown-aid", f"aid {aid} is not in the model's vocabulary") from None
    return Response(200, scored_list(aids, sc) if scores else aid_list(aids))


def _parse_session(server, body: bytes) -> tuple[list[int], list[int], int, bool]:
    if not body:
        raise HTTPProblem(400, "bad-json", "request body: expected a JSON object like {\"aids\": [1, 2]}, got an empty body")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise HTTPProblem(400, "bad-json", f"request body: not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(obj, dict):
        raise HTTPProblem(400, "bad-json", "request body: expected a JSON object with 'aids' or 'events'")
    allowed = {"aids", "events", "k", "scores"}
    extra = sorted(set(obj) - allowed)
    if extra:
        raise HTTPProblem(400, "bad-parameter", f"request body: unknown field(s) {', '.join(map(repr, extra))} "
                          f"(accepted: aids, events, k, scores)")
    if ("aids" in obj) == ("events" in obj):
        raise HTTPProblem(400, "bad-parameter", "request body: give exactly one of 'aids' or 'events'")
    if "k" in obj and isinstance(obj["k"], str):
        raise HTTPProblem(400, "bad-parameter", f"field 'k': expected an integer 1..{MAX_K}, got a string")
    if "scores" in obj and not isinstance(obj["scores"], bool):
        raise HTTPProblem(400, "bad-parameter", f"field 'scores': expected true or false, got {json.dumps(obj['scores'])[:40]}")
    k = parse_k(obj["k"], "field 'k'") if "k" in obj else DEFAULT_K
    scores = obj.get("scores", False)
    limit = server.config.max_session_events
    seq = obj.get("aids", obj.get("events"))
    name = "aids" if "aids" in obj else "events"
    if not isinstance(seq, list) or not seq:
        raise HTTPProblem(400, "bad-parameter", f"field '{name}': expected a non-empty array")
    if len(seq) > limit:
        raise HTTPProblem(413, "session-too-long", f"field '{name}': {len(seq)} events exceed the limit of {limit} per session")
    if name == "aids":
        aids = [_json_aid(a, f"aids[{i}]") for i, a in enumerate(seq)]
        types = [0] * len(aids)
    else:
        aids, types = [], []
        for i, ev in enumerate(seq):
            if not isinstance(ev, dict) or "aid" not in ev:
                raise HTTPProblem(400, "bad-parameter", f"events[{i}]: expected an object with 'aid' and optional 'type'")
            bad = sorted(set(ev) - {"aid", "type", "ts"})
            if bad:
                raise HTTPProblem(400, "bad-parameter", f"events[{i}]: unknown field(s) {', '.join(map(repr, bad))}")
            aids.append(_json_aid(ev["aid"], f"events[{i}].aid"))
            t = ev.get("type", "clicks")
            if isinstance(t, str) and t in TYPE_NAMES:
                types.append(TYPE_NAMES.index(t))
            elif isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= 2:
                types.append(t)
            else:
                raise HTTPProblem(400, "bad-parameter", f"events[{i}].type: expected one of "
                                  f"{', '.join(TYPE_NAMES)} (or 0, 1, 2), got {json.dumps(t)[:40]}")
    return aids, types, k, scores


def post_session_recs(server, req: Request, params: dict) -> Response:
    parse_query(req.query, ())
    aids, types, k, scores = _parse_session(server, req.body)
    rec = _recommender(server)
    try:
        res = rec.session(aids, types, k)
    except UnknownAid as exc:
        raise HTTPProblem(404, "unknown-aid", str(exc), extra={"unknown": sorted(set(aids))[:100]}) from None
    headers = {}
    if res.unknown:
        uniq = list(dict.fromkeys(res.unknown))
        headers["X-Unknown-Aids"] = ",".join(map(str, uniq[:50])) + (",..." if len(uniq) > 50 else "")
    if scores:
        body = scored_list(res.aids, res.scores, unknown=list(dict.fromkeys(res.unknown)), used_events=res.used)
    else:
        body = aid_list(res.aids)
    return Response(200, body, headers=headers)


def get_healthz(server, req: Request, params: dict) -> Response:
    parse_query(req.query, ())
    return Response(200, b'{"status":"ok"}')


def get_readyz(server, req: Request, params: dict) -> Response:
    parse_query(req.query, ())
    rec = server.recommender
    if rec is None or server.draining:
        why = "draining" if server.draining else "no model loaded"
        raise HTTPProblem(503, "not-ready", f"not ready: {why}", headers={"Retry-After": "1"})
    return Response(200, json.dumps({"status": "ready", "model": rec.path, "vocab_size": rec.vocab_size,
                                     "vector_size": rec.vector_size, "neighbor_table_k": rec.table_k,
                                     "pid": os.getpid()}).encode())


def get_metrics(server, req: Request, params: dict) -> Response:
    parse_query(req.query, ())
    return Response(200, server.metrics_text(), METRICS_CONTENT_TYPE)


def get_openapi(server, req: Request, params: dict) -> Response:
    from .openapi import openapi_bytes   # openapi imports this module's constants
    parse_query(req.query, ())
    return Response(200, openapi_bytes(server.config))


# path -> {method: handler}; one dynamic route below.
STATIC_ROUTES = {
    ROUTE_POPULAR: {"GET": get_popular},
    ROUTE_RECS: {"POST": post_session_recs},
    "/healthz": {"GET": get_healthz},
    "/readyz": {"GET": get_readyz},
    "/metrics": {"GET": get_metrics},
    "/openapi.json": {"GET": get_openapi},
}
ITEM_PREFIX = ROUTE_RECS + "/"
ITEM_METHODS = {"GET": get_item_recs}


def route(method: str, path: str):
    """``(template, handler, params)`` for a request; HEAD is served by the GET handler.

    Raises a 404 problem for an unknown path and a 405 problem (with ``Allow``) for a known path
    and a method it does not take; the problem carries the route template in ``route``.
    """
    methods = STATIC_ROUTES.get(path)
    template, params = path, {}
    if methods is None:
        if path.startswith(ITEM_PREFIX) and len(path) > len(ITEM_PREFIX) and "/" not in path[len(ITEM_PREFIX):]:
            methods, template, params = ITEM_METHODS, ROUTE_REC_ITEM, {"aid": path[len(ITEM_PREFIX):]}
        else:
            exc = HTTPProblem(404, "unknown-route", f"no route {path[:200]!r} (see /openapi.json)")
            exc.route = ROUTE_UNKNOWN
            raise exc
    handler = methods.get("GET" if method == "HEAD" and "GET" in methods else method)
    if handler is None:
        allow = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
        exc = HTTPProblem(405, "method-not-allowed", f"{method[:20]} is not allowed on {template} (allowed: {', '.join(allow)})",
                          headers={"Allow": ", ".join(allow)})
        exc.route = template
        raise exc
    return template, handler, params
