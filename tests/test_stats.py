"""``otto-prep stats``: exact numbers on hand-made datasets and on the real 20-session sample."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep import Dataset, cli, stats, write_dataset
from data_prep.dataset import TYPE_CODES

SAMPLE = Path(__file__).parent / "data" / "otto_sample_train.jsonl"


def _write(path, sessions, session_ids=None):
    """sessions: list of lists of (aid, ts, type code)."""
    lens = [len(s) for s in sessions]
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    ev = [e for s in sessions for e in s]
    sid = np.arange(len(sessions)) if session_ids is None else np.asarray(session_ids)
    return write_dataset(path, sid, offsets, np.array([e[0] for e in ev], dtype=np.int64),
                         np.array([e[1] for e in ev], dtype=np.int64),
                         np.array([e[2] for e in ev], dtype=np.int64))


TINY = [
    [(1, 10, 0), (2, 11, 0)],
    [(2, 20, 0), (2, 21, 1), (3, 22, 0)],
    [(1, 30, 0), (2, 31, 1), (3, 32, 1), (4, 33, 2), (5, 33, 2)],
]


def _expected_tiny():
    # lengths 2, 3, 5; per-aid counts 1:2, 2:4, 3:2, 4:1, 5:1 -> sorted 1, 1, 2, 2, 4
    return {
        "sessions": 3, "items": 5, "events": 10, "clicks": 5, "carts": 3, "orders": 2,
        "per_session": {"mean": 10 / 3, "std": (7 / 3) ** 0.5, "min": 2,
                        "p50": 3.0, "p75": 4.0, "p90": 4.6, "p95": 4.8, "max": 5},
        "per_item": {"mean": 2.0, "std": 1.5 ** 0.5, "min": 1,
                     "p50": 2.0, "p75": 2.0, "p90": 3.2, "p95": 3.6, "max": 4},
    }


def _assert_stats(got, want):
    for k, v in want.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                assert got[k][kk] == pytest.approx(vv, rel=1e-12), (k, kk)
                assert type(got[k][kk]) is type(vv) or isinstance(vv, float), (k, kk)
        else:
            assert got[k] == v, k


def test_tiny_dataset_exact_numbers(tmp_path):
    ds = Dataset.open(_write(tmp_path / "tiny", TINY))
    _assert_stats(stats.compute(ds), _expected_tiny())


def test_huge_aids_take_the_sorting_path_with_the_same_numbers(tmp_path):
    big = stats.BINCOUNT_MAX_AID
    remap = {1: 2**31 - 1, 2: big, 3: 0, 4: big + 7, 5: 123}
    sessions = [[(remap[a], t, y) for a, t, y in s] for s in TINY]
    ds = Dataset.open(_write(tmp_path / "huge", sessions))
    _assert_stats(stats.compute(ds), _expected_tiny())


def test_describe_degenerate_inputs():
    assert stats.describe(np.array([], dtype=np.int64)) == dict.fromkeys(
        ["mean", "std", "min", "p50", "p75", "p90", "p95", "max"])
    one = stats.describe(np.array([7]))
    assert one["std"] == 0.0 and one["min"] == one["max"] == 7 and one["p95"] == 7.0
    ties = stats.describe(np.array([3, 3, 3, 3]))
    assert ties["std"] == 0.0 and ties["p50"] == 3.0


def test_empty_dataset(tmp_path, capsys):
    path = _write(tmp_path / "empty", [])
    st = stats.compute(Dataset.open(path))
    assert st["sessions"] == st["events"] == st["items"] == 0
    assert st["per_item"]["mean"] is None
    assert cli.main(["stats", str(path)]) == 0
    assert cli.main(["stats", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["per_session"]["max"] is None


def _sample_arrays():
    sessions, sids = [], []
    for line in SAMPLE.read_text().splitlines():
        obj = json.loads(line)
        sids.append(obj["session"])
        sessions.append([(e["aid"], e["ts"], TYPE_CODES[e["type"]]) for e in obj["events"]])
    return sids, sessions


def test_real_sample(tmp_path):
    sids, sessions = _sample_arrays()
    ds = Dataset.open(_write(tmp_path / "sample", sessions, sids))
    st = stats.compute(ds)
    assert (st["sessions"], st["events"], st["clicks"], st["carts"], st["orders"]) == (20, 862, 800, 52, 10)
    lens = np.array([len(s) for s in sessions])
    aids = np.array([e[0] for s in sessions for e in s])
    _, per_item = np.unique(aids, return_counts=True)
    assert st["items"] == per_item.size
    assert st["per_session"]["mean"] == pytest.approx(862 / 20)
    assert st["per_session"]["min"] == 2 and st["per_session"]["max"] == 276
    assert st["per_session"]["std"] == pytest.approx(lens.std(ddof=1))
    assert st["per_session"]["p75"] == pytest.approx(np.percentile(lens, 75))
    assert st["per_item"]["max"] == per_item.max()
    assert st["per_item"]["p90"] == pytest.approx(np.percentile(per_item, 90))
    assert st["per_item"]["mean"] == pytest.approx(862 / per_item.size)


def test_share_points_hand_example():
    # counts 50, 30, 10, 5, 5 (total 100): 1% -> top 1, 10% -> 1, 50% -> 1, 75% -> 2, 90% -> 3
    pts = stats.share_points(np.array([5, 30, 50, 10, 5]))
    assert [p["items"] for p in pts] == [1, 1, 1, 2, 3]
    assert [p["count_at"] for p in pts] == [50, 50, 50, 30, 10]
    assert pts[-1]["item_fraction"] == pytest.approx(3 / 5)
    assert stats.share_points(np.array([], dtype=np.int64)) == []


def test_cli_table_json_and_plot(tmp_path, capsys):
    path = _write(tmp_path / "tiny", TINY)
    assert cli.main(["stats", str(path)]) == 0
    out = capsys.readouterr().out
    assert "per session" in out and "per item" in out and "numpy linear" in out
    row = out.splitlines()[1].split()
    assert row == ["3", "5", "10", "5", "3", "2"]
    assert cli.main(["stats", str(path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    _assert_stats(got, _expected_tiny())
    png = tmp_path / "curve.png"
    assert cli.main(["stats", str(path), "--json", "--plot", str(png)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p["share"] for p in got["share_points"]] == list(stats.SHARE_POINTS)


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path / "tiny", TINY)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["stats", str(path), "--plot", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "matplotlib" in err and "plot" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_missing_dataset_is_one_line_error(tmp_path, capsys):
    assert cli.main(["stats", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip()
    assert "nope" in err and err.count("\n") == 0
