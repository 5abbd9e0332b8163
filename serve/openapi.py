"""The OpenAPI 3.1 description of every route (served at ``/openapi.json``).

Every status the server can answer is declared on every operation that can get it: the ones the
connection layer answers before any route is known (:data:`TRANSPORT_ERRORS`) on all of them, and
the route's own (404, 415, ...) where they apply. ``info.version`` is the package version, read
from the installed distribution's metadata (whose one source is ``pyproject.toml``).
"""
from __future__ import annotations

import json
import tomllib
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from .app import DEFAULT_K, MAX_AID, MAX_K, STATIC_FILES

DISTRIBUTION = "otto-recommender"

SESSION_RULE = (
    "Session recommendations (the rule otto-eval's w2v-session scores; docs/ALGORITHM.md, "
    "'Session recommendations'). Events e_0..e_{n-1} are taken in the order given (oldest first). "
    "Event i gets weight w_i = type_weight[type_i] * decay^(n-1-i), with type_weight = "
    "{clicks: %s, carts: %s, orders: %s} and decay = %s (server parameters). The query vector is "
    "q = sum_i w_i * v_i / ||v_i|| over the events whose aid is in the model's vocabulary (a repeated aid "
    "counts once per occurrence; zero vectors contribute nothing). Events with unknown aids are skipped "
    "(keeping their position i) and reported: in the X-Unknown-Aids header, and in the 'unknown' field when "
    "scores=true. The answer is the exact cosine top-k of q over the whole vocabulary, aids of the session "
    "included, ordered by score descending then vocabulary row ascending. "
    "If no aid is known the answer is 404. At most %d events per request (413 beyond). "
    "'aids': [a, b, ...] is short for events of type clicks."
)




