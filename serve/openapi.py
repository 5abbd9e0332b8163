"""The OpenAPI 3.1 description of every route (served at ``/openapi.json``)."""
from __future__ import annotations

import json
from functools import lru_cache

from .app import DEFAULT_K, MAX_K

SESSION_RULE = (
    "Session recommendations. Events e_0..e_{n-1} are taken in the order given (oldest first). "
    "Event i gets weight w_i = type_weight[type_i] * decay^(n-1-i), with type_weight = "
    "{clicks: %s, carts: %s, orders: %s} and decay = %s (server parameters). The query vector is "
    "q = sum_i w_i * v_i / ||v_i|| over the events whose aid is in the model's vocabulary (a repeated aid "
    "counts once per occurrence; zero vectors contribute nothing). Events with unknown aids are skipped "
    "(keeping their position i) and reported: in the X-Unknown-Aids header, and in the 'unknown' field when "
    "scores=true. The answer is the exact cosine top-k of q over the whole vocabulary, EXCLUDING every aid "
    "that occurs in the session, ordered by score descending then vocabulary row ascending. "
    "If no aid is known the answer is 404. At most %d events per request (413 beyond). "
    "'aids': [a, b, ...] is short for events of type clicks."
)


def _problem(desc: str) -> dict:
    return {"description": desc, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _aid_array(desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": {
        "oneOf": [{"type": "array", "items": {"type": "integer", "minimum": 0}},
                  {"type": "array", "items": {"$ref": "#/components/schemas/ScoredAid"}},
                  {"$ref": "#/components/schemas/ScoredSession"}]}}}}


K_PARAM = {"name": "k", "in": "query", "required": False,
           "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": DEFAULT_K},
           "description": f"number of aids to return (1..{MAX_K})"}


def openapi_document(max_session_events: int = 500, type_weights=(1.0, 3.0, 6.0), decay: float = 0.9) -> dict:
    common_errors = {"503": _problem("overloaded (connection limit, with Retry-After) or no model loaded")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "otto-recommender", "version": "1.0.0",
                 "description": "Item-to-item and session recommendations from a Word2Vec model of OTTO sessions. "
                                "Every error is an RFC 9457 problem (application/problem+json). Every response "
                                "carries Content-Length and X-Response-Time. Request limits: request line (414), "
                                "header count/size (431), body size (413), request deadline (408)."},
        "paths": {
            "/api/v1/popular": {"get": {
                "summary": "The most popular aids of one event type",
                "description": "Aids ranked by event count of the given type over the training data "
                               "(count descending, then aid ascending). 404 if the model has no popularity table.",
                "parameters": [K_PARAM, {"name": "type", "in": "query", "required": False,
                                         "schema": {"type": "string", "enum": ["clicks", "carts", "orders"], "default": "orders"}}],
                "responses": {"200": {"description": "aids, most popular first", "content": {"application/json": {
                    "schema": {"type": "array", "items": {"type": "integer"}}}}},
                    "400": _problem("bad k or type"), "404": _problem("the model has no popularity table"), **common_errors}}},
            "/api/v1/recommendations/{aid}": {"get": {
                "summary": "The nearest aids of one aid",
                "description": "The k nearest aids by cosine similarity of their vectors, never the aid itself, "
                               "score descending then vocabulary row ascending. Served from the precomputed neighbour "
                               "table when the model has one and k is at most its width, otherwise by the exact "
                               "top-k kernel over all vectors.",
                "parameters": [{"name": "aid", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
                               K_PARAM,
                               {"name": "scores", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
                                "description": "return [{aid, score}] instead of [aid]"}],
                "responses": {"200": _aid_array("nearest aids, best first"), "400": _problem("malformed aid, k or scores"),
                              "404": _problem("aid not in the vocabulary"), **common_errors}}},
            "/api/v1/recommendations": {"post": {
                "summary": "Recommendations for a session",
                "description": SESSION_RULE % (*type_weights, decay, max_session_events),
                "requestBody": {"required": True, "description": "JSON (the Content-Type header is not checked)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionRequest"}}}},
                "responses": {"200": _aid_array("recommended aids, best first (with scores=true: {items, unknown, used_events})"),
                              "400": _problem("bad JSON or field"), "404": _problem("no aid of the session is known"),
                              "413": _problem("body or session too long"), **common_errors}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "the process answers"}}}},
            "/readyz": {"get": {"summary": "Readiness", "responses": {
                "200": {"description": "a model is loaded"}, "503": _problem("no model loaded, or draining")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4)", "responses": {
                "200": {"description": "requests by route template and status, latency histogram, model info",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
        "components": {"schemas": {
            "Problem": {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "instance": {"type": "string"}}},
            "ScoredAid": {"type": "object", "properties": {"aid": {"type": "integer"}, "score": {"type": ["number", "null"]}}},
            "ScoredSession": {"type": "object", "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/ScoredAid"}},
                "unknown": {"type": "array", "items": {"type": "integer"}}, "used_events": {"type": "integer"}}},
            "SessionRequest": {"type": "object", "additionalProperties": False, "properties": {
                "aids": {"type": "array", "minItems": 1, "maxItems": max_session_events, "items": {"type": "integer", "minimum": 0}},
                "events": {"type": "array", "minItems": 1, "maxItems": max_session_events, "items": {
                    "type": "object", "required": ["aid"], "additionalProperties": False, "properties": {
                        "aid": {"type": "integer", "minimum": 0},
                        "type": {"oneOf": [{"enum": ["clicks", "carts", "orders"]}, {"enum": [0, 1, 2]}], "default": "clicks"},
                        "ts": {"type": "integer", "description": "accepted and ignored (order is the array order)"}}}},
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
