"""Errors as RFC 9457 problem details (``application/problem+json``).

Every failure the service answers is an :class:`HTTPProblem`: a status, a short title (the
standard reason phrase) and a detail naming the offending field or limit. Raising one anywhere
below the handler's dispatch point turns into exactly one JSON response with that status; the
problem ``type`` is a stable URI fragment per kind of error so clients can branch on it.
"""
from __future__ import annotations

import json
from http import HTTPStatus

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://otto-recommender.invalid/problems/"


class HTTPProblem(Exception):
    """An HTTP error answer.

    ``kind`` names the problem type (``"unknown-aid"``, ``"bad-parameter"``...); ``headers`` are
    extra response headers (``Allow`` for 405, ``Retry-After`` for 503); ``close`` asks the
    server to close the connection after answering (used when the request stream can no longer
    be trusted: malformed request line, oversized headers or body).
    """

    def __init__(self, status: int, kind: str, detail: str, *, headers: dict[str, str] | None = None,
                 close: bool = False, extra: dict | None = None):
        super().__init__(detail)
        self.status = int(status)
        self.kind = kind
        self.detail = detail
        self.headers = dict(headers or {})
        self.close = close
        self.extra = dict(extra or {})

    @property
    def title(self) -> str:
        return reason(self.status)

    def body(self, instance: str | None = None) -> bytes:
        obj = {"type": TYPE_BASE + self.kind, "title": self.title, "status": self.status, "detail": self.detail}
        if instance:
            obj["instance"] = instance
        obj.update(self.extra)
        return json.dumps(obj, separators=(",", ":")).encode()


def reason(status: int) -> str:
    """The standard reason phrase of ``status`` ("Unknown" for codes HTTPStatus does not know)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
