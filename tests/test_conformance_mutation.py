"""The conformance kit catches every single-point misreading of the algorithm.

tests/conformance_port.py is an independent port written from docs/PORTING.md and the kit's JSON
alone. Unchanged it reproduces every file within the file's own tolerance; with any one of its
MISREADINGS applied (a copy of the reference with one rule read wrongly) at least one file fails,
and the test names which.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import conformance_port as cp

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conformance"
_spec = importlib.util.spec_from_file_location("conformance_generate_m", CONF / "generate.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

FILES = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(CONF.glob("*.json"))}
PORTED = [n for n in FILES if n.split(".")[0] in ("lcg", "vocab", "sample_int", "cum_table") or n.startswith("train_")]


def _failures(misreadings) -> dict[str, list[str]]:
    got = cp.port(FILES, frozenset(misreadings))
    return {n: d for n in PORTED if (d := gen.compare(FILES[n], got[n], drift=None))}


def test_the_faithful_port_passes_every_file():
    assert len(PORTED) == 7
    assert _failures(()) == {}


# the file(s) that decide each misreading (at least these must fail)
DECIDED_BY = {
    "stable_vocab_ties": "vocab.json",
    "sample_T_without_int": "sample_int.json",
    "sample_int_rounded": "sample_int.json",
    "cum_table_half_away": "cum_table.json",
    "bisect_right": "cum_table.json",
    "sigmoid_index_float32": "train_1epoch.json",
    "sigmoid_index_fma": "train_1epoch.json",
    "redraw_equal_negative": "train_1epoch.json",
    "clip_at_edges": "train_edges.json",
    "no_empty_first_job": "train_edges.json",
    "alpha_after_job": "train_1epoch.json",
    "seed_halves_swapped": "train_1epoch.json",
    "drop_when_equal": "sample_int.json",
}


def test_every_listed_misreading_is_tested():
    assert set(DECIDED_BY) == set(cp.MISREADINGS)


@pytest.mark.parametrize("misreading", sorted(cp.MISREADINGS))
def test_the_kit_fails_a_misread_port(misreading):
    failed = _failures([misreading])
    assert failed, f"{misreading} ({cp.MISREADINGS[misreading]}) passes the whole kit"
    assert DECIDED_BY[misreading] in failed, sorted(failed)
