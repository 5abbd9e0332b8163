"""otto-eval end to end on the real 20-session sample: split -> predict -> score, run, help, errors."""
import json
import re
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
    rc = _status(["predict", "--recommender", "blend", "--train", str(sample_split / "split" / "train"),
                  str(sample_split / "split" / "test_sessions.jsonl"), str(tmp_path / "x.csv"), "--quiet"])
    assert rc == 2 and "otto-eval predict: error: --model: recommender 'blend' needs" in capsys.readouterr().err
    rc = main(["split", str(sample_split / "ds"), str(sample_split / "split"), "--quiet"])
    assert rc == 1 and "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_run_writes_report(sample_split, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["run", str(sample_split / "ds"), str(out), "--split", str(sample_split / "split"),
               "--epochs", "1", "--vector-size", "8", "--min-count", "1", "--ne-types", "carts,orders", "--ne-min-len", "2",
               "--ne-test-size", "0.25", "--ne-valid-size", "0.25", "--keep-submissions", "--plot"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert list(rep["otto"]["results"]) == ["random", "popular", "history", "covisit", "w2v-item", "w2v-session", "blend"]
    for r in rep["otto"]["results"].values():
        assert 0 <= r["total"] <= 1 and 0 <= r["next_click"]["recall"] <= 1
    assert set(rep["nextevent"]["results"]) == {"random", "popular", "covisit", "w2v-item"}
    assert "| blend |" in (out / "report.md").read_text()
    assert (out / "submission_blend.csv").exists() and (out / "model" / "vectors.npy").exists()
    md = (out / "report.md").read_text()
    for png in ("events_per_aid.png", "recall_at_k.png", "loss.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"]({png})" in md, f"report.md does not embed {png}"
    assert rep["plots"] == ["events_per_aid.png", "recall_at_k.png", "loss.png"]
    for name, r in rep["otto"]["results"].items():   # the curve's last point is the table's figure
        assert r["curve"]["total"][-1] == pytest.approx(r["total"]), name
    # what each number is: the weights, types by name, the original study by name and link
    assert "0.10 × clicks + 0.30 × carts + 0.60 × orders" in md and "min(20, |truth|)" in md
    assert "types carts, orders;" in md and "Types [" not in md
    assert "[hejfelix/otto-recommender](https://github.com/hejfelix/otto-recommender)" in md
    # the time rows add up to the stated total, next click included
    t = rep["timings"]
    assert "recommenders: next click at every position" in t
    rows = re.findall(r"^\| (.+?) \| \**([0-9.]+)\** \|$", md.split("## Time taken (s)")[1], flags=re.M)
    assert rows[-1][0] == "**total**" and float(rows[-1][1]) == pytest.approx(t["total"], abs=0.05)
    assert sum(float(v) for _, v in rows[:-1]) == pytest.approx(t["total"], abs=0.05 * len(rows))
    # both trainings are labelled in the progress log; the report goes to stdout
    captured = capsys.readouterr()
    assert "training Word2Vec model 1/2: on the OTTO train split (10 sessions)" in captured.err
    assert "training Word2Vec model 2/2: on the original-study pairs' train part" in captured.err
    assert "| blend |" in captured.out


