"""``otto-eval``: split, predict, score, pairs and run.

Each subcommand is registered by ``register(subparsers)`` and returns an exit status; errors meant
for the user (``ValueError``/``OSError``) are printed as one line, never a traceback.
"""
from __future__ import annotations

import json
import sys
import time

from data_prep.atomic import check_output
from data_prep.command import ArgumentParser, UsageError, run_command
from data_prep.dataset import Dataset
from data_prep.flags import add_config_flags, add_run_flags, config_from_args
from w2v.trainer import add_config_flags as add_w2v_flags

from .nextevent import PairParams
from .run import EvalParams


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
    add_config_flags(p, EvalParams, only=("k",))
    p.add_argument("--seed", type=int, default=42, metavar="N", help="seed of the random recommender (default: 42)")
    R.add_tuning_flags(p)
    add_run_flags(p, quiet=True)
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    from . import recommenders as R
    from .sessions_io import read_sessions
    from .submission import from_predictions, write_submission
    from w2v.index import method_params
    covisit, w2v_coef = R.tuning_from_flags(args)
    k = config_from_args(EvalParams, args).k
    ivf_params = method_params(args)
    check_output(args.out, (args.test, args.train, args.model))
    t0 = time.perf_counter()
    rec = R.make(args.recommender, seed=args.seed, covisit_params=covisit, progress=not args.quiet, w2v_coef=w2v_coef,
                 answers=R.SessionAnswers(args.method, ivf_params))
    model = None
    if rec.needs_model:
        if not args.model:
            raise UsageError(f"--model: recommender {args.recommender!r} needs a Word2Vec model directory")
        from w2v.model_io import load_model
        model = load_model(args.model)
    train = Dataset.open(args.train)
    test = read_sessions(args.test)
    rec.fit(train, model)
    preds = rec.predict(test, k)
    write_submission(from_predictions(test.session_ids, preds), args.out)
    if not args.quiet:
        print(f"predict: {args.recommender} for {test.n_sessions:,} sessions in {time.perf_counter() - t0:.1f}s -> {args.out}",
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
    add_config_flags(p, EvalParams, only=("k",))
    p.add_argument("--detail", action="store_true", help="also print hits, truth counts and sessions without prediction")
    p.set_defaults(func=_cmd_score)


def _cmd_score(args) -> int:
    from .labels import read_labels
    from .metrics import score
    from .submission import read_submission
    k = config_from_args(EvalParams, args).k
    s = score(read_labels(args.labels), read_submission(args.submission), k=k, detail=args.detail)
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
    add_config_flags(p, PairParams)
    add_config_flags(p, EvalParams, only=("k",))
    p.add_argument("--seed", type=int, default=42, metavar="N",
                   help="seed of the sampling, training and random baseline (default: 42)")
    p.add_argument("--model", metavar="MODEL_DIR", help="use this model (must be trained on the pair protocol's train part) instead of training one")
    add_w2v_flags(p, exclude=("seed",))
    add_run_flags(p, quiet=True)
    p.set_defaults(func=_cmd_pairs)


def _cmd_pairs(args) -> int:
    import tempfile
    from pathlib import Path

    from data_prep.atomic import scratch_directory
    from w2v.trainer import config_from_flags

    from . import recommenders as R
    from .nextevent import eval_pairs, pair_split
    from .run import train_model
    pp = config_from_args(PairParams, args)
    k = config_from_args(EvalParams, args).k
    w2v = None if args.model else config_from_flags(args, seed=args.seed)
    ds = Dataset.open(args.dataset)
    ps = pair_split(ds, types=pp.types, min_len=pp.min_len, test_size=pp.test_size,
                    valid_size=pp.valid_size, seed=args.seed)
    if ps.stats["test_pairs"] == 0:
        raise ValueError(f"{args.dataset}: no test pair: {ps.stats['eligible_sessions']} sessions have at least "
                         f"{pp.min_len} events of types {pp.types}")
    # the model trained here is scratch: a killed run's copy is removed by the next pairs run
    with scratch_directory(Path(tempfile.gettempdir()) / "otto-eval-pairs") as tmp:
        if args.model:
            from w2v.model_io import load_model
            model = load_model(args.model)
        else:
            model = train_model(ps.train, tmp / "m", w2v, args.quiet)
        out = {"split": ps.stats, "results": {}}
        for name in ("random", "popular", "covisit", "w2v-item"):
            rec = R.make(name, seed=args.seed).fit(ps.train, model)
            out["results"][name] = {
                "test": eval_pairs(rec, ps.test_query, ps.test_target, ps.test_type, (k,))[k],
                "valid": eval_pairs(rec, ps.valid_query, ps.valid_target, ps.valid_type, (k,))[k]}
    print(json.dumps(out))
    return 0


def build_parser() -> ArgumentParser:
    from . import run, split
    parser = ArgumentParser(
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
