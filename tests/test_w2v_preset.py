"""Named settings (``w2v.config.PRESETS``): the plain defaults stay gensim's, a preset is data
applied under explicit overrides, and the CLIs and ``make demo`` use them as documented."""
from __future__ import annotations

import inspect
import subprocess
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from data_prep.dataset import write_dataset
from eval import cli as eval_cli
from w2v import cli
from w2v.config import PRESETS, W2VConfig
from w2v.model_io import load_model

ROOT = Path(__file__).resolve().parent.parent
SESSION = W2VConfig.from_preset("session", workers=1)


def test_plain_defaults_are_gensims():
    gensim = pytest.importorskip("gensim")
    sig = inspect.signature(gensim.models.Word2Vec).parameters
    cfg = W2VConfig(workers=1)
    for name in ("vector_size", "window", "negative", "ns_exponent", "sample", "alpha", "min_alpha", "epochs",
                 "min_count", "seed"):
        assert getattr(cfg, name) == sig[name].default, name
    assert W2VConfig.from_preset("gensim", workers=1) == cfg and PRESETS["gensim"] == {}


def test_presets_are_plain_data_over_known_fields():
    names = {f.name for f in fields(W2VConfig)}
    for name, values in PRESETS.items():
        assert isinstance(values, dict) and set(values) <= names, name
        assert all(isinstance(v, (int, float, str, bool)) for v in values.values()), name
    # the session preset changes the knobs it was tuned on, and nothing else
    assert set(PRESETS["session"]) <= {"alpha", "epochs", "window", "ns_exponent", "sample", "min_count", "share_negatives",
                                       "vector_size", "collapse_repeats"}
    assert PRESETS["session"] and SESSION != W2VConfig(workers=1)
    for k, v in PRESETS["session"].items():
        assert getattr(SESSION, k) == v


def test_overrides_win_and_errors_name_the_field():
    cfg = W2VConfig.from_preset("session", window=3, epochs=2, workers=1)
    assert cfg.window == 3 and cfg.epochs == 2 and cfg.alpha == SESSION.alpha
    with pytest.raises(ValueError, match="preset: unknown name 'nope'"):
        W2VConfig.from_preset("nope")
    with pytest.raises(ValueError, match="windw: not a W2VConfig field"):
        W2VConfig.from_preset("session", windw=3)
    with pytest.raises(ValueError, match="window"):
        W2VConfig.from_preset("session", window=0)


def _dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    lens = rng.integers(2, 8, 60)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    aid = rng.integers(0, 12, int(offsets[-1])).astype(np.int32)
    ts = np.arange(aid.shape[0], dtype=np.int64)
    write_dataset(tmp_path / "ds", np.arange(lens.shape[0], dtype=np.int64), offsets, aid, ts,
                  np.zeros(aid.shape[0], np.uint8))
    return tmp_path / "ds"


def test_train_cli_preset_then_explicit_flags(tmp_path, capsys):
    ds = _dataset(tmp_path)
    common = ["--vector-size", "4", "--epochs", "1", "--workers", "1", "--quiet"]
    assert cli.main([str(ds), str(tmp_path / "g"), *common]) == 0
    assert cli.main([str(ds), str(tmp_path / "s"), "--preset", "session", *common]) == 0
    # an explicit flag wins even when it equals gensim's default
    assert cli.main([str(ds), str(tmp_path / "w"), "--preset", "session", "--window", "5", *common]) == 0
    g, s, w = (load_model(tmp_path / n).meta["config"] for n in "gsw")
    for k in PRESETS["session"]:
        if k not in ("epochs", "vector_size"):   # given on the command line: the flags win
            assert g[k] == getattr(W2VConfig(workers=1), k) and s[k] == getattr(SESSION, k), k
    assert g["epochs"] == s["epochs"] == 1 and g["vector_size"] == s["vector_size"] == 4
    assert w["window"] == 5 and w["alpha"] == SESSION.alpha
    assert "trained" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", str(ds), str(tmp_path / "x"), "--preset", "nope"])
    assert exc.value.code == 2 and "nope" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_help_lists_the_presets_values(capsys):
    for main, argv in ((cli.main, ["train", "--help"]), (eval_cli.main, ["run", "--help"])):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert "--preset {gensim,session}" in text, argv
        for k, v in PRESETS["session"].items():
            assert f"{k} {v}" in text, (argv, k)


