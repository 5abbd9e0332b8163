"""Routes, parameter validation and JSON bodies: the part of the service that knows no sockets.

:func:`route` maps ``(method, path)`` to a handler ``(server, request, params) -> Response``; the
server's one dispatch point (:meth:`serve.server.Connection.dispatch`) calls it. A handler either
returns a response or raises :class:`~serve.problems.HTTPProblem`, which the server turns into a
problem+json answer. Validation is strict and every message names the offending parameter.

Request rules, the same on every route:

* **Paths** are percent-decoded segment by segment (UTF-8, like the query), so ``/api/v1/recommendations/%31``
  is aid 1; an encoded ``/`` (``%2F``) stays inside its segment.
* **Query strings.** Empty segments are ignored (``?k=5&`` is ``?k=5``). A parameter given without
  ``=`` is a flag: a bare ``?scores`` means ``scores=true``. The data routes (``/api/v1/...``)
  reject unknown or repeated parameters with a 400 that names them, so a typo is never silently
  ignored; the operational routes that take no parameters (``/``, static files, ``/healthz``,
  ``/readyz``, ``/metrics``, ``/openapi.json``) ignore the query string entirely, so cache busters
  and probe tags work.
* **JSON numbers.** Where the document says integer, any integer-valued JSON number is accepted
  (``19``, ``19.0``, ``1.9e1``), exactly as JSON Schema defines it; ``19.5``, strings and booleans
  are 400. Request bodies must be ``Content-Type: application/json`` (``charset=utf-8`` allowed),
  otherwise 415.
* **OPTIONS** on any route (and ``OPTIONS *``) answers 200 with ``Allow``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib import resources
from urllib.parse import unquote, unquote_plus

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
ROUTE_SERVER = "*"                       # OPTIONS *
MAX_QUERY_PARAMS = 16


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

def parse_query(query: str, allowed: tuple[str, ...]) -> dict[str, str | None]:
    """``k=5&scores`` -> ``{"k": "5", "scores": None}`` (``None``: given without ``=``, a flag).

    Empty segments are skipped; names and values are percent-decoded (``+`` is a space) as UTF-8.
    Unknown or repeated parameters are a 400 naming them.
    """
    segments = [s for s in query.split("&") if s]
    if len(segments) > MAX_QUERY_PARAMS:
        raise HTTPProblem(400, "bad-parameter", f"query string: more than {MAX_QUERY_PARAMS} parameters")
    out: dict[str, str | None] = {}
    for seg in segments:
        raw_name, eq, raw_value = seg.partition("=")
        try:
            name = unquote_plus(raw_name, errors="strict")
            value = unquote_plus(raw_value, errors="strict") if eq else None
        except UnicodeDecodeError:
            raise HTTPProblem(400, "bad-parameter", f"query string: {seg[:40]!r} is not percent-encoded UTF-8") from None
        if name not in allowed:
            raise HTTPProblem(400, "bad-parameter", f"query parameter {name[:40]!r} is not accepted here "
                              f"(accepted: {', '.join(allowed) or 'none'})")
        if name in out:
            raise HTTPProblem(400, "bad-parameter", f"query parameter {name!r} is given more than once")
        out[name] = value
    return out


def json_int(value, lo: int, hi: int) -> int | None:
    """``value`` as an int if it is an integer-valued JSON number in ``lo..hi``, else ``None``.

    JSON Schema's ``integer`` is a number with no fractional part, so ``19.0`` and ``1.9e1`` are 19.
    Non-integer literals arrive as :class:`~decimal.Decimal` (see :func:`load_json`), so the test
    is exact (no float rounding of large aids); the range is checked before converting.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if lo <= value <= hi else None
    if isinstance(value, Decimal) and value.is_finite() and lo <= value <= hi and value == value.to_integral_value():
        return int(value)
    return None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def load_json(body: bytes):
    """Parse a UTF-8 JSON body: fractions/exponents as Decimal, NaN/Infinity rejected (400 on failure)."""
    try:
        return json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise HTTPProblem(400, "bad-json", f"request body: not valid JSON ({str(exc)[:120]})") from None


def _show(value) -> str:
    """A request value for an error message (JSON, at most 40 characters)."""
    if isinstance(value, Decimal):
        return str(value)[:40]
    try:
        return json.dumps(value)[:40]
    except (TypeError, ValueError):
        return repr(value)[:40]


