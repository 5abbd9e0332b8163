"""``otto-train index``: end to end through the CLI and through register()/handler."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from w2v import index, knn
from w2v.model_io import load_model, save_model


def random_model(path, V=70, D=9, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((V, D)).astype(np.float32)
    v[4] = 0  # a zero row must not produce NaN
    v[5] = v[6]
    aids = rng.choice(10**6, V, replace=False).astype(np.int64)
    save_model(path, v, rng.standard_normal((V, D)).astype(np.float32), aids,
               rng.integers(1, 100, V).astype(np.int64), {"source": "test"})
    return v


def parse(argv):
    parser = argparse.ArgumentParser(prog="otto-train")
    sub = parser.add_subparsers(dest="command", required=True)
    index.register(sub)
    return parser.parse_args(argv)


def test_handler_builds_and_saves_table(tmp_path, capsys):
    v = random_model(tmp_path / "m")
    args = parse(["index", str(tmp_path / "m"), "--k", "7", "--threads", "2", "--q-block", "3",
                  "--i-block", "5"])
    assert args.func(args) == 0
    err = capsys.readouterr().err
    assert "70/70 rows" in err and "wrote k=7" in err
    model = load_model(tmp_path / "m")
    assert model.neighbors.shape == (70, 7) and model.neighbors.dtype == np.int32
    assert model.index_meta["q_block"] == 3 and model.index_meta["i_block"] == 5
    assert model.index_meta["threads"] == 2 and model.index_meta["build_seconds"] >= 0
    nb, sc = knn.build_neighbor_table(v, 7)
    assert np.asarray(model.neighbors).tolist() == nb.tolist()
    assert np.asarray(model.neighbor_scores).tolist() == sc.tolist()
    assert not np.isnan(np.asarray(model.neighbor_scores)).any()
    # zero row: every other row scores 0, so its neighbours are the first rows in order
    assert model.neighbors[4].tolist() == [0, 1, 2, 3, 5, 6, 7]
    # rebuilding with another k replaces the table; quiet prints nothing
    args = parse(["index", str(tmp_path / "m"), "--k", "3", "--quiet"])
    assert args.func(args) == 0
    assert capsys.readouterr().err == ""
    model = load_model(tmp_path / "m")
    assert model.neighbors.shape == (70, 3) and model.neighbors[:, :3].tolist() == nb[:, :3].tolist()


def test_flag_validation():
    with pytest.raises(SystemExit):
        parse(["index", "x", "--k", "0"])
    with pytest.raises(SystemExit):
        parse(["index", "x", "--threads", "-1"])


def run_cli(*argv):
    return subprocess.run([sys.executable, "-m", "w2v", *argv], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    random_model(tmp_path / "m", V=40, D=5, seed=3)
    res = run_cli("index", str(tmp_path / "m"), "--k", "50", "--quiet")
    assert res.returncode == 0, res.stderr
    # k above V - 1 = 39 is lowered, with a note even under --quiet: no padded columns are written
    assert res.stderr == "index: --k 50 lowered to 39: the model has 40 rows, so each has 39 others\n"
    meta = json.loads((tmp_path / "m" / "index.json").read_text())
    assert meta["format"] == "otto-neighbor-index" and meta["k"] == 39
    nb = np.load(tmp_path / "m" / "neighbors.npy", allow_pickle=False)
    assert nb.shape == (40, 39) and (nb >= 0).all()
    res = run_cli("index", str(tmp_path / "m"), "--k", "1001")   # above the documented limit: refused at once
    assert res.returncode == 2 and res.stderr == ("otto-train index: error: --k: expected at most 1000 "
                                                  "neighbours per row, got 1001\n")


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
    res = run_cli("index", str(tmp_path / "missing"))
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "missing" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "meta.json").write_text("{not json")
    res = run_cli("index", str(tmp_path / "bad"))
    assert res.returncode == 1 and "meta.json" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("index", "--help")
    assert res.returncode == 0 and "--q-block" in res.stdout and "--quiet" in res.stdout
