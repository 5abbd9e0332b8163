"""Which session rule scores best on held-out data: weighted recall@20 (official OTTO protocol).

Usage::

    otto-prep synth S.jsonl --sessions 200000 --seed 1 && otto-prep convert S.jsonl DS
    otto-eval split DS SPLIT --days 7 --seed 7 && otto-train train SPLIT/train MODEL --epochs 5 --seed 42
    python bench/bench_session_rule.py SPLIT MODEL

Every variant answers every cut test session with ``w2v.session.recommend`` (the function the
service and ``otto-eval`` use); the last line of each session's ranked list is padded with the
popular aids of the target type, as ``otto-eval``'s ``w2v-session`` does. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from data_prep.dataset import Dataset
from eval.labels import read_labels
from eval.metrics import score
from eval.recommenders import popular_lists
from eval.sessions_io import read_sessions
from eval.submission import from_predictions
from w2v.keyed import KeyedVectors
from w2v.model_io import load_model
from w2v.session import SessionRule, recommend

VARIANTS = [
    ("served before: weights 1,3,6, decay 0.9, all events, exclude session aids",
     SessionRule((1.0, 3.0, 6.0), "decay", 0.9, None, True)),
    ("same, without exclusion", SessionRule((1.0, 3.0, 6.0), "decay", 0.9, None, False)),
    ("evaluated before: weights 1,6,3, log2 recency, last 30, no exclusion",
     SessionRule((1.0, 6.0, 3.0), "log2", 0.9, 30, False)),
    ("same, with exclusion", SessionRule((1.0, 6.0, 3.0), "log2", 0.9, 30, True)),
    ("weights 1,6,3, decay 0.9, all events, no exclusion", SessionRule((1.0, 6.0, 3.0), "decay", 0.9, None, False)),
    ("weights 1,3,6, log2 recency, last 30, no exclusion", SessionRule((1.0, 3.0, 6.0), "log2", 0.9, 30, False)),
    ("weights 1,3,6, decay 0.9, last 30, no exclusion", SessionRule((1.0, 3.0, 6.0), "decay", 0.9, 30, False)),
    ("weights 1,6,3, decay 0.8, all events, no exclusion", SessionRule((1.0, 6.0, 3.0), "decay", 0.8, None, False)),
    ("weights 1,6,3, decay 0.95, all events, no exclusion", SessionRule((1.0, 6.0, 3.0), "decay", 0.95, None, False)),
    ("weights 1,6,3, decay 0.7, all events, no exclusion", SessionRule((1.0, 6.0, 3.0), "decay", 0.7, None, False)),
    ("weights 1,6,3, decay 0.6, all events, no exclusion", SessionRule((1.0, 6.0, 3.0), "decay", 0.6, None, False)),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("split", help="output directory of 'otto-eval split'")
    p.add_argument("model", help="model directory trained on SPLIT/train")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--only", default=None, help="comma-separated variant numbers (from 0) to run")
    p.add_argument("--blend", default=None, metavar="COEFS",
                   help="also score co-visitation and the blend at these comma-separated --w2v-coef values")
    args = p.parse_args(argv)
    train = Dataset.open(os.path.join(args.split, "train"))
    test = read_sessions(os.path.join(args.split, "test_sessions.jsonl"))
    labels = read_labels(os.path.join(args.split, "test_labels.jsonl"))
    kv = KeyedVectors.from_model(load_model(args.model))
    popular = popular_lists(train)
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {os.getloadavg()}; "
          f"{platform.machine()}, {os.cpu_count()} CPUs; train {train.n_sessions} sessions, "
          f"test {test.n_sessions} sessions, vocabulary {len(kv)} x {kv.vector_size}", file=sys.stderr)
    print("| rule | clicks | carts | orders | **total** | s |")
    print("|---|---|---|---|---|---|")
    pick = range(len(VARIANTS)) if args.only is None else [int(x) for x in args.only.split(",")]
    for name, rule in [VARIANTS[i] for i in pick]:
        t0 = time.perf_counter()
        res = recommend(kv, test.offsets, test.aid, test.type, args.k, rule)
        preds = {}
        for t in range(3):
            out = res.aids.copy()
            for s in np.flatnonzero((out < 0).any(axis=1)):  # pad as otto-eval does: popular, no repeats
                have = [a for a in out[s] if a >= 0]
                fill = [a for a in popular[t] if a not in set(have)][:args.k - len(have)]
                out[s, len(have):len(have) + len(fill)] = fill
            preds[t] = out
        sec = time.perf_counter() - t0
        s = score(labels, from_predictions(test.session_ids, preds), k=args.k)
        print(f"| {name} | {s['clicks']:.4f} | {s['carts']:.4f} | {s['orders']:.4f} | **{s['total']:.4f}** | "
              f"{sec:.1f} |", flush=True)
    if args.blend:
        from eval import recommenders as R
        graphs = R.build_covisit_set(train, R.CovisitParams())
        model = load_model(args.model)
        print("\n| recommender | w2v_coef | clicks | carts | orders | **total** | s |\n|---|---|---|---|---|---|---|")
        for name, coef in [("covisit", None)] + [("blend", float(c)) for c in args.blend.split(",")]:
            t0 = time.perf_counter()
            rec = R.make(name, covisit_graphs=graphs, **({} if coef is None else {"w2v_coef": coef}))
            preds = rec.fit(train, model).predict(test, args.k)
            s = score(labels, from_predictions(test.session_ids, preds), k=args.k)
            print(f"| {name} | {'' if coef is None else coef} | {s['clicks']:.4f} | {s['carts']:.4f} | "
                  f"{s['orders']:.4f} | **{s['total']:.4f}** | {time.perf_counter() - t0:.1f} |", flush=True)
    print(f"load after: {os.getloadavg()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
