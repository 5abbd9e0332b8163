"""The server answers as its OpenAPI document says: an OpenAPI-driven property test (schemathesis).

A real server on 127.0.0.1 (port 0) serves a small model whose vocabulary is the aids 0..V-1, so
the generated aids often exist and the 200 answers are checked too, not only the errors. The
schema is the document of the server's configuration, and ``test_served_document_is_the_one_tested``
checks the server's own ``/openapi.json`` is exactly that document. Every operation is run through
schemathesis' phases (explicit examples, coverage, fuzzing) in positive and negative mode with
every built-in check on (status codes and content types declared, response schemas, schema-valid
requests accepted, schema-invalid ones rejected, undeclared methods 405 with ``Allow``, ...),
a fixed seed and a bounded number of examples per operation.

One setting is a documented decision, not a loosened check: a session longer than
``maxItems`` is answered 413 (a size limit, declared on the operation), which the
negative-data check has to count among the rejections.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig

from serve.openapi import openapi_document
from serve.server import make_server
from test_serve_support import call, make_model, running

V = 120
SEED = 20261201
MAX_EXAMPLES = 30          # fuzzing examples per operation (the coverage phase adds its own, deterministically)
MAX_SESSION_EVENTS = 12    # small, so generated sessions often reach the limit on both sides
REJECTION_STATUSES = ["400", "404", "405", "413", "415"]   # what a schema-invalid request may be answered


CONFIG = SchemathesisConfig.from_dict({
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
    "checks": {"negative_data_rejection": {"expected-statuses": REJECTION_STATUSES}},
    "phases": {"stateful": {"enabled": False}},   # no links between operations: nothing to chain
})
DOCUMENT = openapi_document(MAX_SESSION_EVENTS)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
load_all_checks()
ALL_CHECKS = list(CHECKS.get_all())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = make_model(tmp_path_factory.mktemp("fuzz") / "m", V=V, D=8, table_k=10, aids=np.arange(V))
    srv = make_server(d, "127.0.0.1", 0, threads=2, max_session_events=MAX_SESSION_EVENTS)
    with running(srv):
        yield srv


def test_served_document_is_the_one_tested(server):
    status, _, served = call(server.port, "GET", "/openapi.json")
    assert status == 200 and served == json.loads(json.dumps(DOCUMENT))


def test_all_checks_are_on():
    names = {c.__name__ for c in ALL_CHECKS}
    assert {"not_a_server_error", "status_code_conformance", "content_type_conformance",
            "response_schema_conformance", "positive_data_acceptance", "negative_data_rejection",
            "unsupported_method"} <= names


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_api_matches_openapi(case, server):
    case.call_and_validate(base_url=server.url, checks=ALL_CHECKS)


def test_the_fuzzer_reached_every_operation(server):
    """Read after the run above (same server): every operation was answered 200 at least once,
    every data route rejected a schema-invalid request, and undeclared methods were tried (405)."""
    text = call(server.port, "GET", "/metrics")[2].decode()
    seen: dict[tuple[str, str], set[str]] = {}
    for m in re.finditer(r'otto_http_requests_total\{route="([^"]*)",method="(\w+)",status="(\d+)"\} (\d+)', text):
        seen.setdefault((m.group(1), m.group(2)), set()).add(m.group(3))
    if ("/api/v1/popular", "GET") not in seen:
        pytest.skip("run together with test_api_matches_openapi (this test reads the counts it left)")
    for path, item in DOCUMENT["paths"].items():
        for method in item:
            assert "200" in seen.get((path, method.upper()), set()), f"{method.upper()} {path} never answered 200"
            if path.startswith("/api/"):
                assert "400" in seen[(path, method.upper())], f"{method.upper()} {path}: no invalid request was rejected"
        assert any("405" in statuses for (p, _), statuses in seen.items() if p == path), path
