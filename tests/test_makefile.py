"""The demo Makefile: a step's parameters are inputs (stamp files), and the report is printed once.

Runs ``make -n`` (print, don't run) against a WORK directory whose outputs are all up to date,
then changes one parameter at a time and checks which pipeline steps would run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

STEPS = {"synth": "data_prep synth", "convert": "data_prep convert", "split": "eval split",
         "train": "w2v train", "index": "w2v index", "report": "eval run"}


def _plan(work: Path, *assignments: str) -> tuple[set[str], list[str]]:
    out = subprocess.run(["make", "-n", "-C", str(ROOT), "demo", f"WORK={work}", "SESSIONS=500", *assignments],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if " -m " in line or line.startswith("cat ")]
    return {name for name, cmd in STEPS.items() if any(cmd in line for line in lines)}, lines


def _up_to_date(work: Path) -> None:
    """Create every output of the demo pipeline, each newer than what it depends on."""
    files = ["synth-500-9000-42.jsonl", ".stamps/input-" + str(work / "synth-500-9000-42.jsonl").replace("/", "_"),
             "sample/meta.json", "dataset/meta.json", ".stamps/split-days7-seed42", "split/test_labels.jsonl",
             ".stamps/train-epochs-seed42", "model/meta.json", "model/index.json", "report/report.md"]
    t = int(time.time()) + 10   # newer than the repository files the steps read
    for i, name in enumerate(files):
        p = work / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
        os.utime(p, (t + i, t + i))


def test_parameters_are_inputs_and_the_report_is_printed_once(tmp_path):
    work = tmp_path / "work"
    _up_to_date(work)
    steps, lines = _plan(work)
    assert steps == set(), lines
    assert sum(line.startswith("cat ") for line in lines) == 1   # the report, once
    steps, _ = _plan(work, "EPOCHS=1")
    assert steps == {"train", "index", "report"}
    steps, _ = _plan(work, "DAYS=3")
    assert steps == {"split", "train", "index", "report"}
    steps, _ = _plan(work, "SEED=7")
    assert steps == {"synth", "convert", "split", "train", "index", "report"}
    # `eval run` prints the report on stdout too; the demo drops that copy
    _, lines = _plan(work, "EPOCHS=1")
    assert [line for line in lines if "eval run" in line][0].rstrip().endswith("> /dev/null")
    assert any("--plot" in line for line in lines if "eval run" in line)


def test_variables_are_documented():
    makefile = (ROOT / "Makefile").read_text()
    header = makefile.split("\nPYTHON ")[0]
    readme = (ROOT / "README.md").read_text()
    for var in ("DATA", "SESSIONS", "ITEMS", "SEED", "DAYS", "EPOCHS", "WORK", "HOST", "PORT", "QUIET", "PYTHON"):
        assert f"{var}" in header, f"Makefile header does not explain {var}"
        assert f"`{var}`" in readme, f"README does not document {var}"
