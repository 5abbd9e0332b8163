"""``otto-train index MODEL_DIR``: precompute every aid's k nearest aids by cosine similarity.

Writes ``neighbors.npy`` (int32 ``[V, k]`` rows), ``neighbor_scores.npy`` (float32 ``[V, k]``)
and, last, ``index.json`` into the model directory (see docs/FORMATS.md, section 3).
"""
from __future__ import annotations

import argparse
import sys
import time

from data_prep.command import positive_int
from data_prep.progress import Progress

from . import knn
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
        help="build the exact cosine neighbour table of a model directory",
        description="Compute, for every row of MODEL_DIR/vectors.npy, its K most similar other rows by "
                    "cosine similarity (exact, score descending then row ascending) and store them in the "
                    "model directory as neighbors.npy, neighbor_scores.npy and index.json (written last). "
                    "An existing table is replaced. Cost: V*V*D multiply-adds.",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model directory written by 'otto-train train' or 'import'")
    p.add_argument("--k", type=_k, default=20,
                   help=f"neighbours per row, 1..{MAX_K} (default 20); a K above the model's rows - 1 is lowered "
                        "to rows - 1, with a note on stderr")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="worker threads (default: all CPUs this process may use)")
    p.add_argument("--q-block", type=positive_int, default=64,
                   help="queries per tile (default 64); affects speed only, never the result")
    p.add_argument("--i-block", type=positive_int, default=4096,
                   help="rows per tile (default 4096); affects speed only, never the result")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    model = load_model(args.model_dir)
    V, D = model.vectors.shape
    if V < 2:
        raise ValueError(f"{args.model_dir}: the model has {V} row(s), so no row has a neighbour")
    if args.k > V - 1:
        print(f"index: --k {args.k} lowered to {V - 1}: the model has {V} rows, so each has {V - 1} others",
              file=sys.stderr)
        args.k = V - 1
    threads = args.threads if args.threads is not None else knn.default_threads()
    if not args.quiet:
        print(f"index: {V} rows x {D} dims, k={args.k}, {threads} threads, "
              f"tiles {args.q_block}x{args.i_block}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    progress = None if args.quiet else Progress("index", V, unit="rows").report
    neighbors, scores = knn.build_neighbor_table(model.vectors, args.k, q_block=args.q_block,
                                                 i_block=args.i_block, n_threads=threads,
                                                 progress=progress)
    seconds = time.perf_counter() - start
    info = {
        "q_block": args.q_block,
        "i_block": args.i_block,
        "threads": threads,
        "build_seconds": round(seconds, 3),
        "vocab_size": int(V),
        "vector_size": int(D),
        "order": "score descending, then row ascending; self excluded; padding row -1 / score -inf",
    }
    del model  # release the memory maps before files in the directory are replaced
    save_index(args.model_dir, neighbors, scores, info)
    if not args.quiet:
        print(f"index: wrote k={args.k} neighbours for {V} rows in {seconds:.1f} s", file=sys.stderr)
    return 0
