"""``otto-eval``: split, predict, score, pairs and run.

Each subcommand is registered by ``register(subparsers)`` and returns an exit status; errors meant
for the user (``ValueError``/``OSError``) are printed as one line, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from data_prep.atomic import check_output
from data_prep.command import run_command
from data_prep.dataset import Dataset


# ------------------------------------------------------------------------------------- predict
def _register_predict(sub) -> None:
    from . import recommenders as R
    from .recommenders import NAMES
    p = sub.add_parser("predict", help="write a Kaggle submission CSV for test sessions",
                       description="Fit a recommender on the train dataset (and model) and write its top-k clicks, carts "
                                   "and orders for every session of TEST.jsonl as a Kaggle submission CSV.")
    p.add_argument("test", metavar="TEST.jsonl", help="test sessions in OTTO JSONL (e.g. test_sessions.jsonl of 'otto-eval split')")
    p.add_argument("out", metavar="OUT.csv", help="submission CSV to write (atomically)")
    p.add_argument("--recommender", required=True, choices=NAMES, metavar="NAME", help=f"one of {', '.join(NAMES)}")
    p.add_argument("--train", required=True, metavar="DATASET", help="train dataset directory (e.g. OUT_DIR/train of 'otto-eval split')")
    p.add_argument("--model", metavar="MODEL_DIR", help="Word2Vec model directory (needed by w2v-item, w2v-session and blend)")
    p.add_argument("--k", type=int, default=20, help="predictions per session and type (default 20)")
    p.add_argument("--seed", type=int, default=42, help="seed of the random recommender (default 42)")
    R.add_tuning_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    from . import recommenders as R
    from .sessions_io import read_sessions
    from .submission import from_predictions, write_submission
    check_output(args.out, (args.test, args.train, args.model))
    if args.k < 1:
        raise ValueError(f"--k: must be >= 1, got {args.k}")
    t0 = time.perf_counter()
    rec = R.make(args.recommender, seed=args.seed, covisit_params=R.CovisitParams(n_parts=args.n_parts),
                 progress=not args.quiet, w2v_coef=args.w2v_coef)
    model = None
    if rec.needs_model:
        if not args.model:
            raise ValueError(f"--model: recommender {args.recommender!r} needs a Word2Vec model directory")
        from w2v.model_io import load_model
        model = load_model(args.model)
    train = Dataset.open(args.train)
    test = read_sessions(args.test)
    rec.fit(train, model)
    preds = rec.predict(test, args.k)
    write_submission(from_predictions(test.session_ids, preds), args.out)
    if not args.quiet:
        print(f"predict: {args.recommender} for {test.n_sessions} sessions in {time.perf_counter() - t0:.1f}s -> {args.out}",
              file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------- score
def _register_score(sub) -> None:
    p = sub.add_parser("score", help="OTTO weighted recall@20 of a submission (one JSON line)",
                       description="Score a submission CSV against labels JSONL: prints "
                                   "{\"clicks\":…,\"carts\":…,\"orders\":…,\"total\":…} on stdout "
                                   "(total = 0.10 clicks + 0.30 carts + 0.60 orders).")
    p.add_argument("labels", metavar="LABELS.jsonl", help="test_labels.jsonl of 'otto-eval split'")
    p.add_argument("submission", metavar="SUBMISSION.csv", help="Kaggle submission CSV")
    p.add_argument("--k", type=int, default=20, help="recall cutoff (default 20)")
    p.add_argument("--detail", action="store_true", help="also print hits, truth counts and sessions without prediction")
    p.set_defaults(func=_cmd_score)


def _cmd_score(args) -> int:
    from .labels import read_labels
    from .metrics import score
    from .submission import read_submission
    s = score(read_labels(args.labels), read_submission(args.submission), k=args.k, detail=args.detail)
    print(json.dumps(s))
    return 0


# --------------------------------------------------------------------------------------- pairs
def _register_pairs(sub) -> None:
    p = sub.add_parser("pairs", help="the original study's (second-to-last -> last) protocol",
                       description="Keep events of --types, sessions with at least --min-len of them; train on each "
                                   "sequence without its last item; score recall@k and MRR@k of the random, popularity, "
                                   "co-visitation and Word2Vec (neighbours of the query) recommenders on disjoint test and "
                                   "validation pairs. Prints one JSON line.")
    p.add_argument("dataset", metavar="DATASET", help="dataset directory")
    p.add_argument("--types", default="orders", help="event types kept (default orders)")
    p.add_argument("--min-len", type=int, default=3, help="minimum kept events per session (default 3: more than 2 orders)")
    p.add_argument("--test-size", type=float, default=0.1, help="fraction of eligible sessions giving test pairs (default 0.1)")
    p.add_argument("--valid-size", type=float, default=0.1, help="fraction giving validation pairs (default 0.1)")
    p.add_argument("--k", type=int, default=20, help="cutoff (default 20)")
    p.add_argument("--seed", type=int, default=42, help="seed of the sampling, training and random baseline (default 42)")
    p.add_argument("--model", metavar="MODEL_DIR", help="use this model (must be trained on the pair protocol's train part) instead of training one")
    from .run import TRAIN_FLAGS
    for name, (typ, default, hlp) in TRAIN_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=default, help=f"{hlp} when training (default {default})")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_pairs)


def _cmd_pairs(args) -> int:
    import tempfile
    from pathlib import Path

    from . import recommenders as R
    from .nextevent import eval_pairs, pair_split
    from .run import TRAIN_FLAGS, train_model
    ds = Dataset.open(args.dataset)
    ps = pair_split(ds, types=args.types, min_len=args.min_len, test_size=args.test_size,
                    valid_size=args.valid_size, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            from w2v.model_io import load_model
            model = load_model(args.model)
        else:
            model = train_model(ps.train, Path(tmp) / "m", {k: getattr(args, k) for k in TRAIN_FLAGS}, args.seed,
                                None, args.quiet)
        out = {"split": ps.stats, "results": {}}
        for name in ("random", "popular", "covisit", "w2v-item"):
            rec = R.make(name, seed=args.seed).fit(ps.train, model)
            out["results"][name] = {
                "test": eval_pairs(rec, ps.test_query, ps.test_target, ps.test_type, (args.k,))[args.k],
                "valid": eval_pairs(rec, ps.valid_query, ps.valid_target, ps.valid_type, (args.k,))[args.k]}
    print(json.dumps(out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import run, split
    parser = argparse.ArgumentParser(
        prog="otto-eval",
        description="Evaluate session recommenders: the official OTTO split and weighted recall@20, Kaggle submissions, "
                    "next-click recall/MRR, the original study's pair protocol, and a full comparison report.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    split.register(sub)
    _register_predict(sub)
    _register_score(sub)
    _register_pairs(sub)
    run.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
