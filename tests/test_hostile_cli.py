"""Hostile command lines: inputs are never destroyed (an output over an input is a usage error,
exit 2), a bad file is one line and exit 1 in every CLI, a failed write keeps the old output (see tests/HOSTILE.md, "Files and CLIs").

Most commands run in-process through their ``main`` (an escaping exception, i.e. a traceback,
fails the test); the ones that need a process of their own (a file size limit, a server start)
run as subprocesses with a timeout.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep.cli import main as prep
from data_prep.dataset import Dataset
from eval.cli import main as evaluate
from w2v.cli import main as train
from w2v.model_io import load_model, save_index, save_model

ROOT = Path(__file__).parent.parent
SAMPLE = Path(__file__).parent / "data" / "otto_sample_train.jsonl"


def _digest(path: Path) -> dict:
    """Every file under ``path`` (or the file itself) with its bytes: to prove nothing changed."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _fails(rc: int, capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _refused(main, argv: list[str], capsys, *needles: str) -> str:
    """An output path that overlaps an input is a usage error: one line, exit status 2."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return _fails(1, capsys, *needles)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A converted sample dataset, its split, and a model on its train aids with a neighbour table."""
    root = tmp_path_factory.mktemp("hostile_cli")
    assert prep(["convert", str(SAMPLE), str(root / "ds"), "--quiet"]) == 0
    assert evaluate(["split", str(root / "ds"), str(root / "split"), "--quiet"]) == 0
    aids = np.unique(np.asarray(Dataset.open(root / "split" / "train").aid)).astype(np.int64)
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((aids.size, 8)).astype(np.float32)
    m = save_model(root / "model", vec, vec, aids, np.ones(aids.size, np.int64), {"source": "test"})
    V = aids.size
    nb = np.stack([(np.arange(5) + r + 1) % V for r in range(V)]).astype(np.int32)
    save_index(m, nb, np.linspace(1, 0, 5, dtype=np.float32)[None, :].repeat(V, 0), {})
    return root


@pytest.fixture
def bad(world, tmp_path):
    """Fresh copies of the dataset and the model to damage."""
    shutil.copytree(world / "ds", tmp_path / "ds")
    shutil.copytree(world / "model", tmp_path / "model")
    shutil.copy(world / "split" / "test_sessions.jsonl", tmp_path / "test.jsonl")
    return tmp_path


