"""Acceptance run of the evaluation: generated data -> split -> Word2Vec -> every recommender,
both protocols, plus our scorer against a plain-Python transcription of the official
``evaluate.py`` on the same files (correctness and speed ratio).

    python bench/bench_eval.py [--sessions 1000000] [--work DIR] [--out bench/out/RESULTS_eval.md]

Steps whose outputs already exist in ``--work`` (synth.jsonl, dataset/, split/, model/) are
reused and the report says so; delete the directory for a cold run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# the Word2Vec settings the figures in bench/RESULTS.md section 6 were measured with (the rest: W2VConfig's defaults)
BENCH_W2V = {"vector_size": 64, "min_count": 1}
sys.path.insert(0, str(ROOT))


def official_python_score(labels_path: Path, sub_path: Path, k: int = 20) -> dict:
    """The official evaluator's semantics in plain Python (dicts and sets), for comparison."""
    labels = {}
    with open(labels_path) as fh:
        for line in fh:
            obj = json.loads(line)
            lab = obj["labels"]
            labels[obj["session"]] = (lab.get("clicks"), set(lab.get("carts", [])), set(lab.get("orders", [])))
    preds: dict = {}
    with open(sub_path) as fh:
        next(fh)
        for line in fh:
            st, p = line.rstrip("\n").split(",")
            sid, t = st.split("_")
            preds.setdefault(int(sid), {})[t] = [int(a) for a in p.split(" ")] if p else []
    hits = {"clicks": 0, "carts": 0, "orders": 0}
    den = {"clicks": 0, "carts": 0, "orders": 0}
    for sid, (click, carts, orders) in labels.items():
        p = preds.get(sid, {})
        if click is not None:
            den["clicks"] += 1
            hits["clicks"] += click in p.get("clicks", [])[:k]
        for name, truth in (("carts", carts), ("orders", orders)):
            if truth:
                den[name] += min(len(truth), k)
                hits[name] += len(set(p.get(name, [])[:k]) & truth)
    r = {n: hits[n] / den[n] if den[n] else 0.0 for n in hits}
    r["total"] = 0.1 * r["clicks"] + 0.3 * r["carts"] + 0.6 * r["orders"]
    return r


def tune_blend(work: Path, sessions: int = 200_000, seed: int = 1, split_seed: int = 7,
               coefs=(0.05, 0.1, 0.2, 0.5, 1.0)) -> str:
    """The blend weight grid on an independent generated set (not the benchmark data)."""
    from data_prep.dataset import Dataset
    from data_prep.reader import convert
    from data_prep.synth import generate
    from eval import recommenders as R
    from eval.metrics import score
    from eval.run import train_model
    from eval.split import split_dataset
    from eval.submission import from_predictions
    from w2v.config import W2VConfig
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "dataset").exists():
        generate(work / "synth.jsonl", sessions, seed=seed, quiet=True)
        convert(work / "synth.jsonl", work / "dataset", quiet=True)
    r = split_dataset(Dataset.open(work / "dataset"), days=7, seed=split_seed)
    if not (work / "model" / "meta.json").exists():
        train_model(r.train, work / "model", W2VConfig(seed=seed, **BENCH_W2V), True)
    from w2v.model_io import load_model
    model = load_model(work / "model")
    graphs = R.build_covisit_set(r.train, R.CovisitParams())
    rows = ["| recommender | w2v_coef | clicks | carts | orders | total |", "|---|---|---|---|---|---|"]
    recs = [("covisit", None, R.make("covisit", covisit_graphs=graphs))]
    recs += [("blend", c, R.BlendRec(graphs=graphs, w2v_coef=c)) for c in coefs]
    for name, c, rec in recs:
        s = score(r.labels, from_predictions(r.test.session_ids, rec.fit(r.train, model).predict(r.test, 20)))
        rows.append(f"| {name} | {'' if c is None else c} | {s['clicks']:.4f} | {s['carts']:.4f} | {s['orders']:.4f} | {s['total']:.4f} |")
    return "\n".join(rows)