def package_version() -> str:
    """The project's version: the installed distribution's, else ``pyproject.toml``'s (a source tree)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]


# Answered by the connection layer, whatever the route (see serve.server): status -> why.
TRANSPORT_ERRORS = {
    "400": "malformed request: request line, header, Content-Length, or percent-encoding of the path",
    "408": "the request was not complete within the request deadline",
    "413": "body larger than the body limit",
    "414": "request line longer than its limit",
    "431": "too many header fields, or a header section larger than its limit",
    "500": "unexpected failure (logged); the server keeps serving",
    "501": "Transfer-Encoding (e.g. chunked bodies) is not supported; send Content-Length",
    "503": "overloaded: connection limit reached (with Retry-After), or no model loaded for a model route",
    "505": "HTTP version other than 1.x",
}


def _problem(desc: str) -> dict:
    return {"description": desc, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _responses(ok: dict, **own: str) -> dict:
    """``200: ok``, the transport errors (shared, by reference) and the route's own problems
    (``own``: ``_404="why"``; a route's text for a transport status replaces the shared one)."""
    own = {k.lstrip("_"): v for k, v in own.items()}
    out = {"200": ok}
    for status in sorted(set(TRANSPORT_ERRORS) | set(own)):
        out[status] = _problem(own[status]) if status in own else {"$ref": f"#/components/responses/{status}"}
    return out


def _json(desc: str, schema: dict, headers: dict | None = None) -> dict:
    out = {"description": desc, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


AID = {"type": "integer", "minimum": 0, "maximum": MAX_AID}
AID_LIST = {"type": "array", "items": AID}
K_PARAM = {"name": "k", "in": "query", "required": False,
           "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": DEFAULT_K},
           "description": f"number of aids to return (1..{MAX_K}, decimal digits)"}
QUERY_RULE = ("Empty query segments are ignored; a parameter given without '=' is a flag (true); unknown or "
              "repeated parameters are 400.")
IGNORES_QUERY = "Takes no parameters; the query string is ignored."
STATIC_DESCRIPTIONS = {   # route -> (summary, description)
    "/": ("The explorer page", "Popular items per type, an item's neighbours with scores, a session builder with "
          "live session recommendations, and the /metrics numbers. Static HTML and script from this server only "
          "(no external assets)."),
    "/static/explorer.js": ("The explorer page's script", "Plain JavaScript, no libraries."),
    "/static/explorer.css": ("The explorer page's style sheet", "Plain CSS."),
}


def openapi_document(max_session_events: int = 500, type_weights=(1.0, 6.0, 3.0), decay: float = 0.8) -> dict:
    not_ready = "no model loaded (with Retry-After), or overloaded: connection limit reached (with Retry-After)"
    static_paths = {
        path: {"get": {"summary": STATIC_DESCRIPTIONS[path][0],
                       "description": STATIC_DESCRIPTIONS[path][1] + " " + IGNORES_QUERY,
                       "responses": _responses({"description": "the file", "content": {
                           ctype.split(";")[0]: {"schema": {"type": "string"}}}})}}
        for path, (_, ctype) in STATIC_FILES.items()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "otto-recommender", "version": package_version(),
                 "description": "Item-to-item and session recommendations from a Word2Vec model of OTTO sessions. "
                                "Every error is an RFC 9457 problem (application/problem+json). Every response "
                                "carries Content-Length and X-Response-Time. Paths are percent-decoded per segment "
                                "(UTF-8), like the query. " + QUERY_RULE + " The operational routes (/, static "
                                "files, /healthz, /readyz, /metrics, /openapi.json) ignore the query string. "
                                "Where a schema says integer, any integer-valued JSON number is accepted (19.0 is "
                                "19). Request bodies must be application/json (charset=utf-8 allowed), else 415. "
                                "A method a path does not take is 405 with Allow; OPTIONS on any path, and "
                                "OPTIONS *, answer 200 with Allow. Limits: request line (414), header count/size "
                                "(431), body size (413), request deadline (408), connections (503)."},
        "paths": {
            "/api/v1/popular": {"get": {
                "summary": "The most popular aids of one event type",
                "description": "Aids ranked by event count of the given type over the training data "
                               "(count descending, then aid ascending). 404 if the model has no popularity table. "
                               + QUERY_RULE,
                "parameters": [K_PARAM, {"name": "type", "in": "query", "required": False,
                                         "schema": {"type": "string", "enum": ["clicks", "carts", "orders"], "default": "orders"}}],
                "responses": _responses(_json("aids, most popular first", AID_LIST),
                                        _400="bad k or type, unknown or repeated query parameter, or a malformed request",
                                        _404="the model has no popularity table", _503=not_ready)}},
            "/api/v1/recommendations/{aid}": {"get": {
                "summary": "The nearest aids of one aid",
                "description": "The k nearest aids by cosine similarity of their vectors, never the aid itself, "
                               "score descending then vocabulary row ascending. Served from the precomputed neighbour "
                               "table when the model has one and k is at most its width, otherwise by the exact "
                               "top-k kernel over all vectors. " + QUERY_RULE,
                "parameters": [{"name": "aid", "in": "path", "required": True, "schema": AID,
                                "description": "decimal digits (percent-encoded digits are decoded)"},
                               K_PARAM,
                               {"name": "scores", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
                                "description": "answer {items: [{aid, score}]} instead of [aid]; a bare ?scores is true"}],
                "responses": _responses(_json("nearest aids, best first", {"oneOf": [
                    AID_LIST, {"$ref": "#/components/schemas/ScoredItems"}]}),
                    _400="malformed aid, k or scores, unknown or repeated query parameter, or a malformed request",
                    _404="aid not in the vocabulary", _503=not_ready)}},
            "/api/v1/recommendations": {"post": {
                "summary": "Recommendations for a session",
                "description": SESSION_RULE % (*type_weights, decay, max_session_events)
                               + " Takes no query parameters (any is 400).",
                "requestBody": {"required": True, "description": "JSON; Content-Type must be application/json "
                                "(charset=utf-8 allowed), else 415",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionRequest"}}}},
                "responses": _responses(
                    _json("recommended aids, best first (with scores=true: {items, unknown, used_events})",
                          {"oneOf": [AID_LIST, {"$ref": "#/components/schemas/ScoredSession"}]},
                          {"X-Unknown-Aids": {"description": "the session's aids not in the vocabulary, comma-separated "
                                              "(first 50, then ',...'); absent when all are known",
                                              "schema": {"type": "string"}}}),
                    _400="bad JSON or field, a query parameter, or a malformed request",
                    _404="no aid of the session is known",
                    _413=f"body larger than the body limit, or more than {max_session_events} events",
                    _415="Content-Type is not application/json", _503=not_ready)}},
            "/healthz": {"get": {"summary": "Liveness", "description": IGNORES_QUERY, "responses": _responses(
                _json("the process answers", {"type": "object", "required": ["status"],
                                              "properties": {"status": {"const": "ok"}}}))}},
            "/readyz": {"get": {"summary": "Readiness", "description": IGNORES_QUERY, "responses": _responses(
                _json("a model is loaded", {"$ref": "#/components/schemas/Ready"}),
                _503="no model loaded, or draining (with Retry-After); or overloaded")}},
            "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4)", "description": IGNORES_QUERY,
                                 "responses": _responses({
                "description": "requests by route template and status, latency histogram, model info",
                "content": {"text/plain": {"schema": {"type": "string"}}}})}},
            "/openapi.json": {"get": {"summary": "This document", "description": IGNORES_QUERY, "responses": _responses(
                _json("OpenAPI 3.1", {"type": "object", "required": ["openapi", "info", "paths"]}))}},
            **static_paths,
        },
        "components": {"responses": {status: _problem(why) for status, why in TRANSPORT_ERRORS.items()}, "schemas": {
            "Problem": {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "instance": {"type": "string"}}},
            "Ready": {"type": "object", "required": ["status", "model", "vocab_size", "vector_size", "neighbor_table_k", "pid"],
                      "properties": {"status": {"const": "ready"}, "model": {"type": "string"},
                                     "vocab_size": {"type": "integer"}, "vector_size": {"type": "integer"},
                                     "neighbor_table_k": {"type": "integer"}, "pid": {"type": "integer"}}},
            "ScoredAid": {"type": "object", "required": ["aid", "score"], "additionalProperties": False,
                          "properties": {"aid": AID, "score": {"type": ["number", "null"]}}},
            "ScoredItems": {"type": "object", "required": ["items"], "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/ScoredAid"}}}},
            "ScoredSession": {"allOf": [{"$ref": "#/components/schemas/ScoredItems"}, {
                "type": "object", "required": ["unknown", "used_events"], "properties": {
                    "unknown": AID_LIST, "used_events": {"type": "integer", "minimum": 1}}}]},
            "SessionRequest": {"type": "object", "additionalProperties": False, "properties": {
                "aids": {"type": "array", "minItems": 1, "maxItems": max_session_events, "items": AID},
                "events": {"type": "array", "minItems": 1, "maxItems": max_session_events, "items": {
                    "type": "object", "required": ["aid"], "additionalProperties": False, "properties": {
                        "aid": AID,
                        "type": {"oneOf": [{"enum": ["clicks", "carts", "orders"]}, {"enum": [0, 1, 2]}], "default": "clicks"},
                        "ts": {"type": "integer", "minimum": -2**63, "maximum": 2**63 - 1,
                               "description": "accepted and ignored (order is the array order)"}}}},
                "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": DEFAULT_K},
                "scores": {"type": "boolean", "default": False}},
                "oneOf": [{"required": ["aids"]}, {"required": ["events"]}]},
        }},
    }


@lru_cache(maxsize=8)
def _cached(max_session_events: int, type_weights: tuple, decay: float) -> bytes:
    return json.dumps(openapi_document(max_session_events, type_weights, decay), separators=(",", ":")).encode()


def openapi_bytes(config) -> bytes:
    return _cached(int(config.max_session_events), tuple(float(w) for w in config.type_weights), float(config.decay))