def test_run_subset_without_model_skips_an_empty_pair_protocol(sample_split, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", str(sample_split / "ds"), str(out), "--recommenders", "random,popular,history",
                 "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert list(rep["otto"]["results"]) == ["random", "popular", "history"]
    assert "skipped" in rep["nextevent"] and "model" not in rep["info"]
    assert (out / "split" / "test_labels.jsonl").exists()   # split made here is kept with the report
    capsys.readouterr()
    assert _status(["run", str(sample_split / "ds"), str(out), "--recommenders", "nope", "--quiet"]) == 2
    assert "otto-eval run: error: --recommenders: unknown name 'nope'" in capsys.readouterr().err
    assert main(["run", str(sample_split / "ds"), str(out), "--recommenders", "random", "--quiet"]) == 1
    assert "already exists" in capsys.readouterr().err


def _status(argv) -> int:
    """Exit status of ``otto-eval ARGV``, whether argparse exits or ``main`` returns."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("argv, message", [
    (["--k", "0"], "--k: must be an integer >= 1, got 0"),
    (["--k", "x"], "--k: expected an integer, got 'x'"),
    (["--max-hist", "0"], "--max-hist: must be an integer >= 1, got 0"),
    (["--next-click-sessions", "-1"], "--next-click-sessions: must be an integer >= 0, got -1"),
    (["--epochs", "0"], "--epochs: must be >= 1"),
    (["--vector-size", "0"], "--vector-size: must be >= 1"),
    (["--days", "0"], "--days: must be a number > 0"),
    (["--ne-min-len", "1"], "--ne-min-len: must be >= 2"),
    (["--ne-types", "views"], "--ne-types: unknown event type 'views'"),
    (["--ne-test-size", "0.7", "--ne-valid-size", "0.7"], "--ne-test-size: test_size + valid_size must be <= 1"),
    (["--n-parts", "0"], "--n-parts: must be an integer >= 1"),
    (["--type-weight", "1,2"], "--type-weight: expected 3 comma-separated numbers"),
    (["--mode", "slow"], "--mode: invalid choice: 'slow'"),
    (["--seed", "-1"], "--seed: must be an integer >= 0"),
    (["--seed", str(2**32)], "--seed: must be an integer in [0, 2**32)"),
])
def test_run_validates_every_argument_before_any_work(tmp_path, capsys, argv, message):
    """A bad argument fails at once with one line and exit status 2, before the dataset is even
    opened (DATASET does not exist here, so any work would fail differently)."""
    rc = _status(["run", str(tmp_path / "no-such-dataset"), str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("otto-eval run: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_type_errors_are_one_line_without_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["split", "a", "b", "--days", "soon"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == "otto-eval split: error: --days: expected a finite number, got 'soon'\n"


def test_split_empty_side_is_an_error(sample_split, tmp_path, capsys):
    rc = main(["split", str(sample_split / "ds"), str(tmp_path / "s"), "--days", "400"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("otto-eval split: error: split: 0 train sessions") and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_split_summary_has_thousands_separators():
    from eval.split import summary
    line = summary({"train_sessions": 1234567, "train_events": 98765432, "test_sessions": 4321,
                    "test_events_unknown_aid_dropped": 1000, "test_sessions_dropped_short": 12})
    assert line == ("train 1,234,567 sessions / 98,765,432 events; test 4,321 sessions "
                    "(1,000 unknown-aid events and 12 short sessions dropped)")


def test_run_trains_with_otto_train_defaults():
    """``otto-eval run`` and ``otto-train`` declare the Word2Vec flags once: same names, same defaults."""
    from w2v.cli import build_parser as train_parser
    from w2v.config import W2VConfig
    from w2v.trainer import config_from_flags

    run = build_parser().parse_args(["run", "D", "O"])
    train = train_parser().parse_args(["train", "D", "M"])
    assert config_from_flags(run, seed=1) == config_from_flags(train) == W2VConfig(seed=1)
    run = build_parser().parse_args(["run", "D", "O", "--vector-size", "16", "--min-count", "2", "--seed", "7"])
    assert config_from_flags(run, seed=run.seed) == W2VConfig(vector_size=16, min_count=2, seed=7)


def test_pairs_trains_in_scratch_space_and_leaves_none(sample_split, tmp_path, monkeypatch, capsys):
    """The pair protocol's model is scratch (data_prep.atomic.scratch_directory in the system
    temporary directory): removed afterwards, and a killed run's copy is removed by the next run."""
    import os
    import subprocess
    import sys
    import tempfile
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp / f".otto-eval-pairs.tmp-{dead.pid}-0badc0de"
    (stale / "m").mkdir(parents=True)
    capsys.readouterr()
    assert main(["pairs", str(sample_split / "ds"), "--types", "clicks", "--min-len", "2", "--test-size", "0.3",
                 "--valid-size", "0.3", "--epochs", "1", "--vector-size", "8", "--workers", "1", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["results"]) == {"random", "popular", "covisit", "w2v-item"} and out["split"]["test_pairs"] > 0
    assert os.listdir(tmp) == []
