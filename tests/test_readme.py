"""The README is executable documentation.

1. Every command-line flag of every console command, and every HTTP route of the service,
   appears in README.md.
2. The ``sh`` blocks of the README's "Walkthrough" section run as written, in a temporary
   directory, with one change: the generated data set is made smaller (``--sessions 20000`` ->
   ``--sessions 2500``) so the whole pipeline takes seconds. ``otto-<x>`` is run as
   ``python -m <package>``; ``otto-serve`` is started in the background on a free port; every
   ``curl`` line then runs against it with ``--fail`` (an HTTP error fails the test), with ``AID``
   replaced by an aid of the trained model and port 8000 by the server's port; so do the curl
   lines the server prints with ``--print-examples`` (what ``make demo`` shows).
Blocks marked ``text`` or ``console`` are illustrations and are not run.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MODULE_OF = {"otto-prep": "data_prep", "otto-train": "w2v", "otto-eval": "eval", "otto-serve": "serve"}


def _all_parsers():
    for package in ("data_prep", "w2v", "eval", "serve"):
        parser = importlib.import_module(f"{package}.cli").build_parser()
        stack = [parser]
        while stack:
            p = stack.pop()
            yield package, p
            for action in p._actions:
                if isinstance(action, argparse._SubParsersAction):
                    stack.extend(action.choices.values())


def test_every_flag_is_in_the_readme():
    missing = []
    for _package, parser in _all_parsers():
        for action in parser._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help" and not re.search(re.escape(opt) + r"(?![\w-])", README):
                    missing.append(f"{parser.prog} {opt}")
    assert missing == []


def test_every_route_is_in_the_readme():
    from serve.openapi import openapi_document

    paths = openapi_document()["paths"]
    assert len(paths) >= 7
    for path, methods in paths.items():
        shown = path.replace("{aid}", "<aid>")
        for method in methods:
            assert f"`{method.upper()} {shown}`" in README, f"{method.upper()} {shown} is not documented"


def _walkthrough_blocks() -> list[str]:
    section = README.split("\n## Walkthrough", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def _argv(line: str) -> list[str]:
    words = shlex.split(line)
    assert words[0] in MODULE_OF, f"README walkthrough line does not start with a console command: {line}"
    return [sys.executable, "-m", MODULE_OF[words[0]], *words[1:]]


@pytest.mark.slow
def test_walkthrough_runs(tmp_path):
    blocks = _walkthrough_blocks()
    assert len(blocks) == 2, "expected the pipeline block and the curl block"
    pipeline = [l for l in blocks[0].splitlines() if l.strip()]
    curls = [l for l in blocks[1].splitlines() if l.strip()]
    assert pipeline[-1].startswith("otto-serve") and all(c.startswith("curl ") for c in curls)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for line in pipeline[:-1]:
        line = re.sub(r"--sessions \d+", "--sessions 2500", line)
        run = subprocess.run(_argv(line), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{line}\n{run.stderr[-3000:]}"
        if line.startswith("otto-eval score"):
            scores = json.loads(run.stdout)
            assert set(scores) == {"clicks", "carts", "orders", "total"} and 0 < scores["total"] <= 1
    assert (tmp_path / "work/report/report.md").is_file()
    assert (tmp_path / "work/model.bin").stat().st_size > 0

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed; the pipeline part ran")
    aid = int(np.load(tmp_path / "work/model/aids.npy")[0])
    serve = re.sub(r"--port \d+", "--port 0", pipeline[-1])
    proc = subprocess.Popen(_argv(serve) + ["--print-examples"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", first)
        assert m, f"no 'listening on' line: {first!r}"
        port = m.group(1)
        printed = []  # the curl lines `make demo` prints (--print-examples), with real aids filled in
        while len(printed) < len(curls):
            line = proc.stdout.readline()
            assert line, "the server stopped printing before all example lines"
            if line.strip().startswith("curl "):
                printed.append(line.strip())
        for line in curls + printed:
            cmd = line.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("AID", str(aid))
            cmd = cmd.replace("curl -s ", "curl -s --fail --max-time 30 ", 1)
            run = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, f"{cmd}\n{run.stdout}\n{run.stderr}"
            assert run.stdout.strip(), cmd
    finally:
        proc.terminate()
        proc.wait(timeout=30)

