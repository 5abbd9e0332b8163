"""Shared fixtures and references for the serve tests (no tests here)."""
from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time

import numpy as np

from w2v.model_io import popularity, save_index, save_model

TYPE_NAMES = ("clicks", "carts", "orders")


def make_model(path, V=300, D=16, seed=0, table_k=20, popular=True, zero_rows=(), random_table=False, aids=None):
    """A random model directory. ``zero_rows`` get all-zero vectors (degenerate on purpose).
    The neighbour table is exact (numpy reference) unless ``random_table``. ``aids``: the
    vocabulary (default: V distinct random aids)."""
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal((V, D)).astype(np.float32)
    for r in zero_rows:
        vec[r] = 0
    drawn = (rng.choice(50 * V + 10, V, replace=False) + 1).astype(np.int64)   # drawn always: same rng stream
    aids = drawn if aids is None else np.asarray(aids, dtype=np.int64)
    counts = np.arange(V, 0, -1, dtype=np.int64)
    kw = {}
    if popular:
        ev_aid = rng.choice(aids, 20 * V)
        ev_type = rng.integers(0, 3, 20 * V)
        kw["popular"], kw["popular_counts"] = popularity(ev_aid, ev_type, 200)
    p = save_model(path, vec, rng.standard_normal((V, D)).astype(np.float32), aids, counts, {"test": True},
                   overwrite=True, **kw)
    if table_k:
        nb = np.full((V, table_k), -1, np.int32)
        ns = np.full((V, table_k), -np.inf, np.float32)
        for r in range(V):
            if random_table:
                rows = rng.choice(np.delete(np.arange(V), r), min(table_k, V - 1), replace=False)
                sc = np.sort(rng.random(rows.shape[0]).astype(np.float32))[::-1]
            else:
                rows, sc = ref_topk(vec, vec[r], table_k, exclude=[r])
            nb[r, :len(rows)], ns[r, :len(rows)] = rows, sc
        save_index(p, nb, ns, {"test": True})
    return p


def ref_topk(vectors, query, k, exclude=()):
    """float64 numpy reference: cosine scores (zero rows / zero query score 0), score desc then row asc."""
    v = np.asarray(vectors, np.float64)
    q = np.asarray(query, np.float64)
    n = np.linalg.norm(v, axis=1)
    qn = np.linalg.norm(q)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(n > 0, v @ q / np.where(n > 0, n, 1), 0.0) / (qn if qn > 0 else np.inf)
    rows = np.arange(v.shape[0])
    keep = ~np.isin(rows, np.asarray(list(exclude), dtype=np.int64))
    rows, s = rows[keep], s[keep]
    order = np.lexsort((rows, -s))[:k]
    return rows[order], s[order]


def session_query(vectors, rows, types, decay=0.8, weights=(1.0, 6.0, 3.0), n=None):
    """Reference session vector of the default rule (float64); ``rows[i] = -1`` marks an unknown aid
    at position i."""
    v = np.asarray(vectors, np.float64)
    n = len(rows) if n is None else n
    q = np.zeros(v.shape[1])
    for i, (r, t) in enumerate(zip(rows, types)):
        if r < 0:
            continue
        norm = np.linalg.norm(v[r])
        if norm > 0:
            q += weights[t] * decay ** (n - 1 - i) * v[r] / norm
    return q


def assert_ranking(got_aids, got_scores, ref_aids, ref_scores, tol=1e-5):
    """Equal lists, except that entries whose reference scores are within ``tol`` may swap."""
    assert len(got_aids) == len(ref_aids), (got_aids, ref_aids)
    np.testing.assert_allclose(np.asarray(got_scores, np.float64), np.asarray(ref_scores, np.float64), atol=tol)
    for i, (a, b) in enumerate(zip(got_aids, ref_aids)):
        if a != b:
            near = [ref_aids[j] for j in range(len(ref_aids)) if abs(ref_scores[j] - ref_scores[i]) <= tol]
            assert a in near, (i, got_aids, ref_aids)


@contextlib.contextmanager
def running(server):
    """Run ``server.serve_forever`` in a thread for the block; drain and close afterwards."""
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        t.join(timeout=10)
        server.server_close()
        assert not t.is_alive()


def call(port, method, path, body=None, headers=None, conn=None):
    """One request; returns ``(status, headers dict (lower-case), parsed body or raw bytes)``."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        h = {k.lower(): v for k, v in r.getheaders()}
        if h.get("content-type", "").startswith(("application/json", "application/problem+json")) and data:
            data = json.loads(data)
        return r.status, h, data
    finally:
        if own:
            c.close()


def raw(port, payload: bytes, timeout=5.0, read_all=True) -> bytes:
    """Send raw bytes, read until the server closes (or ``timeout``)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if payload:
            s.sendall(payload)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            if not read_all and b"\r\n\r\n" in out:
                break
        return out
    finally:
        s.close()


def parse_raw(resp: bytes):
    """``(status, headers, body)`` of the first response in raw bytes."""
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", len(body)))
    return status, headers, body[:n]