def environment() -> dict:
    import numba
    return {
        "date": subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip(),
        "machine": "2-core x86_64 shared VM",
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1_000_000, help="generated sessions (default 1,000,000)")
    ap.add_argument("--items", type=int, default=None, help="catalogue size (default: the generator's calibrated N/6.952)")
    ap.add_argument("--seed", type=int, default=42, help="seed of generation, split, training (default 42)")
    ap.add_argument("--epochs", type=int, default=5, help="Word2Vec epochs (default 5)")
    ap.add_argument("--vector-size", type=int, default=64, help="Word2Vec vector size (default 64)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "otto_bench_eval"),
                    help="working directory (default: otto_bench_eval in the system temporary directory)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "RESULTS_eval.md"), help="results file to write (section 6 of bench/RESULTS.md is a copy of one)")
    ap.add_argument("--next-click-sessions", type=int, default=5000,
                    help="full test sessions sampled for next click at every position (default 5000)")
    ap.add_argument("--tune", action="store_true",
                    help="only run the blend-weight grid on an independent 200k-session set (generator seed 1) and print it")
    args = ap.parse_args(argv)
    if args.tune:
        print(tune_blend(Path(args.work) / "tune"))
        return 0

    from data_prep.dataset import Dataset
    from data_prep.reader import convert
    from data_prep.synth import generate
    from eval.labels import read_labels
    from eval.metrics import score
    from eval.report import markdown
    from eval.run import run_all, train_model
    from w2v.config import W2VConfig
    from eval.split import SplitParams, split_dataset, write_split
    from eval.submission import read_submission

    env = environment()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    notes, steps = [], {}
    t = time.perf_counter()
    if not (work / "synth.jsonl").exists():
        generate(work / "synth.jsonl", args.sessions, args.items, seed=args.seed, quiet=True)
    else:
        notes.append("synth.jsonl was already in the work directory (not regenerated)")
    steps["generate"] = time.perf_counter() - t
    t = time.perf_counter()
    if not (work / "dataset").exists():
        convert(work / "synth.jsonl", work / "dataset", quiet=True)
    else:
        notes.append("dataset/ was already there (not reconverted)")
    steps["convert"] = time.perf_counter() - t
    ds = Dataset.open(work / "dataset")
    if ds.n_sessions != args.sessions:
        raise SystemExit(f"{work}/dataset holds {ds.n_sessions} sessions, not {args.sessions}: use another --work")
    t = time.perf_counter()
    if not (work / "split").exists():
        write_split(split_dataset(ds, days=7, seed=args.seed), work / "split")
    else:
        notes.append("split/ was already there (not resplit)")
    steps["split (write)"] = time.perf_counter() - t
    w2v = W2VConfig(seed=args.seed, **dict(BENCH_W2V, epochs=args.epochs, vector_size=args.vector_size))
    params = {k: v for k, v in w2v.to_dict().items() if k in ("vector_size", "window", "negative", "sample", "epochs",
                                                              "min_count")}
    t = time.perf_counter()
    if not (work / "model" / "meta.json").exists():
        train_model(Dataset.open(work / "split" / "train"), work / "model", w2v, False)
    else:
        notes.append("model/ was already there (not retrained; the flags below are the ones it was trained with)")
    steps["w2v training (train split)"] = time.perf_counter() - t

    report = run_all(str(work / "dataset"), str(work / "report"), split_dir=str(work / "split"),
                     split=SplitParams(seed=args.seed),
                     model_dir=str(work / "model"), w2v=w2v, next_click_sessions=args.next_click_sessions,
                     keep_submissions=True, overwrite=True, do_plot=False)

    # our scorer vs the plain-Python official semantics, on the blend submission files
    labels_p, sub_p = work / "split" / "test_labels.jsonl", work / "report" / "submission_blend.csv"
    t = time.perf_counter()
    ours = score(read_labels(labels_p), read_submission(sub_p))
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    ref = official_python_score(labels_p, sub_p)
    ref_s = time.perf_counter() - t
    agree = all(abs(ours[k] - ref[k]) < 1e-12 for k in ref)

    res = report["otto"]["results"]
    lines = ["# Evaluation benchmark (bench/bench_eval.py)", "",
             "| environment | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env.items()] + [
             f"| sessions generated | {ds.n_sessions:,} ({ds.n_events:,} events) |",
             f"| Word2Vec | {', '.join(f'{k}={v}' for k, v in params.items())}, seed {args.seed} |", ""]
    if notes:
        lines += ["Reused from the work directory, so their preparation times below are 0: " + "; ".join(notes) + ".", ""]
    lines += [markdown(report), "",
              "## Acceptance checks", "",
              f"* Word2Vec vs baselines (OTTO total): w2v-item {res['w2v-item']['total']:.4f}, w2v-session "
              f"{res['w2v-session']['total']:.4f} vs random {res['random']['total']:.4f} and popular {res['popular']['total']:.4f}.",
              f"* blend vs co-visitation (OTTO total): {res['blend']['total']:.4f} vs {res['covisit']['total']:.4f} "
              f"(ratio {res['blend']['total'] / max(res['covisit']['total'], 1e-12):.3f}).",
              f"* scorer: ours {ours_s:.2f} s vs plain-Python official semantics {ref_s:.2f} s "
              f"(speed-up x{ref_s / max(ours_s, 1e-9):.1f}); results identical: {agree}.", "",
              "## Preparation steps (s)", "", "| step | seconds |", "|---|---|"] + [
              f"| {k} | {v:.1f} |" for k, v in steps.items()]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
