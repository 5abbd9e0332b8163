"""``otto-train index MODEL_DIR``: precompute every aid's k nearest aids by cosine similarity.

Writes ``neighbors.npy`` (int32 ``[V, k]`` rows), ``neighbor_scores.npy`` (float32 ``[V, k]``)
and, last, ``index.json`` into the model directory (see docs/FORMATS.md, section 3). With
``--method ivf`` (``auto`` from ``w2v.ivf.AUTO_IVF_MIN_ROWS`` rows) the table comes from the IVF
index of ``w2v/ivf.py``, whose files are written too; ``index.json`` records the method and its
parameters.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from data_prep.command import positive_int
from data_prep.flags import add_run_flags
from data_prep.progress import Progress

from . import ivf, knn
from .model_io import load_model, save_index

MAX_K = 1000  # neighbours per row: the table is V * k * 8 bytes; the service answers at most 100


def _k(text: str) -> int:
    k = positive_int(text)
    if k > MAX_K:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_K} neighbours per row, got {k}")
    return k


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "index",
        help="build the cosine neighbour table of a model directory (exact or IVF)",
        description="Compute, for every row of MODEL_DIR/vectors.npy, its K most similar other rows by "
                    "cosine similarity (score descending then row ascending) and store them in the "
                    "model directory as neighbors.npy, neighbor_scores.npy and index.json (written last). "
                    "An existing table is replaced. Exact cost: V*V*D multiply-adds; the IVF method "
                    "(k-means lists, NPROBE lists scanned per row, every candidate scored exactly) costs "
                    f"about V*(NLIST + NPROBE*V/NLIST)*D and also writes ivf_*.npy and ivf.json. "
                    f"--method auto uses ivf from {ivf.AUTO_IVF_MIN_ROWS:,} rows.",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model directory written by 'otto-train train' or 'import'")
    p.add_argument("--k", type=_k, default=20,
                   help=f"neighbours per row, 1..{MAX_K} (default 20); a K above the model's rows - 1 is lowered "
                        "to rows - 1, with a note on stderr")
    add_run_flags(p, threads="worker threads; never changes the result")
    p.add_argument("--q-block", type=positive_int, default=64,
                   help="queries per tile (default 64); affects speed only, never the result")
    p.add_argument("--i-block", type=positive_int, default=4096,
                   help="rows per tile (default 4096); affects speed only, never the result")
    add_method_flags(p)
    add_run_flags(p, quiet=True)
    p.set_defaults(func=run)


# IVFParams fields that only the neighbour table uses
TABLE_ONLY = ("symmetric", "refine_rounds", "refine_reverse", "reprobe_max", "reprobe_step", "reprobe_factor", "reprobe_base")
# and those only a bulk search given a table uses (otto-eval's session answers)
SEARCH_ONLY = ("expand_rounds", "expand_width")


def add_method_flags(p, *, table: bool = True) -> None:
    """--method and the --ivf-* flags (w2v.ivf.IVFParams): the bulk top-k choice, also used by
    otto-eval's w2v-session. ``table=False`` (otto-eval, which builds no neighbour table) leaves
    out the table's refinement flags; ``table=True`` (otto-train index) the search's expansion flags."""
    from data_prep.flags import add_config_flags
    p.add_argument("--method", choices=ivf.METHODS, default="auto",
                   help=f"exact: scan every row; ivf: inverted-file index, every candidate scored exactly "
                        f"(recall@20 against exact in bench/RESULTS.md); auto: ivf from {ivf.AUTO_IVF_MIN_ROWS:,} "
                        "rows, else exact (default: auto)")
    add_config_flags(p.add_argument_group("IVF index (--method ivf)"), ivf.IVFParams, prefix="ivf-",
                     exclude=("chunk", "q_block") + (SEARCH_ONLY if table else TABLE_ONLY))


def method_params(args) -> ivf.IVFParams:
    """The validated IVFParams of parsed --ivf-* flags."""
    from data_prep.flags import config_from_args
    return config_from_args(ivf.IVFParams, args, prefix="ivf-")


def run(args) -> int:
    params = method_params(args)  # flags are validated before any work
    model = load_model(args.model_dir)
    V, D = model.vectors.shape
    if V < 2:
        raise ValueError(f"{args.model_dir}: the model has {V} row(s), so no row has a neighbour")
    if args.k > V - 1:
        print(f"index: --k {args.k} lowered to {V - 1}: the model has {V} rows, so each has {V - 1} others",
              file=sys.stderr)
        args.k = V - 1
    threads = args.threads if args.threads is not None else knn.default_threads()
    method = ivf.resolve_method(args.method, V)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"index: {msg}", file=sys.stderr, flush=True))
    say(f"{V} rows x {D} dims, k={args.k}, method {method}, {threads} threads")
    start = time.perf_counter()

    def progress_of(label: str, total: int):  # made when its phase starts, so its rate and ETA are the phase's
        return None if args.quiet else Progress(label, total, unit="rows").report

    info = {"method": method, "threads": threads, "vocab_size": int(V), "vector_size": int(D),
            "order": "score descending, then row ascending; self excluded; padding row -1 / score -inf"}
    index = None
    if method == "exact":
        neighbors, scores = knn.build_neighbor_table(model.vectors, args.k, q_block=args.q_block,
                                                     i_block=args.i_block, n_threads=threads,
                                                     progress=progress_of("index", V))
        info.update(q_block=args.q_block, i_block=args.i_block)
    else:
        # the sampled rows' exact top-k: the automatic nprobe is measured on it, then the table
        inv = knn.inverse_norms(model.vectors)
        sample, exact = ivf.recall_reference(model.vectors, inv, args.k, params, n_threads=threads)
        # the automatic nprobe targets the refined table's recall (a lower bound measured on the sample)
        # its last trial's searched rows (the sample and their neighbours) are not searched again
        trial_rows = {}
        index = ivf.build_ivf(model.vectors, params, k=args.k, n_threads=threads, progress=say,
                              reference=(sample, exact), table=True, searched=trial_rows)
        build_s = time.perf_counter() - start
        inf = index.info
        chosen = (f"nprobe {inf['nprobe']} (auto: sampled recall@{args.k} {inf['sampled_recall']:.4f} over "
                  f"{inf['recall_sample']} rows"
                  + (f", refined table at least {inf['table_recall_bound']:.4f}" if "table_recall_bound" in inf else "")
                  + f", target {inf['target_recall']}"
                  + ("" if inf.get("target_reached", True) else
                     f", {params.reprobe_base:g} of the base nprobe; the reprobe steps follow" if params.reprobe_max > 0 else
                     f" not reached within {inf['max_probe_fraction']:g} of the lists") + ")"
                  if inf["nprobe_source"] == "auto" else f"nprobe {inf['nprobe']} (given)")
        say(f"IVF: {inf['nlist']} lists (largest {inf['max_list']} rows), {chosen} in {build_s:.1f} s")
        stats = {}
        reused = trial_rows.pop("rows", None)
        neighbors, scores = ivf.neighbor_table(model.vectors, args.k, index, nprobe=params.nprobe, refine_rounds=0,
                                               n_threads=threads, progress=progress_of("index", V), stats=stats,
                                               searched=reused, symmetric=params.symmetric)
        searched = time.perf_counter()
        recall_searched = ivf.sampled_recall(exact, neighbors[sample].astype(np.int64))
        if params.refine_rounds:
            neighbors, scores = ivf.refine_table(model.vectors, inv, neighbors, scores,
                                                 rounds=params.refine_rounds, reverse=params.refine_reverse,
                                                 order=index.rows, n_threads=threads, stats=stats,
                                                 progress=progress_of(f"index: refinement ({params.refine_rounds} "
                                                                      "rounds)", V * params.refine_rounds))
        recall_refined = ivf.sampled_recall(exact, neighbors[sample].astype(np.int64))
        say(f"table: sampled recall@{args.k} {recall_searched:.4f} after the search"
            + (f" ({stats['symmetric_entries']:,} entries offered back by the rows that scored them)"
               if params.symmetric else "")
            + (f", {recall_refined:.4f} after {params.refine_rounds} refinement rounds "
               f"({stats['refine_candidates'] / max(V, 1):.0f} candidates per row, "
               f"{time.perf_counter() - searched:.1f} s; reverse edges beyond {params.refine_reverse} "
               f"per row left out: {stats['reverse_left_out']:,})" if params.refine_rounds else ""))
        # the weakest rows searched again with more lists while the measured recall is short
        neighbors, scores = ivf.reprobe_table(model.vectors, inv, index, neighbors, scores, (sample, exact),
                                              nprobe=stats["nprobe"], params=params, n_threads=threads,
                                              packed=None if reused is None else reused.packed, progress=say,
                                              stats=stats)
        del reused
        recall_table = ivf.sampled_recall(exact, neighbors[sample].astype(np.int64))
        if stats["reprobe_rows"]:
            say(f"table: sampled recall@{args.k} {recall_table:.4f} after searching {stats['reprobe_rows']:,} "
                f"weakest rows again at nprobe {stats['reprobe_nprobe']}"
                + ("" if recall_table >= params.target_recall else
                   f"; target {params.target_recall} NOT reached within {params.reprobe_max:g} of the rows "
                   "(--ivf-reprobe-max)"))
        info["ivf"] = dict(index.info, nprobe=stats["nprobe"], kmeans_seconds=round(build_s, 3),
                           queries_widened=stats["queries_widened"], pairs_scored=stats["pairs_scored"],
                           symmetric=bool(params.symmetric),
                           symmetric_entries=int(stats.get("symmetric_entries", 0)),
                           refine_rounds=int(params.refine_rounds), refine_reverse=int(params.refine_reverse),
                           refine_candidates=int(stats.get("refine_candidates", 0)),
                           reverse_left_out=int(stats.get("reverse_left_out", 0)),
                           reprobe_max=float(params.reprobe_max), reprobe_step=float(params.reprobe_step),
                           reprobe_factor=int(params.reprobe_factor), reprobe_base=float(params.reprobe_base),
                           reprobe_rows=int(stats["reprobe_rows"]),
                           reprobe_nprobe=int(stats["reprobe_nprobe"]), reprobe_pairs=int(stats["reprobe_pairs"]),
                           reprobe_trials=stats["reprobe_trials"],
                           table_recall_searched=recall_searched, table_recall_refined=recall_refined,
                           table_recall=recall_table, table_target_reached=bool(recall_table >= params.target_recall))
    seconds = time.perf_counter() - start
    info["build_seconds"] = round(seconds, 3)
    crc = ivf.vectors_fingerprint(model.vectors) if index is not None else None
    del model  # release the memory maps before files in the directory are replaced
    if index is not None:
        ivf.save_ivf(args.model_dir, index, crc)
    save_index(args.model_dir, neighbors, scores, info)
    say(f"wrote k={args.k} neighbours for {V} rows in {seconds:.1f} s")
    return 0
