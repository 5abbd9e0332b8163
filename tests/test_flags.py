"""CLI flags derived from the config dataclasses (data_prep.flags) and the one error style.

Every knob has one name, one default and one help text, taken from its dataclass; defaults are
shown once, as the flag takes them; bad arguments fail before any work with one line
``PROG: error: --flag: reason`` and exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from data_prep.command import ArgumentParser, UsageError
from data_prep.flags import add_config_flags, config_from_args, field_help, format_default

SAMPLE = Path(__file__).parent / "data" / "otto_sample_train.jsonl"


def _config_classes():
    from eval.nextevent import PairParams
    from eval.recommenders import CovisitParams
    from eval.run import EvalParams
    from eval.split import SplitParams
    from serve.server import ServerConfig
    from w2v.config import W2VConfig
    return [W2VConfig, ServerConfig, CovisitParams, SplitParams, PairParams, EvalParams]


def _parsers():
    for package in ("data_prep", "w2v", "eval", "serve"):
        stack = [importlib.import_module(f"{package}.cli").build_parser()]
        while stack:
            p = stack.pop()
            yield p
            for a in p._actions:
                if isinstance(a, argparse._SubParsersAction):
                    stack.extend(a.choices.values())


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_every_field_has_one_documented_flag(cls):
    p = argparse.ArgumentParser()
    added = add_config_flags(p, cls)
    assert added == [f.name for f in dataclasses.fields(cls)]
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        assert len(helps[f.name]) > 10, f"{cls.__name__}.{f.name}: help too short: {helps[f.name]!r}"
    # every flag parses back to the class defaults when nothing is given
    assert config_from_args(cls, p.parse_args([])) == cls()


def test_missing_docstring_entry_is_reported():
    @dataclasses.dataclass
    class Knobs:
        """Two knobs.

        alpha   documented, with a continuation
                line that is joined.
        """

        alpha: float = 0.5
        beta: int = 3

    assert field_help(Knobs) == {"alpha": "documented, with a continuation line that is joined"}
    with pytest.raises(TypeError, match="Knobs.beta: no help entry"):
        add_config_flags(argparse.ArgumentParser(), Knobs)


def test_defaults_are_shown_once_as_the_flag_takes_them():
    assert format_default((1.0, 3.0, 6.0)) == "1,3,6" and format_default(1e-3) == "0.001"
    assert format_default((0.5, 2, 3)) == "0.5,2,3" and format_default(7.0) == "7"
    seen = 0
    for p in _parsers():
        for a in p._actions:
            text = str(a.help or "")
            assert text.count("(default") <= 1, f"{p.prog} {a.option_strings}: {text}"
            assert "(default: None)" not in text and "(default: (" not in text, f"{p.prog} {a.option_strings}: {text}"
            seen += 1
    assert seen > 100
    serve = importlib.import_module("serve.cli").build_parser().format_help()
    assert "(default: 1,6,3)" in " ".join(serve.split())   # the session rule's type weights
    train = importlib.import_module("w2v.cli").build_parser()
    sub = next(a for a in train._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    text = " ".join(sub.format_help().split())
    assert "(default: all CPUs this process may use)" in text and "(default: 0.001)" in text


def test_layers_base_flags_fixed_and_flag_named_errors():
    from w2v.config import W2VConfig
    p = argparse.ArgumentParser()
    add_config_flags(p, W2VConfig)
    preset = {"window": 20, "negative": 10}
    cfg = config_from_args(W2VConfig, p.parse_args(["--negative", "3"]), base=preset, seed=9)
    assert (cfg.window, cfg.negative, cfg.seed, cfg.vector_size) == (20, 3, 9, W2VConfig().vector_size)
    with pytest.raises(UsageError, match=r"^--min-alpha: must be in \[0, alpha=0.025\]"):
        config_from_args(W2VConfig, p.parse_args(["--min-alpha", "0.5"]))
    q = argparse.ArgumentParser()
    from eval.nextevent import PairParams
    add_config_flags(q, PairParams, prefix="ne-")
    with pytest.raises(UsageError, match=r"^--ne-min-len: must be >= 2"):
        config_from_args(PairParams, q.parse_args(["--ne-min-len", "1"]), prefix="ne-")


def test_bool_flags():
    @dataclasses.dataclass
    class B:
        """Flags.

        loud    print more.
        check   verify the output.
        """

        loud: bool = False
        check: bool = True

    p = argparse.ArgumentParser()
    add_config_flags(p, B)
    assert config_from_args(B, p.parse_args([])) == B(False, True)
    assert config_from_args(B, p.parse_args(["--loud", "--no-check"])) == B(True, False)


def test_parser_errors_are_one_line_with_the_long_flag(capsys):
    p = ArgumentParser(prog="demo")
    p.add_argument("-k", "--k", type=int)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["-k", "x"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "demo: error: --k: invalid int value: 'x'\n"


@pytest.mark.parametrize("package, argv, message", [
    ("data_prep", ["convert", "a", "b", "--threads", "x"], "otto-prep convert: error: --threads: expected a positive integer, got 'x'"),
    ("data_prep", ["synth", "o.jsonl", "--sessions", "0"], "otto-prep synth: error: --sessions: expected a positive integer, got 0"),
    ("data_prep", ["synth", "o.jsonl", "--sessions", str(2**41)], "otto-prep synth: error: --sessions: must be an integer in [1, 1099511627776]"),
    ("w2v", ["--epochs", "0", "D", "M"], "otto-train train: error: --epochs: must be >= 1 (an untrained model is never saved)"),
    ("w2v", ["train", "D", "M", "--window", "0"], "otto-train train: error: --window: must be >= 1"),
    ("w2v", ["index", "M", "--k", "5000"], "otto-train index: error: --k: expected at most 1000 neighbours per row"),
    ("w2v", ["bogus-command-or-dataset"], "otto-train train: error: the following arguments are required: MODEL_DIR"),
    ("eval", ["score", "L", "S", "--k", "0"], "otto-eval score: error: --k: must be an integer >= 1, got 0"),
    ("eval", ["predict", "T", "O", "--recommender", "popular", "--train", "D", "--k", "-3"],
     "otto-eval predict: error: --k: must be an integer >= 1, got -3"),
    ("eval", ["pairs", "D", "--min-len", "1"], "otto-eval pairs: error: --min-len: must be >= 2"),
    ("serve", ["M", "--decay", "2"], "otto-serve: error: --decay: expected 0 < decay <= 1"),
    ("serve", ["M", "--max-body", "0"], "otto-serve: error: --max-body: expected a positive number"),
    ("serve", ["M", "--port", "x"], "otto-serve: error: --port: expected a TCP port 0..65535"),
])
def test_usage_errors_everywhere(package, argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # nothing exists here: any work would fail differently
    mod = importlib.import_module(f"{package}.cli")
    try:
        rc = mod.main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def sample_dataset(tmp_path_factory):
    from data_prep.reader import convert
    root = tmp_path_factory.mktemp("flags")
    convert(SAMPLE, root / "ds", quiet=True)
    return root / "ds"


def test_implicit_train_with_flags_first(sample_dataset, tmp_path, capsys):
    from w2v.cli import main
    rc = main(["--epochs", "2", "--vector-size", "8", "--min-count", "1", "--workers", "1", "--quiet",
               str(sample_dataset), str(tmp_path / "m")])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["epochs_trained"] == 2
    assert np.load(tmp_path / "m" / "vectors.npy").shape[1] == 8


def test_training_without_pairs_is_an_error(tmp_path, capsys):
    """Every session has one event: no (centre, context) pair, so no model is written."""
    from data_prep.dataset import write_dataset
    from w2v.cli import main
    n = 30
    write_dataset(tmp_path / "ds", np.arange(n, dtype=np.int64), np.arange(n + 1, dtype=np.int64),
                  np.arange(n, dtype=np.int64) % 3, np.arange(n, dtype=np.int64) * 1000, np.zeros(n, np.uint8))
    rc = main(["train", str(tmp_path / "ds"), str(tmp_path / "m"), "--epochs", "1", "--min-count", "1",
               "--vector-size", "8", "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "no model was written" in err and err.count("\n") == 1, err
    assert not (tmp_path / "m").exists()


def test_existing_output_names_the_flag(sample_dataset, tmp_path, capsys):
    from data_prep.cli import main
    (tmp_path / "out").mkdir()
    rc = main(["convert", str(SAMPLE), str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err == f"otto-prep convert: error: {tmp_path / 'out'}: already exists (pass --overwrite to replace it)\n"
