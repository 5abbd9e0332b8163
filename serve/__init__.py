"""The recommendation service: ``otto-serve MODEL_DIR`` (see :mod:`serve.cli`).

Modules: :mod:`serve.server` (HTTP/1.1 server, worker pool, limits, reload, drain),
:mod:`serve.app` (routes and validation), :mod:`serve.recommend` (answers from a model),
:mod:`serve.metrics` (Prometheus text), :mod:`serve.openapi`, :mod:`serve.problems`
(RFC 9457 errors), :mod:`serve.memory` (RSS/PSS of worker processes).
"""
