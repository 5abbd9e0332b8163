"""``otto-eval run``: split, train (unless a model is given), predict with every recommender,
score both protocols, and write one report (Markdown + JSON, optional plots)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from data_prep.atomic import atomic_directory, check_output
from data_prep.dataset import Dataset
from data_prep.npyio import read_json

from . import recommenders as R
from .labels import read_labels
from .metrics import score, score_curve
from .nextevent import eval_next_click, eval_pairs, pair_split, prefix_sessions
from .report import check_plotting, markdown, plot, write_report
from .sessions_io import read_sessions
from .split import split_dataset, write_split
from .submission import from_predictions, write_submission

TRAIN_FLAGS = {  # flag -> (W2VConfig field, type, default, help)
    "vector_size": (int, 64, "Word2Vec vector size"),
    "window": (int, 5, "Word2Vec context window"),
    "negative": (int, 5, "negative samples per pair"),
    "sample": (float, 1e-3, "downsampling threshold of frequent aids"),
    "epochs": (int, 5, "training epochs"),
    "min_count": (int, 1, "drop aids seen fewer times from the vocabulary"),
}


class _Log:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def train_model(train: Dataset, out_dir: Path, params: dict, seed: int, workers: int | None, quiet: bool):
    """Train Word2Vec on ``train`` and return the loaded model (saved in ``out_dir``)."""
    from w2v.config import W2VConfig
    from w2v.model_io import load_model
    from w2v.trainer import Word2Vec
    cfg = {k: params[k] for k in TRAIN_FLAGS}
    if workers:
        cfg["workers"] = workers
    m = Word2Vec(W2VConfig(seed=seed, **cfg))
    m.build_vocab(train)
    m.train(progress=not quiet)
    m.save(out_dir, overwrite=True)
    return load_model(out_dir)


def run_all(dataset: str, out_dir: str, *, split_dir: str | None = None, days: float = 7, seed: int = 42,
            model_dir: str | None = None, train_params: dict | None = None, workers: int | None = None,
            names=R.NAMES, k: int = 20, next_click_sessions: int | None = 20_000, max_hist: int = 30,
            nextevent: bool = True, ne_types: str = "orders", ne_min_len: int = 3,
            ne_test_size=0.1, ne_valid_size=0.1, covisit_params: R.CovisitParams | None = None,
            w2v_coef: float = 0.05, do_plot: bool = False, keep_submissions: bool = False,
            overwrite: bool = False, quiet: bool = False) -> dict:
    """Everything ``otto-eval run`` does; returns the report dict (also written to ``out_dir``)."""
    log = _Log(quiet)
    if do_plot:
        check_plotting()
    for n in names:
        if n not in R.NAMES:
            raise ValueError(f"recommenders: unknown name {n!r} (expected some of {', '.join(R.NAMES)})")
    params = {k_: v[1] for k_, v in TRAIN_FLAGS.items()}
    params.update(train_params or {})
    out_dir = Path(out_dir)
    check_output(out_dir, (dataset, split_dir, model_dir))
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    timings: dict[str, float] = {}
    report: dict = {"info": {}, "timings": timings}
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        t = time.perf_counter()
        ds = Dataset.open(dataset)
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
            log(f"split read from {sd}: {train.n_sessions} train / {test.n_sessions} test sessions")
        else:
            res = split_dataset(ds, days=days, seed=seed)
            write_split(res, tmp / "split")
            train, test, test_full, labels, split_stats = res.train, res.test, res.test_full, res.labels, res.stats
            log(f"split: {train.n_sessions} train / {test.n_sessions} test sessions")
        timings["split"] = time.perf_counter() - t
        report["info"].update(dataset=str(Path(dataset).name), sessions=ds.n_sessions, events=ds.n_events,
                              days=days, seed=seed, k=k)

        needs_model = any(R.make(n).needs_model for n in names)
        model = None
        losses = {}
        if needs_model:
            t = time.perf_counter()
            if model_dir:
                from w2v.model_io import load_model
                model = load_model(model_dir)
                report["info"]["model"] = str(Path(model_dir).name)
                log(f"model loaded: {model.vocab_size} aids x {model.vector_size}")
            else:
                log("training Word2Vec on the train split")
                model = train_model(train, tmp / "model", params, seed, workers, quiet)
                report["info"]["model"] = "trained on the train split: " + ", ".join(f"{a}={b}" for a, b in params.items())
            losses["otto train split"] = [x for x in model.meta.get("epoch_losses", []) if x is not None]
            timings["w2v model"] = time.perf_counter() - t

        covisit_graphs = None
        if "covisit" in names or "blend" in names:
            t = time.perf_counter()
            covisit_graphs = R.build_covisit_set(train, covisit_params or R.CovisitParams(), progress=not quiet)
            timings["co-visitation graphs"] = time.perf_counter() - t
            log("co-visitation graphs built: " + ", ".join(f"{n} {g.stats['edges']} edges" for n, g in covisit_graphs.items()))

        w2v_nb = None
        if "w2v-item" in names or "blend" in names:
            t = time.perf_counter()
            w2v_nb, nb_stats = R.w2v_graph(model, np.asarray(test_full.aid), 20)
            timings["w2v neighbours of the test aids"] = time.perf_counter() - t
            log(f"Word2Vec neighbours: {nb_stats}")
        pre, targets, nc_stats = prefix_sessions(test_full, max_hist=max_hist, max_sessions=next_click_sessions, seed=seed)
        results = {}
        for name in names:
            rec = R.make(name, seed=seed, covisit_graphs=covisit_graphs, covisit_params=covisit_params,
                         w2v_coef=w2v_coef, w2v=w2v_nb)
            t = time.perf_counter()
            rec.fit(train, model)
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            R.LIMIT_COUNTS.clear()
            preds = rec.predict(test, k)
            pred_s = time.perf_counter() - t
            limits = dict(R.LIMIT_COUNTS)
            sub = from_predictions(test.session_ids, preds)
            if keep_submissions:
                write_submission(sub, tmp / f"submission_{name}.csv")
            s = score(labels, sub, k=k, detail=True)
            r = {kk: s[kk] for kk in ("clicks", "carts", "orders", "total")}
            r.update(fit_s=fit_s, predict_s=pred_s, hits=s["hits"], truths=s["truths"], info=rec.info(), limits=limits)
            if do_plot:
                r["curve"] = score_curve(labels, sub, range(1, k + 1))
            t = time.perf_counter()
            r["next_click"] = eval_next_click(rec, pre, targets, k)
            r["next_click_s"] = time.perf_counter() - t
            results[name] = r
            log(f"{name}: total {r['total']:.4f} (clicks {r['clicks']:.4f} carts {r['carts']:.4f} orders {r['orders']:.4f}); "
                f"next-click R@{k} {r['next_click']['recall']:.4f}; fit {fit_s:.1f}s predict {pred_s:.1f}s")
        report["otto"] = {"split": split_stats, "next_click": nc_stats, "results": results}

        if nextevent:
            t = time.perf_counter()
            ps = pair_split(ds, types=ne_types, min_len=ne_min_len, test_size=ne_test_size,
                            valid_size=ne_valid_size, seed=seed)
            log(f"original-study pairs: {ps.stats['eligible_sessions']} sessions, {ps.stats['test_pairs']} test pairs")
        if nextevent and (ps.stats["test_pairs"] == 0 or ps.train.n_events == 0):
            report["nextevent"] = {"split": ps.stats, "results": {},
                                   "skipped": "no test pair: too few sessions with enough events of these types"}
            log("original-study protocol skipped: no test pair")
        elif nextevent:
            ne_names = [n for n in ("random", "popular", "covisit", "w2v-item") if n in names or n == "random"]
            ne_model = None
            if "w2v-item" in ne_names:
                ne_model = train_model(ps.train, tmp / "model_nextevent", params, seed, workers, quiet)
                losses["original-study train"] = [x for x in ne_model.meta.get("epoch_losses", []) if x is not None]
            ne_res = {}
            for name in ne_names:
                rec = R.make(name, seed=seed).fit(ps.train, ne_model)
                te = eval_pairs(rec, ps.test_query, ps.test_target, ps.test_type, (k,))[k]
                va = eval_pairs(rec, ps.valid_query, ps.valid_target, ps.valid_type, (k,))[k]
                ne_res[name] = {"test": te, "valid": va}
                log(f"original study {name}: test recall@{k} {te['recall']:.4f} MRR {te['mrr']:.4f}")
            report["nextevent"] = {"split": ps.stats, "results": ne_res}
            timings["original-study protocol"] = time.perf_counter() - t
        report["losses"] = losses
        timings["total"] = time.perf_counter() - log.t0
        if do_plot:
            report["plots"] = plot(report, tmp)
        write_report(report, tmp)
    return report


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="split, train, predict with every recommender, score both protocols, write a report",
        description="Run the whole evaluation: the official OTTO split (or --split), a Word2Vec model (trained on the "
                    "train split unless --model is given), every recommender, the OTTO weighted recall@20, next-click "
                    "recall/MRR@20 at every position, and the original study's pair protocol. Writes OUT_DIR/report.md "
                    "and report.json (and split/, model/ when they were made here).")
    p.add_argument("dataset", metavar="DATASET", help="dataset directory (otto-prep convert output)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output directory (created atomically)")
    p.add_argument("--split", dest="split_dir", metavar="SPLIT_DIR", help="reuse an 'otto-eval split' output instead of splitting DATASET")
    p.add_argument("--days", type=float, default=7, help="test period in days for the split (default 7)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split, the pair sampling, training and the random baseline (default 42)")
    p.add_argument("--model", dest="model_dir", metavar="MODEL_DIR", help="use this Word2Vec model for the OTTO protocol instead of training one")
    for name, (typ, default, hlp) in TRAIN_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=default, help=f"{hlp} when training (default {default})")
    p.add_argument("--workers", type=int, default=None, help="training threads (default: all cores)")
    p.add_argument("--recommenders", default=",".join(R.NAMES), help=f"comma-separated subset of {','.join(R.NAMES)} (default all)")
    p.add_argument("--k", type=int, default=20, help="list length / recall cutoff (default 20)")
    p.add_argument("--next-click-sessions", type=int, default=20000, help="full test sessions sampled for next-click at every position (default 20000; 0 = all)")
    p.add_argument("--max-hist", type=int, default=30, help="events of a prefix the recommenders see in the next-click protocol (default 30)")
    p.add_argument("--no-nextevent", action="store_true", help="skip the original study's pair protocol")
    p.add_argument("--ne-types", default="orders", help="event types of the pair protocol (default orders)")
    p.add_argument("--ne-min-len", type=int, default=3, help="minimum events of those types per session (default 3: more than 2 orders)")
    p.add_argument("--ne-test-size", type=float, default=0.1, help="fraction of eligible sessions whose pair is a test pair (default 0.1)")
    p.add_argument("--ne-valid-size", type=float, default=0.1, help="fraction whose pair is a validation pair (default 0.1)")
    R.add_tuning_flags(p)
    p.add_argument("--plot", action="store_true", help="also draw recall_at_k.png and loss.png (needs matplotlib)")
    p.add_argument("--keep-submissions", action="store_true", help="also write submission_<name>.csv for every recommender")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    names = [n.strip() for n in args.recommenders.split(",") if n.strip()]
    report = run_all(args.dataset, args.out_dir, split_dir=args.split_dir, days=args.days, seed=args.seed,
                     model_dir=args.model_dir, train_params={k: getattr(args, k) for k in TRAIN_FLAGS},
                     workers=args.workers, names=names, k=args.k,
                     next_click_sessions=args.next_click_sessions or None, max_hist=args.max_hist,
                     nextevent=not args.no_nextevent, ne_types=args.ne_types, ne_min_len=args.ne_min_len,
                     ne_test_size=args.ne_test_size, ne_valid_size=args.ne_valid_size,
                     covisit_params=R.CovisitParams(n_parts=args.n_parts), w2v_coef=args.w2v_coef,
                     do_plot=args.plot, keep_submissions=args.keep_submissions, overwrite=args.overwrite,
                     quiet=args.quiet)
    print(markdown(report))
    return 0