# ------------------------------------------------------------------------------ inputs are sacred
def test_convert_into_the_directory_holding_the_input(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    shutil.copy(SAMPLE, tmp_path / "d" / "in.jsonl")
    before = _digest(tmp_path / "d")
    _refused(prep, ["convert", str(tmp_path / "d" / "in.jsonl"), str(tmp_path / "d"), "--overwrite", "--quiet"],
             capsys, "otto-prep convert: error: ", "contains the input")
    assert _digest(tmp_path / "d") == before


def test_convert_onto_the_input_file(tmp_path, capsys):
    shutil.copy(SAMPLE, tmp_path / "x.jsonl")
    _refused(prep, ["convert", str(tmp_path / "x.jsonl"), str(tmp_path / "x.jsonl"), "--overwrite", "--quiet"],
             capsys, "is the input")
    assert (tmp_path / "x.jsonl").is_file() and (tmp_path / "x.jsonl").read_bytes() == SAMPLE.read_bytes()
    (tmp_path / "alias").symlink_to(tmp_path / "x.jsonl")
    _refused(prep, ["convert", str(tmp_path / "alias"), str(tmp_path / "x.jsonl"), "--overwrite", "--quiet"],
             capsys, "is the input")
    assert (tmp_path / "x.jsonl").read_bytes() == SAMPLE.read_bytes()


@pytest.mark.parametrize("argv,needle", [
    (["train", "{ds}", "{ds}", "--overwrite", "--quiet"], "is the input"),
    (["{ds}", "{ds}/model", "--quiet"], "lies inside the input"),
    (["export", "{model}", "{model}/vectors.npy"], "lies inside the input"),
    (["import", "{model}/meta.json", "{model}", "--overwrite", "--quiet"], "contains the input"),
])
def test_otto_train_never_writes_over_its_input(bad, capsys, argv, needle):
    before = {"ds": _digest(bad / "ds"), "model": _digest(bad / "model")}
    _refused(train, [a.format(ds=bad / "ds", model=bad / "model") for a in argv], capsys, needle)
    assert {"ds": _digest(bad / "ds"), "model": _digest(bad / "model")} == before


@pytest.mark.parametrize("argv,needle", [
    (["split", "{ds}", "{ds}", "--overwrite", "--quiet"], "is the input"),
    (["split", "{ds}", "{ds}/split", "--quiet"], "lies inside the input"),
    (["predict", "{test}", "{test}", "--recommender", "popular", "--train", "{ds}", "--quiet"], "is the input"),
    (["predict", "{test}", "{ds}", "--recommender", "popular", "--train", "{ds}", "--quiet"], "is the input"),
    (["predict", "{test}", "{model}/aids.npy", "--recommender", "w2v-item", "--train", "{ds}", "--model", "{model}",
      "--quiet"], "lies inside the input"),
    (["run", "{ds}", "{ds}", "--overwrite", "--quiet"], "is the input"),
])
def test_otto_eval_never_writes_over_its_input(bad, capsys, argv, needle):
    before = {n: _digest(bad / n) for n in ("ds", "model", "test.jsonl")}
    _refused(evaluate, [a.format(ds=bad / "ds", model=bad / "model", test=bad / "test.jsonl") for a in argv],
             capsys, needle)
    assert {n: _digest(bad / n) for n in ("ds", "model", "test.jsonl")} == before


def test_prep_export_and_plot_never_write_into_the_dataset(bad, capsys):
    before = _digest(bad / "ds")
    _refused(prep, ["export", str(bad / "ds"), str(bad / "ds" / "aid.npy"), "--quiet"], capsys, "lies inside the input")
    pytest.importorskip("matplotlib")
    _refused(prep, ["stats", str(bad / "ds"), "--plot", str(bad / "ds" / "ts.npy")], capsys, "lies inside the input")
    assert _digest(bad / "ds") == before


# ------------------------------------------------------------------------------ bad datasets
def _damage_dataset(ds: Path, kind: str) -> str:
    if kind == "negative aid":
        aid = np.array(np.load(ds / "aid.npy"))
        aid[17] = -5
        np.save(ds / "aid.npy", aid)
        return "aid.npy: event 17: aid -5 is negative"
    if kind == "duplicate session":
        sid = np.array(np.load(ds / "session_ids.npy"))
        sid[:] = sid[0]
        np.save(ds / "session_ids.npy", sid)
        return f"session_ids.npy: row 1: duplicate session id {sid[0]}"
    if kind == "npz":
        aid = np.load(ds / "aid.npy")
        np.savez(open(ds / "aid.npy", "wb"), aid=aid)
        return "aid.npy: a zip archive"
    if kind == "empty":
        (ds / "type.npy").write_bytes(b"")
        return "type.npy: empty file (0 bytes)"
    if kind == "text":
        (ds / "aid.npy").write_text("5 6 7\n")
        return "aid.npy: a text file"
    if kind == "deep meta":
        (ds / "meta.json").write_text("[" * 200_000)
        return "meta.json: JSON nested 200000 levels deep"
    if kind == "string count":
        meta = json.loads((ds / "meta.json").read_text())
        (ds / "meta.json").write_text(json.dumps(dict(meta, n_sessions=str(meta["n_sessions"]))))
        return '"n_sessions": expected a non-negative integer, got a string'
    raise AssertionError(kind)


DATASET_DAMAGE = ["negative aid", "duplicate session", "npz", "empty", "text", "deep meta", "string count"]
DATASET_COMMANDS = {
    "otto-train": lambda b: train([str(b / "ds"), str(b / "m2"), "--epochs", "1", "--quiet"]),
    "otto-eval split": lambda b: evaluate(["split", str(b / "ds"), str(b / "sp"), "--quiet"]),
    "otto-eval predict": lambda b: evaluate(["predict", str(b / "test.jsonl"), str(b / "o.csv"), "--recommender",
                                             "popular", "--train", str(b / "ds"), "--quiet"]),
    "otto-prep stats": lambda b: prep(["stats", str(b / "ds")]),
    "otto-prep export": lambda b: prep(["export", str(b / "ds"), str(b / "o.jsonl"), "--quiet"]),
}


@pytest.mark.parametrize("kind", DATASET_DAMAGE)
@pytest.mark.parametrize("command", list(DATASET_COMMANDS))
def test_bad_dataset_is_one_line_in_every_cli(bad, capsys, command, kind):
    needle = _damage_dataset(bad / "ds", kind)
    capsys.readouterr()
    _fails(DATASET_COMMANDS[command](bad), capsys, str(bad / "ds"), needle)
    assert sorted(p.name for p in bad.iterdir()) == ["ds", "model", "test.jsonl"]  # nothing written


# ------------------------------------------------------------------------------ bad models
def _damage_model(m: Path, kind: str) -> str:
    def edit(name, fn):
        a = np.array(np.load(m / name))
        fn(a)
        np.save(m / name, a)
    if kind == "negative neighbour":
        edit("neighbors.npy", lambda a: a.__setitem__((3, 1), -5))
        return "neighbors.npy: row 3, column 1: neighbour row -5 is outside"
    if kind == "huge neighbour":
        edit("neighbors.npy", lambda a: a.__setitem__((0, 0), 1_000_000))
        return "neighbour row 1000000 is outside"
    if kind == "nan vectors":
        edit("vectors.npy", lambda a: a.fill(np.nan))
        return "vectors.npy: row 0, column 0: nan"
    if kind == "dimension 0":
        V = np.load(m / "aids.npy").shape[0]
        for name in ("vectors.npy", "output.npy"):
            np.save(m / name, np.zeros((V, 0), np.float32))
        return "vectors of dimension 0"
    if kind == "duplicate aids":
        edit("aids.npy", lambda a: a.__setitem__(slice(None), a[0]))
        return "aids.npy: row 1: duplicate aid"
    if kind == "npz vectors":
        v = np.load(m / "vectors.npy")
        np.savez(open(m / "vectors.npy", "wb"), v=v)
        return "vectors.npy: a zip archive"
    if kind == "empty aids":
        (m / "aids.npy").write_bytes(b"")
        return "aids.npy: empty file (0 bytes)"
    if kind == "string vocab_size":
        meta = json.loads((m / "meta.json").read_text())
        (m / "meta.json").write_text(json.dumps(dict(meta, vocab_size=str(meta["vocab_size"]))))
        return '"vocab_size": expected a positive integer, got a string'
    if kind == "index without k":
        meta = json.loads((m / "index.json").read_text())
        del meta["k"]
        (m / "index.json").write_text(json.dumps(meta))
        return 'index.json: "k" is missing'
    if kind == "deep index.json":
        (m / "index.json").write_text("[" * 200_000)
        return "index.json: JSON nested 200000 levels deep"
    raise AssertionError(kind)


MODEL_DAMAGE = ["negative neighbour", "huge neighbour", "nan vectors", "dimension 0", "duplicate aids",
                "npz vectors", "empty aids", "string vocab_size", "index without k", "deep index.json"]
MODEL_COMMANDS = {
    "otto-train export": lambda b: train(["export", str(b / "model"), str(b / "v.txt"), "--quiet"]),
    "otto-train index": lambda b: train(["index", str(b / "model"), "--k", "3", "--quiet"]),
    "otto-eval predict w2v-item": lambda b: evaluate(["predict", str(b / "test.jsonl"), str(b / "o.csv"),
                                                      "--recommender", "w2v-item", "--train", str(b / "ds"),
                                                      "--model", str(b / "model"), "--quiet"]),
}


@pytest.mark.parametrize("kind", MODEL_DAMAGE)
@pytest.mark.parametrize("command", list(MODEL_COMMANDS))
def test_bad_model_is_one_line_in_every_cli(bad, capsys, command, kind):
    needle = _damage_model(bad / "model", kind)
    before = _digest(bad / "model")
    _fails(MODEL_COMMANDS[command](bad), capsys, str(bad / "model"), needle)
    assert _digest(bad / "model") == before
    assert sorted(p.name for p in bad.iterdir()) == ["ds", "model", "test.jsonl"]


def test_serve_refuses_a_bad_model_at_start(bad):
    needle = _damage_model(bad / "model", "negative neighbour")
    r = subprocess.run([sys.executable, "-m", "serve", str(bad / "model"), "--port", "0", "--quiet"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr and needle in last and str(bad / "model") in last


# ------------------------------------------------------------------------------ failed writes
def test_index_over_the_file_size_limit_keeps_the_old_table(tmp_path):
    V = 3000
    rng = np.random.default_rng(2)
    vec = rng.standard_normal((V, 4)).astype(np.float32)
    m = save_model(tmp_path / "m", vec, vec, np.arange(V), np.ones(V, np.int64), {})
    save_index(m, np.stack([np.arange(1, 3) + r for r in range(V)]).astype(np.int32) % V,
               np.zeros((V, 2), np.float32), {"note": "old"})
    before = _digest(m)
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
            "from w2v.cli import main\n"
            f"sys.exit(main(['index', {str(m)!r}, '--k', '20', '--quiet', '--threads', '1']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "otto-train index: error: " in lines[0], r.stderr
    assert str(m / "neighbors.npy") in lines[0] or str(m / "neighbor_scores.npy") in lines[0], lines[0]
    assert "file too large" in lines[0] or "short write" in lines[0], lines[0]
    assert _digest(m) == before  # the old table, its sidecar and nothing else
    assert sorted(os.listdir(m)) == sorted(before)
    assert load_model(m).index_meta["note"] == "old"


def test_outputs_honour_the_umask(world, tmp_path, capsys):
    assert train(["export", str(world / "model"), str(tmp_path / "v.txt"), "--quiet"]) == 0
    old = os.umask(0o022)
    try:
        assert train(["import", str(tmp_path / "v.txt"), str(tmp_path / "m"), "--quiet"]) == 0
        assert evaluate(["split", str(world / "ds"), str(tmp_path / "sp"), "--quiet"]) == 0
    finally:
        os.umask(old)
    for d in (tmp_path / "m", tmp_path / "sp", tmp_path / "sp" / "train"):
        assert (d.stat().st_mode & 0o777) == 0o755, d
    for f in (tmp_path / "m" / "vectors.npy", tmp_path / "m" / "meta.json", tmp_path / "sp" / "test_labels.jsonl"):
        assert (f.stat().st_mode & 0o777) == 0o644, f
