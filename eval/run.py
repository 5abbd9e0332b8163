"""``otto-eval run``: split, train (unless a model is given), predict with every recommender,
score both protocols, and write one report (Markdown + JSON, optional plots).

Every argument is validated before any work starts; the Word2Vec flags are ``otto-train``'s own
(``w2v.trainer.add_config_flags``), so both train with the same defaults."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.atomic import atomic_directory, check_output
from data_prep.dataset import Dataset
from data_prep.npyio import read_json

from . import recommenders as R
from .labels import read_labels
from .metrics import score, score_curve
from .nextevent import PairParams, eval_next_click, eval_pairs, pair_split, prefix_sessions
from .report import check_plotting, markdown, plot, write_report
from .sessions_io import read_sessions
from .split import SplitParams, require_nonempty, split_dataset, summary, write_split
from .submission import from_predictions, write_submission

class _Log:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def train_model(train: Dataset, out_dir: Path, config, quiet: bool):
    """Train Word2Vec (a ``W2VConfig``) on ``train`` and return the loaded model (saved in ``out_dir``)."""
    from w2v.model_io import load_model
    from w2v.trainer import Word2Vec
    m = Word2Vec(config)
    m.build_vocab(train)
    m.train(progress=not quiet)
    m.save(out_dir, overwrite=True)
    return load_model(out_dir)


@dataclass(frozen=True)
class EvalParams:
    """What is scored, for every ``otto-eval`` command that scores (``--k`` is shared by all of them).

    k                    list length per session and type, and the recall / MRR cutoff.
    next_click_sessions  full test sessions sampled for the next click at every position (0 = all).
    max_hist             events of a prefix the recommenders see in the next-click protocol.
    """

    k: int = 20
    next_click_sessions: int = 20_000
    max_hist: int = 30

    def __post_init__(self) -> None:
        for name, lo in (("k", 1), ("next_click_sessions", 0), ("max_hist", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: must be an integer >= {lo}, got {v!r}")


def _check(names, k: int, next_click_sessions: int | None, max_hist: int) -> None:
    for n in names:
        if n not in R.NAMES:
            raise ValueError(f"recommenders: unknown name {n!r} (expected some of {', '.join(R.NAMES)})")
    if not names:
        raise ValueError("recommenders: none given")
    EvalParams(k, next_click_sessions or 0, max_hist)  # validates


def run_all(dataset: str, out_dir: str, *, split_dir: str | None = None, split: SplitParams | None = None,
            model_dir: str | None = None, w2v=None, names=R.NAMES, k: int = 20,
            next_click_sessions: int | None = 20_000, max_hist: int = 30, pairs: PairParams | None = None,
            covisit_params: R.CovisitParams | None = None, w2v_coef: float = 0.05, knn_method: str = "auto",
            ivf_params=None, do_plot: bool = False,
            keep_submissions: bool = False, overwrite: bool = False, quiet: bool = False) -> dict:
    """Everything ``otto-eval run`` does; returns the report dict (also written to ``out_dir``).

    ``split.seed`` seeds everything (split, pair sampling, next-click sample, random baseline);
    ``w2v`` is the ``W2VConfig`` of the models trained here (default: ``W2VConfig(seed=split.seed)``);
    ``pairs=None`` skips the original study's protocol.
    """
    from w2v.config import W2VConfig
    log = _Log(quiet)
    split = split or SplitParams()
    seed = split.seed
    w2v = w2v or W2VConfig(seed=seed)
    names = list(names)
    _check(names, k, next_click_sessions, max_hist)
    if do_plot:
        check_plotting()
    out_dir = Path(out_dir)
    check_output(out_dir, (dataset, split_dir, model_dir))
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    timings: dict[str, float] = {}
    report: dict = {"info": {}, "timings": timings}
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        t = time.perf_counter()
        # a full-size run reads tens of GB of memory-mapped arrays in phases: each phase's pages
        # are released from the resident set when it is done (read again, unchanged, if needed)
        ds = Dataset.open(dataset)
        ds.release_pages()   # checked on open; read again only by the original study's protocol
        if split_dir:
            sd = Path(split_dir)
            train = Dataset.open(sd / "train")
            test = read_sessions(sd / "test_sessions.jsonl")
            test_full = read_sessions(sd / "test_sessions_full.jsonl")
            labels = read_labels(sd / "test_labels.jsonl")
            split_stats = read_json(sd / "split.json") if (sd / "split.json").exists() else \
                dict(train.meta.get("split", {}))
            split_stats.setdefault("train_sessions", train.n_sessions)
            split_stats.setdefault("test_sessions", test.n_sessions)
            log(f"split read from {sd}: {train.n_sessions:,} train / {test.n_sessions:,} test sessions")
        else:
            res = split_dataset(ds, days=split.days, seed=seed, min_train_len=split.min_train_len)
            require_nonempty(res.stats, split.days)
            write_split(res, tmp / "split")
            train, test, test_full, labels, split_stats = res.train, res.test, res.test_full, res.labels, res.stats
            log(f"split: {summary(split_stats)}")
        timings["split"] = time.perf_counter() - t
        report["info"].update(dataset=str(Path(dataset).name), sessions=ds.n_sessions, events=ds.n_events,
                              days=split.days, seed=seed, k=k)

        needs_model = any(R.make(n).needs_model for n in names)
        model = None
        losses = {}
        n_models = int(needs_model and not model_dir) + int(pairs is not None and "w2v-item" in names)
        if needs_model:
            t = time.perf_counter()
            if model_dir:
                from w2v.model_io import load_model
                model = load_model(model_dir, keep_output=False)  # the recommenders read the input vectors only
                report["info"]["model"] = str(Path(model_dir).name)
                log(f"model loaded: {model.vocab_size:,} aids x {model.vector_size}")
            else:
                log(f"training Word2Vec model 1/{n_models}: on the OTTO train split ({train.n_sessions:,} sessions)")
                model = train_model(train, tmp / "model", w2v, quiet)
                report["info"]["model"] = "trained on the train split"
            losses["OTTO train split"] = [x for x in model.meta.get("epoch_losses", []) if x is not None]
            timings["Word2Vec model (" + ("loaded" if model_dir else "trained on the OTTO train split") + ")"] = \
                time.perf_counter() - t
        if not model_dir and n_models:
            report["info"]["Word2Vec"] = ", ".join(f"{a}={b}" for a, b in w2v.to_dict().items() if a != "workers")

        covisit_graphs = None
        if "covisit" in names or "blend" in names:
            t = time.perf_counter()
            covisit_graphs = R.build_covisit_set(train, covisit_params or R.CovisitParams(), progress=not quiet)
            timings["co-visitation graphs"] = time.perf_counter() - t
            train.release_pages()
            log("co-visitation graphs built: " + ", ".join(f"{n} {g.stats['edges']:,} edges" for n, g in covisit_graphs.items()))

        w2v_nb = None
        if "w2v-item" in names:
            t = time.perf_counter()
            w2v_nb, nb_stats = R.w2v_graph(model, np.asarray(test_full.aid), 20)
            timings["Word2Vec neighbours of the test aids"] = time.perf_counter() - t
            log(f"Word2Vec neighbours: {nb_stats}")
        t = time.perf_counter()
        pre, targets, nc_stats = prefix_sessions(test_full, max_hist=max_hist, max_sessions=next_click_sessions, seed=seed)
        timings["next-click prefixes"] = time.perf_counter() - t
        results = {}
        t_rec = t_nc = 0.0
        answers = R.SessionAnswers(knn_method, ivf_params, progress=not quiet)  # w2v-session and blend: one answer each
        for name in names:
            rec = R.make(name, seed=seed, covisit_graphs=covisit_graphs, covisit_params=covisit_params,
                         w2v_coef=w2v_coef, w2v=w2v_nb, answers=answers)
            t0 = t = time.perf_counter()
            rec.fit(train, model)
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            preds = rec.predict(test, k)
            pred_s = time.perf_counter() - t
            limits = dict(rec.limits)
            sub = from_predictions(test.session_ids, preds)
            if keep_submissions:
                write_submission(sub, tmp / f"submission_{name}.csv")
            s = score(labels, sub, k=k, detail=True)
            r = {kk: s[kk] for kk in ("clicks", "carts", "orders", "total")}
            r.update(fit_s=fit_s, predict_s=pred_s, hits=s["hits"], truths=s["truths"], info=rec.info(), limits=limits)
            if do_plot:
                r["curve"] = score_curve(labels, sub, range(1, k + 1))
            t = time.perf_counter()
            t_rec += t - t0
            del preds, sub          # 2 x 3 x S x k int64 at full size: not held into the next recommender
            r["next_click"] = eval_next_click(rec, pre, targets, k)
            r["next_click_s"] = time.perf_counter() - t
            t_nc += r["next_click_s"]
            results[name] = r
            train.release_pages()   # each fit reads the train events (popularity)
            log(f"{name}: total {r['total']:.4f} (clicks {r['clicks']:.4f} carts {r['carts']:.4f} orders {r['orders']:.4f}); "
                f"next-click R@{k} {r['next_click']['recall']:.4f}; fit {fit_s:.1f}s predict {pred_s:.1f}s")
        timings["recommenders: fit, predict, score (OTTO protocol)"] = t_rec
        timings["recommenders: next click at every position"] = t_nc
        report["otto"] = {"split": split_stats, "next_click": nc_stats, "results": results}

        if pairs is not None:
            t = time.perf_counter()
            ps = pair_split(ds, types=pairs.types, min_len=pairs.min_len, test_size=pairs.test_size,
                            valid_size=pairs.valid_size, seed=seed)
            log(f"original-study pairs: {ps.stats['eligible_sessions']:,} sessions, {ps.stats['test_pairs']:,} test pairs")
            if ps.stats["test_pairs"] == 0 or ps.train.n_events == 0:
                report["nextevent"] = {"split": ps.stats, "results": {},
                                       "skipped": "no test pair: too few sessions with enough events of these types"}
                log("original-study protocol skipped: no test pair")
            else:
                ne_names = [n for n in ("random", "popular", "covisit", "w2v-item") if n in names or n == "random"]
                ne_model = None
                if "w2v-item" in ne_names:
                    log(f"training Word2Vec model {n_models}/{n_models}: on the original-study pairs' train part "
                        f"({ps.train.n_sessions:,} sessions)")
                    ne_model = train_model(ps.train, tmp / "model_nextevent", w2v, quiet)
                    losses["original-study train part"] = [x for x in ne_model.meta.get("epoch_losses", []) if x is not None]
                ne_res = {}
                for name in ne_names:
                    rec = R.make(name, seed=seed).fit(ps.train, ne_model)
                    te = eval_pairs(rec, ps.test_query, ps.test_target, ps.test_type, (k,))[k]
                    va = eval_pairs(rec, ps.valid_query, ps.valid_target, ps.valid_type, (k,))[k]
                    ne_res[name] = {"test": te, "valid": va}
                    log(f"original study {name}: test recall@{k} {te['recall']:.4f} MRR {te['mrr']:.4f}")
                report["nextevent"] = {"split": ps.stats, "results": ne_res}
            timings["original-study protocol (incl. its training)"] = time.perf_counter() - t
        report["losses"] = losses
        if do_plot:
            t = time.perf_counter()
            report["plots"] = plot(report, tmp, ds)
            timings["plots"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - log.t0
        write_report(report, tmp)
    return report


def register(sub) -> None:
    from data_prep.flags import add_config_flags, add_run_flags
    from w2v.trainer import add_config_flags as add_w2v_flags
    from w2v.trainer import add_preset_flag
    p = sub.add_parser(
        "run", help="split, train, predict with every recommender, score both protocols, write a report",
        description="Run the whole evaluation: the official OTTO split (or --split), a Word2Vec model (trained on the "
                    "train split unless --model is given, with otto-train's flags and defaults), every recommender, "
                    "the OTTO weighted recall@20, next-click recall/MRR@20 at every position, and the original "
                    "study's pair protocol. Writes OUT_DIR/report.md and report.json (and split/, model/ when they "
                    "were made here, and the plots with --plot); prints the report on stdout. Every argument is "
                    "checked before any work starts.")
    p.add_argument("dataset", metavar="DATASET", help="dataset directory (otto-prep convert output)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output directory (created atomically)")
    p.add_argument("--split", dest="split_dir", metavar="SPLIT_DIR", help="reuse an 'otto-eval split' output instead of splitting DATASET")
    add_config_flags(p, SplitParams, only=("days", "min_train_len"))
    p.add_argument("--seed", type=int, default=42, metavar="N",
                   help="seed of the split, the pair sampling, training and the random baseline (default: 42)")
    p.add_argument("--model", dest="model_dir", metavar="MODEL_DIR", help="use this Word2Vec model for the OTTO protocol instead of training one")
    p.add_argument("--recommenders", default=",".join(R.NAMES), metavar="LIST",
                   help=f"comma-separated subset of {','.join(R.NAMES)} (default: all)")
    add_config_flags(p, EvalParams)
    g = p.add_argument_group("the original study's pair protocol")
    g.add_argument("--no-nextevent", action="store_true", help="skip the original study's pair protocol")
    add_config_flags(g, PairParams, prefix="ne-")
    add_preset_flag(p, "session")
    add_w2v_flags(p, exclude=("seed",))
    R.add_tuning_flags(p)
    p.add_argument("--plot", action="store_true",
                   help="also draw events_per_aid.png, recall_at_k.png and loss.png and embed them in report.md "
                        "(needs matplotlib)")
    p.add_argument("--keep-submissions", action="store_true", help="also write submission_<name>.csv for every recommender")
    add_run_flags(p, overwrite="OUT_DIR", quiet=True)
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    from data_prep.command import UsageError
    from data_prep.flags import config_from_args
    from w2v.config import PRESETS
    from w2v.index import method_params
    from w2v.trainer import config_from_flags
    names = [n.strip() for n in args.recommenders.split(",") if n.strip()]
    bad = [n for n in names if n not in R.NAMES] or ([] if names else ["(none)"])
    if bad:
        raise UsageError(f"--recommenders: unknown name {bad[0]!r} (expected some of {', '.join(R.NAMES)})")
    ev = config_from_args(EvalParams, args)
    split = config_from_args(SplitParams, args, seed=args.seed)
    pairs = None if args.no_nextevent else config_from_args(PairParams, args, prefix="ne-")
    w2v = config_from_flags(args, base=PRESETS[args.preset], seed=args.seed)
    covisit, w2v_coef = R.tuning_from_flags(args)
    ivf_params = method_params(args)
    if args.plot:
        check_plotting()
    report = run_all(args.dataset, args.out_dir, split_dir=args.split_dir, split=split, model_dir=args.model_dir,
                     w2v=w2v, names=names, k=ev.k, next_click_sessions=ev.next_click_sessions or None,
                     max_hist=ev.max_hist, pairs=pairs, covisit_params=covisit, w2v_coef=w2v_coef,
                     knn_method=args.method, ivf_params=ivf_params,
                     do_plot=args.plot, keep_submissions=args.keep_submissions, overwrite=args.overwrite,
                     quiet=args.quiet)
    print(markdown(report))
    return 0