class _Captured(Exception):
    pass


def test_eval_run_defaults_to_the_session_preset(monkeypatch):
    import eval.run

    def fake_run_all(*a, w2v, **kw):
        raise _Captured(w2v)

    monkeypatch.setattr(eval.run, "run_all", fake_run_all)
    for extra, expected in (([], W2VConfig.from_preset("session", seed=42, workers=1)),
                            (["--preset", "gensim", "--window", "3", "--seed", "7"], W2VConfig(window=3, seed=7, workers=1)),
                            (["--alpha", "0.05"], W2VConfig.from_preset("session", alpha=0.05, seed=42, workers=1))):
        with pytest.raises(_Captured) as exc:
            eval_cli.main(["run", "ds", "out", "--workers", "1", "--quiet", *extra])
        assert exc.value.args[0] == expected, extra


def test_make_demo_trains_with_the_session_preset(tmp_path):
    out = subprocess.run(["make", "-n", "--always-make", f"WORK={tmp_path}", f"{tmp_path}/model/meta.json"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    train = [line for line in out.splitlines() if " -m w2v train " in line]
    assert len(train) == 1 and "--preset session" in train[0] and "--epochs" not in train[0]
    out = subprocess.run(["make", "-n", "--always-make", f"WORK={tmp_path}", "EPOCHS=2", f"{tmp_path}/model/meta.json"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "--preset session --epochs 2" in out


def test_a_flag_undoes_a_preset_switch_and_parity_refuses_shared_negatives(tmp_path, capsys):
    ds = _dataset(tmp_path)
    common = ["--vector-size", "4", "--epochs", "1", "--workers", "1", "--quiet"]
    assert SESSION.share_negatives  # the session preset turns the per-window draw on
    assert cli.main([str(ds), str(tmp_path / "p"), "--preset", "session", "--no-share-negatives", *common]) == 0
    assert load_model(tmp_path / "p").meta["config"]["share_negatives"] is False
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", str(ds), str(tmp_path / "q"), "--preset", "session", "--mode", "parity", *common])
    assert exc.value.code == 2 and "--share-negatives: needs mode 'fast'" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
    assert cli.main([str(ds), str(tmp_path / "r"), "--preset", "session", "--mode", "parity",
                     "--no-share-negatives", *common]) == 0


def test_shared_negatives_train_deterministically_and_differently():
    from w2v.trainer import Word2Vec
    seqs = [[int(x) for x in np.random.default_rng(s).integers(0, 30, 12)] for s in range(80)]

    def vectors(share):
        cfg = W2VConfig(vector_size=8, window=4, min_count=1, epochs=2, workers=1, seed=3, share_negatives=share)
        model = Word2Vec(cfg).build_vocab_from_sequences(seqs)
        model.train(progress=False)
        return model.vectors

    a, b, c = vectors(True), vectors(True), vectors(False)
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all() and not np.array_equal(a, c)


def test_the_session_preset_trains_on_collapsed_repeats_and_a_flag_undoes_it(tmp_path):
    ds = _dataset(tmp_path)   # 0..11 drawn at random: about one event in twelve repeats the one before
    from data_prep.dataset import Dataset
    d = Dataset.open(ds)
    aid, first = np.asarray(d.aid), np.zeros(d.n_events, bool)
    first[np.asarray(d.offsets)[:-1]] = True
    repeats = int(((aid[1:] == aid[:-1]) & ~first[1:]).sum())
    assert repeats > 0 and SESSION.collapse_repeats and not W2VConfig(workers=1).collapse_repeats
    common = ["--vector-size", "4", "--epochs", "1", "--workers", "1", "--quiet"]
    for name, extra, dropped in (("s", [], repeats), ("n", ["--no-collapse-repeats"], 0)):
        assert cli.main([str(ds), str(tmp_path / name), "--preset", "session", *extra, *common]) == 0
        meta = load_model(tmp_path / name).meta
        assert meta["config"]["collapse_repeats"] is (dropped > 0)
        assert meta["stats"]["corpus"]["dropped_events_by_collapse"] == dropped
        assert meta["stats"]["corpus_options"]["collapse_repeats"] is (dropped > 0)
        assert meta["stats"]["corpus"]["words"] == d.n_events - dropped
