"""otto-eval end to end on the real 20-session sample: split -> predict -> score, run, help, errors."""
import json
from pathlib import Path

import pytest

from eval.cli import build_parser, main

SAMPLE = Path(__file__).parent / "data" / "otto_sample_train.jsonl"


@pytest.fixture(scope="module")
def sample_split(tmp_path_factory):
    from data_prep.reader import convert
    root = tmp_path_factory.mktemp("evalcli")
    convert(SAMPLE, root / "ds", quiet=True)
    assert main(["split", str(root / "ds"), str(root / "split"), "--days", "7", "--seed", "42", "--quiet"]) == 0
    return root


def test_help_explains_every_flag(capsys):
    for cmd in ("split", "predict", "score", "pairs", "run"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        sub = build_parser()._subparsers._group_actions[0].choices[cmd]
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{cmd} {action.option_strings} has no help"
                assert action.option_strings[-1] in out, f"{cmd} --help does not show {action.option_strings[-1]}"


def test_split_predict_score(sample_split, capsys):
    root = sample_split
    split = root / "split"
    sub = root / "pop.csv"
    assert main(["predict", "--recommender", "popular", "--train", str(split / "train"),
                 str(split / "test_sessions.jsonl"), str(sub), "--quiet"]) == 0
    lines = sub.read_text().splitlines()
    assert lines[0] == "session_type,labels"
    n_test = len((split / "test_sessions.jsonl").read_text().splitlines())
    assert len(lines) == 1 + 3 * n_test
    capsys.readouterr()
    assert main(["score", str(split / "test_labels.jsonl"), str(sub)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    s = json.loads(out[0])
    assert set(s) == {"clicks", "carts", "orders", "total"}
    assert s["total"] == pytest.approx(0.1 * s["clicks"] + 0.3 * s["carts"] + 0.6 * s["orders"])
    # a perfect submission built from the labels scores 1 on every type that has truth
    perfect = ["session_type,labels"]
    for line in (split / "test_labels.jsonl").read_text().splitlines():
        obj = json.loads(line)
        lab = obj["labels"]
        perfect.append(f"{obj['session']}_clicks,{lab.get('clicks', '')}")
        perfect.append(f"{obj['session']}_carts,{' '.join(map(str, lab.get('carts', [])))}")
        perfect.append(f"{obj['session']}_orders,{' '.join(map(str, lab.get('orders', [])))}")
    (root / "perfect.csv").write_text("\n".join(perfect) + "\n")
    main(["score", str(split / "test_labels.jsonl"), str(root / "perfect.csv"), "--detail"])
    s = json.loads(capsys.readouterr().out)
    for t in ("clicks", "carts", "orders"):
        assert s[t] == (1.0 if s["truths"][t] else 0.0)


def test_errors_are_one_line(sample_split, capsys, tmp_path):
    rc = main(["score", str(tmp_path / "missing.jsonl"), str(tmp_path / "missing.csv")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and err.startswith("otto-eval score: error:")
    rc = main(["predict", "--recommender", "blend", "--train", str(sample_split / "split" / "train"),
               str(sample_split / "split" / "test_sessions.jsonl"), str(tmp_path / "x.csv"), "--quiet"])
    assert rc == 1 and "needs a Word2Vec model" in capsys.readouterr().err
    rc = main(["split", str(sample_split / "ds"), str(sample_split / "split"), "--quiet"])
    assert rc == 1 and "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_run_writes_report(sample_split, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["run", str(sample_split / "ds"), str(out), "--split", str(sample_split / "split"),
               "--epochs", "1", "--vector-size", "8", "--ne-types", "carts,orders", "--ne-min-len", "2",
               "--ne-test-size", "0.25", "--ne-valid-size", "0.25", "--quiet", "--keep-submissions", "--plot"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert list(rep["otto"]["results"]) == ["random", "popular", "history", "covisit", "w2v-item", "w2v-session", "blend"]
    for r in rep["otto"]["results"].values():
        assert 0 <= r["total"] <= 1 and 0 <= r["next_click"]["recall"] <= 1
    assert set(rep["nextevent"]["results"]) == {"random", "popular", "covisit", "w2v-item"}
    assert "| blend |" in (out / "report.md").read_text()
    assert (out / "submission_blend.csv").exists() and (out / "model" / "vectors.npy").exists()
    assert (out / "recall_at_k.png").stat().st_size > 0 and (out / "loss.png").stat().st_size > 0
    curve = rep["otto"]["results"]["covisit"]["curve"]["total"]
    assert len(curve) == 20 and all(a <= b + 1e-12 for a, b in zip(curve, curve[1:]))  # recall@k grows with k
    assert "| blend |" in capsys.readouterr().out


def test_run_subset_without_model_skips_an_empty_pair_protocol(sample_split, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", str(sample_split / "ds"), str(out), "--recommenders", "random,popular,history",
                 "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert list(rep["otto"]["results"]) == ["random", "popular", "history"]
    assert "skipped" in rep["nextevent"] and "model" not in rep["info"]
    assert (out / "split" / "test_labels.jsonl").exists()   # split made here is kept with the report
    capsys.readouterr()
    assert main(["run", str(sample_split / "ds"), str(out), "--recommenders", "nope", "--quiet"]) == 1
    assert "unknown name 'nope'" in capsys.readouterr().err
    assert main(["run", str(sample_split / "ds"), str(out), "--recommenders", "random", "--quiet"]) == 1
    assert "already exists" in capsys.readouterr().err