def parse_k(value, where: str = "query parameter 'k'") -> int:
    """An integer 1..MAX_K: a query value of decimal digits, or an integer-valued JSON number."""
    if value is None:
        raise HTTPProblem(400, "bad-parameter", f"{where}: expected an integer 1..{MAX_K}, got no value")
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > 4:
            raise HTTPProblem(400, "bad-parameter", f"{where}: expected an integer 1..{MAX_K}, got {value[:40]!r}")
        value = int(value)
    k = json_int(value, 1, MAX_K)
    if k is None:
        raise HTTPProblem(400, "bad-parameter", f"{where}: expected an integer 1..{MAX_K}, got {_show(value)}")
    return k


def parse_bool(value, where: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no) from a query; a bare flag (``None``) is true."""
    if value is None or isinstance(value, bool):
        return value is None or value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no"):
        return False
    raise HTTPProblem(400, "bad-parameter", f"{where}: expected true or false, got {_show(value)}")


def parse_aid_segment(segment: str) -> int:
    """A decoded path segment of decimal digits below 2^63."""
    if not (segment.isascii() and segment.isdigit()) or len(segment) > 19 or int(segment) > MAX_AID:
        raise HTTPProblem(400, "bad-aid", f"path segment {segment[:40]!r}: an aid is a non-negative integer below 2^63")
    return int(segment)


def _json_aid(value, where: str) -> int:
    aid = json_int(value, 0, MAX_AID)
    if aid is None:
        raise HTTPProblem(400, "bad-aid", f"{where}: an aid is a non-negative integer below 2^63, got {_show(value)}")
    return aid


def require_json_body(req: Request) -> None:
    """415 unless ``Content-Type`` is ``application/json`` (the only parameter allowed: ``charset=utf-8``)."""
    ctype = req.headers.get("content-type")
    accept = {"Accept-Post": JSON}
    if ctype is None:
        raise HTTPProblem(415, "unsupported-media-type", "Content-Type: missing; send application/json", headers=accept)
    media, *params = ctype.split(";")
    if media.strip().lower() != JSON:
        raise HTTPProblem(415, "unsupported-media-type", f"Content-Type: {ctype[:60]!r} is not supported; "
                          "send application/json", headers=accept)
    for p in params:
        name, _, value = p.partition("=")
        if not p.strip():
            continue
        if name.strip().lower() != "charset" or value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise HTTPProblem(415, "unsupported-media-type", f"Content-Type: parameter {p.strip()[:40]!r} is not "
                              "supported (JSON is UTF-8; only charset=utf-8 is allowed)", headers=accept)


# --- bodies ----------------------------------------------------------------------------------

def json_body(obj) -> bytes:
    """Every JSON body of the service: compact separators, ASCII."""
    return json.dumps(obj, separators=(",", ":")).encode()


def aid_list(aids: list[int]) -> bytes:
    """``[1,2,3]``: a list of Python ints as compact JSON (``str`` of such a list differs only by
    the spaces after its commas)."""
    return str(aids).replace(" ", "").encode()


def _score(s: float):
    return round(s, 6) if math.isfinite(s) else None


def scored_items(aids: list[int], scores: list[float], **extra) -> bytes:
    """``{"items": [{"aid", "score"}, ...], **extra}``: the ``scores=true`` shape of GET and POST alike."""
    return json_body({"items": [{"aid": a, "score": _score(s)} for a, s in zip(aids, scores)], **extra})


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
        raise HTTPProblem(400, "bad-parameter", f"query parameter 'type': expected one of {', '.join(TYPE_NAMES)}, "
                          f"got {'no value' if tname is None else repr(tname[:40])}")
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
        aids, sc = rec.similar(aid, k, scores=scores)
    except KeyError:
        raise HTTPProblem(404, "unknown-aid", f"aid {aid} is not in the model's vocabulary") from None
    return Response(200, scored_items(aids, sc) if scores else aid_list(aids))


def is_long(server, req: Request) -> bool:
    """Whether answering ``req`` scans the vectors with a Numba kernel (milliseconds, with the
    interpreter lock released) rather than running Python around a few table rows: a session
    (POST ROUTE_RECS), or an item request whose ``k`` the neighbour table cannot answer (or a model
    without a table). A request that does not parse counts as short: its answer is a problem. The
    server answers long requests on their own workers (``ServerConfig.long_threads``); the choice
    changes where a request waits, never its answer (``Server.is_long`` calls it)."""
    rec, path = server.recommender, req.path
    if rec is None:
        return False
    if req.method == "POST":
        return path == ROUTE_RECS
    if req.method not in ("GET", "HEAD") or not path.startswith(ROUTE_RECS + "/"):
        return False
    try:
        q = parse_query(req.query, ("k", "scores"))
        k = parse_k(q["k"]) if "k" in q else DEFAULT_K
    except HTTPProblem:
        return False
    return rec.similar_scans(k)


SESSION_FIELDS = ("aids", "events", "k", "scores")
EVENT_FIELDS = ("aid", "type", "ts")
TS_RANGE = (-2**63, 2**63 - 1)


def _event_type(t, where: str) -> int:
    if isinstance(t, str) and t in TYPE_NAMES:
        return TYPE_NAMES.index(t)
    code = None if isinstance(t, str) else json_int(t, 0, len(TYPE_NAMES) - 1)
    if code is None:
        raise HTTPProblem(400, "bad-parameter", f"{where}: expected one of {', '.join(TYPE_NAMES)} "
                          f"(or 0, 1, 2), got {_show(t)}")
    return code


def _parse_session(server, body: bytes) -> tuple[list[int], list[int], int, bool]:
    if not body:
        raise HTTPProblem(400, "bad-json", "request body: expected a JSON object like {\"aids\": [1, 2]}, got an empty body")
    obj = load_json(body)
    if not isinstance(obj, dict):
        raise HTTPProblem(400, "bad-json", "request body: expected a JSON object with 'aids' or 'events'")
    extra = sorted(set(obj) - set(SESSION_FIELDS))
    if extra:
        raise HTTPProblem(400, "bad-parameter", f"request body: unknown field(s) {', '.join(repr(e[:40]) for e in extra[:5])} "
                          f"(accepted: {', '.join(SESSION_FIELDS)})")
    if ("aids" in obj) == ("events" in obj):
        raise HTTPProblem(400, "bad-parameter", "request body: give exactly one of 'aids' or 'events'")
    if "scores" in obj and not isinstance(obj["scores"], bool):
        raise HTTPProblem(400, "bad-parameter", f"field 'scores': expected true or false, got {_show(obj['scores'])}")
    k = json_int(obj["k"], 1, MAX_K) if "k" in obj else DEFAULT_K
    if k is None:
        raise HTTPProblem(400, "bad-parameter", f"field 'k': expected an integer 1..{MAX_K}, got {_show(obj['k'])}")
    scores = obj.get("scores", False)
    limit = server.config.max_session_events
    name = "aids" if "aids" in obj else "events"
    seq = obj[name]
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
            bad = sorted(set(ev) - set(EVENT_FIELDS))
            if bad:
                raise HTTPProblem(400, "bad-parameter", f"events[{i}]: unknown field(s) {', '.join(repr(b[:40]) for b in bad[:5])}")
            aids.append(_json_aid(ev["aid"], f"events[{i}].aid"))
            types.append(_event_type(ev.get("type", "clicks"), f"events[{i}].type"))
            if "ts" in ev and json_int(ev["ts"], *TS_RANGE) is None:
                raise HTTPProblem(400, "bad-parameter", f"events[{i}].ts: expected an integer, got {_show(ev['ts'])}")
    return aids, types, k, scores


def post_session_recs(server, req: Request, params: dict) -> Response:
    parse_query(req.query, ())
    require_json_body(req)
    aids, types, k, scores = _parse_session(server, req.body)
    rec = _recommender(server)
    try:
        res = rec.session(aids, types, k)
    except UnknownAid as exc:
        raise HTTPProblem(404, "unknown-aid", str(exc), extra={"unknown": sorted(set(aids))[:100]}) from None
    headers = {}
    unknown = list(dict.fromkeys(res.unknown))
    if unknown:
        headers["X-Unknown-Aids"] = ",".join(map(str, unknown[:50])) + (",..." if len(unknown) > 50 else "")
    body = scored_items(res.aids, res.scores, unknown=unknown, used_events=res.used) if scores else aid_list(res.aids)
    return Response(200, body, headers=headers)


# The operational routes below take no parameters and ignore the query string (see the module rules).

def get_healthz(server, req: Request, params: dict) -> Response:
    return Response(200, json_body({"status": "ok"}))


def get_readyz(server, req: Request, params: dict) -> Response:
    rec = server.recommender
    if rec is None or server.draining:
        why = "draining" if server.draining else "no model loaded"
        raise HTTPProblem(503, "not-ready", f"not ready: {why}", headers={"Retry-After": "1"})
    return Response(200, json_body({"status": "ready", "model": rec.path, "vocab_size": rec.vocab_size,
                                    "vector_size": rec.vector_size, "neighbor_table_k": rec.table_k,
                                    "pid": os.getpid()}))


def get_metrics(server, req: Request, params: dict) -> Response:
    return Response(200, server.metrics_text(), METRICS_CONTENT_TYPE)


def get_openapi(server, req: Request, params: dict) -> Response:
    from .openapi import openapi_bytes  # openapi imports this module's constants
    return Response(200, openapi_bytes(server.config))


# --- the explorer page: static files shipped as package data (serve/static/) ----------------------

STATIC_FILES = {   # route -> (file under serve/static/, Content-Type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/explorer.js": ("explorer.js", "text/javascript; charset=utf-8"),
    "/static/explorer.css": ("explorer.css", "text/css; charset=utf-8"),
}
# Only this server's own files, scripts and API: no external asset can load even if one slipped in.
STATIC_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def static_file(name: str) -> bytes:
    """The bytes of ``serve/static/<name>``, read once."""
    return resources.files(__package__).joinpath("static", name).read_bytes()


def get_static(server, req: Request, params: dict) -> Response:
    name, ctype = STATIC_FILES[params["route"]]
    return Response(200, static_file(name), ctype, dict(STATIC_HEADERS))


# path -> {method: handler}; one dynamic route below.
STATIC_ROUTES = {
    ROUTE_POPULAR: {"GET": get_popular},
    ROUTE_RECS: {"POST": post_session_recs},
    "/healthz": {"GET": get_healthz},
    "/readyz": {"GET": get_readyz},
    "/metrics": {"GET": get_metrics},
    "/openapi.json": {"GET": get_openapi},
    **{path: {"GET": get_static} for path in STATIC_FILES},
}
ITEM_SEGMENTS = ROUTE_RECS.split("/")   # ["", "api", "v1", "recommendations"]
ITEM_METHODS = {"GET": get_item_recs}
SERVER_METHODS = ("GET", "HEAD", "OPTIONS", "POST")   # every method some route takes (OPTIONS *)


def allowed_methods(methods: dict) -> list[str]:
    """The ``Allow`` list of a route: its methods, HEAD where GET is, and OPTIONS everywhere."""
    return sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()) | {"OPTIONS"})


def _options(allow: list[str]):
    def options(server, req: Request, params: dict) -> Response:
        return Response(200, b"", "text/plain; charset=utf-8", {"Allow": ", ".join(allow)})
    return options


def _decode_path(path: str) -> list[str]:
    if "%" not in path:   # nothing to decode (unquote would return every segment as it is)
        return path.split("/")
    try:
        return [unquote(seg, errors="strict") for seg in path.split("/")]
    except UnicodeDecodeError:
        exc = HTTPProblem(400, "bad-request", f"path {path[:80]!r}: percent-encoding is not UTF-8")
        exc.route = ROUTE_UNKNOWN
        raise exc from None


def route(method: str, path: str):
    """``(template, handler, params)`` for a request; HEAD is served by the GET handler, OPTIONS
    by an answer listing ``Allow``.

    The path is percent-decoded per segment first. Raises a 404 problem for an unknown path and a
    405 problem (with ``Allow``) for a known path and a method it does not take; the problem
    carries the route template in ``route``.
    """
    if path == ROUTE_SERVER:
        if method == "OPTIONS":
            return ROUTE_SERVER, _options(list(SERVER_METHODS)), {}
        exc = HTTPProblem(400, "bad-request", f"the target '*' is only valid with OPTIONS, not {method[:20]}")
        exc.route = ROUTE_UNKNOWN
        raise exc
    segments = _decode_path(path)
    methods = None
    encoded = "%" in path   # without '%' the segments are the path's own
    if not encoded or not any("/" in seg for seg in segments[1:]):   # an encoded '/' never matches a fixed route
        decoded = "/".join(segments) if encoded else path
        methods = STATIC_ROUTES.get(decoded)
        template, params = decoded, {"route": decoded}
    if methods is None:
        if len(segments) == len(ITEM_SEGMENTS) + 1 and segments[:-1] == ITEM_SEGMENTS and segments[-1]:
            methods, template, params = ITEM_METHODS, ROUTE_REC_ITEM, {"aid": segments[-1]}
        else:
            exc = HTTPProblem(404, "unknown-route", f"no route {path[:200]!r} (see /openapi.json)")
            exc.route = ROUTE_UNKNOWN
            raise exc
    if method == "OPTIONS":
        return template, _options(allowed_methods(methods)), params
    handler = methods.get("GET" if method == "HEAD" and "GET" in methods else method)
    if handler is None:
        allow = allowed_methods(methods)
        exc = HTTPProblem(405, "method-not-allowed", f"{method[:20]} is not allowed on {template} (allowed: {', '.join(allow)})",
                          headers={"Allow": ", ".join(allow)})
        exc.route = template
        raise exc
    return template, handler, params
