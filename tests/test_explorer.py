"""The explorer page's structure, without a browser (tests/test_browser.py drives it in Chromium).

* every element id the script looks up exists in index.html (and ids are unique);
* every request the script makes is a real route with that method, and it makes no other;
* every URL the HTML references is a route of this server: nothing external (no CDN, no other host);
* the files are served with their content types and a same-origin Content-Security-Policy, and they
  are shipped as package data.
"""
from __future__ import annotations

import fnmatch
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from serve import app
from serve.problems import HTTPProblem
from serve.server import make_server
from test_serve_support import call, make_model, running

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "serve" / "static"
HTML = (STATIC / "index.html").read_text(encoding="utf-8")
JS = (STATIC / "explorer.js").read_text(encoding="utf-8")
CSS = (STATIC / "explorer.css").read_text(encoding="utf-8")


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: list[str] = []
        self.urls: list[tuple[str, str, str]] = []   # (tag, attribute, value)
        self.inline_scripts = 0
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        for attr in ("src", "href", "action", "formaction"):
            if attr in a:
                self.urls.append((tag, attr, a[attr]))
        if tag == "script" and "src" not in a:
            self.inline_scripts += 1
        for name in a:
            assert not name.startswith("on"), f"inline handler {name} on <{tag}> (the CSP forbids inline script)"


@pytest.fixture(scope="module")
def page():
    p = Page()
    p.feed(HTML)
    p.close()
    return p


def _js_list(name: str) -> list[str]:
    m = re.search(rf"const {name} = \[([^\]]*)\];", JS)
    assert m, f"explorer.js has no const {name} = [...]"
    return re.findall(r'"([^"]*)"', m.group(1))


def _routes() -> dict[str, tuple[str, str]]:
    m = re.search(r"const ROUTES = \{(.*?)\n\};", JS, flags=re.S)
    assert m, "explorer.js has no ROUTES table"
    routes = {name: (method, path) for name, method, path in
              re.findall(r'(\w+): \["([A-Z]+)", "([^"]+)"\]', m.group(1))}
    assert len(routes) == m.group(1).count("["), "a ROUTES entry is not of the form name: [\"METHOD\", \"/path\"]"
    return routes


def test_ids_unique_and_every_id_the_script_uses_exists(page):
    assert len(page.ids) == len(set(page.ids)), "duplicate element ids"
    types = _js_list("TYPES")
    assert types == list(app.TYPE_NAMES)
    literal = re.findall(r'byId\("([^"]+)"\)', JS)
    templated = re.findall(r"byId\(`([^`]+)`\)", JS)
    assert len(literal) + len(templated) == JS.count("byId(") - 1   # - the definition
    used = set(literal)
    for t in templated:
        assert t.count("${t}") == 1, t
        used |= {t.replace("${t}", name) for name in types}
    assert len(used) >= 20
    assert sorted(used - set(page.ids)) == []
    # the one lookup of elements by id goes through byId (which throws on a missing one)
    assert JS.count("getElementById") == 1 and "querySelector(\"#" not in JS and "querySelector('#" not in JS


def test_every_request_is_a_real_route():
    routes = _routes()
    assert set(routes) == {"popular", "item", "session", "metrics"}
    for name, (method, path) in routes.items():
        if path.endswith("/"):   # the item route: the aid is appended
            path += "123"
        template, handler, _ = app.route(method, path)
        assert handler is not None and template in (path, app.ROUTE_REC_ITEM), name
    # fetch is called in one place, with a ROUTES path; every request() names a ROUTES entry
    assert JS.count("fetch(") == 1 and "fetch(path + suffix" in JS
    called = set(re.findall(r'request\("(\w+)"', JS))
    assert called == set(routes)
    # the query parameters it sends are ones those routes accept (strict data routes would 400)
    for q in re.findall(r"query: `([^`]*)`", JS):
        names = {seg.split("=")[0] for seg in q.split("&")}
        assert names <= {"k", "type", "scores"}, q


def test_no_external_references(page):
    assert page.inline_scripts == 0
    assert {"script", "link", "main"} <= set(page.tags)
    for tag, attr, url in page.urls:
        assert url.startswith("/") and not url.startswith("//"), (tag, attr, url)
        try:
            app.route("GET", url.split("?")[0])
        except HTTPProblem as exc:
            pytest.fail(f"<{tag} {attr}={url!r}> is not a route: {exc}")
    for name, text in (("index.html", HTML), ("explorer.js", JS), ("explorer.css", CSS)):
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", text, flags=re.I), name


def test_static_files_are_served_and_shipped(tmp_path):
    on_disk = sorted(p.name for p in STATIC.iterdir() if p.is_file())
    assert sorted(name for name, _ in app.STATIC_FILES.values()) == on_disk
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]["serve"]
    for name in on_disk:
        assert any(fnmatch.fnmatch(f"static/{name}", pat) for pat in patterns), f"{name} is not package data"
    d = make_model(tmp_path / "m", V=20, D=4, table_k=3)
    with running(make_server(d, threads=1)) as s:
        for route, (name, ctype) in app.STATIC_FILES.items():
            status, h, body = call(s.port, "GET", route)
            assert status == 200 and h["content-type"] == ctype and body == (STATIC / name).read_bytes(), route
            assert "default-src 'none'" in h["content-security-policy"] and "connect-src 'self'" in h["content-security-policy"]
            assert h["x-content-type-options"] == "nosniff"
        assert call(s.port, "HEAD", "/")[2] == b""
        status, _, text = call(s.port, "GET", "/metrics")
        assert 'route="/",method="GET",status="200"' in text.decode()


def test_page_is_loopback_only_by_default():
    """The page is served by otto-serve itself, which binds 127.0.0.1 unless --host says otherwise."""
    import inspect

    from serve import cli
    assert cli.build_parser().parse_args(["MODEL"]).host == "127.0.0.1"
    assert inspect.signature(make_server).parameters["host"].default == "127.0.0.1"
