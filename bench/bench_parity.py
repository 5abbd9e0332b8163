"""Benchmark/oracle: parity mode against gensim 4.4, replayed job by job on a large generated corpus.

Runs tests/gensim_replay.py (the same oracle as tests/test_w2v_parity_scale.py, at a size too
large for the test suite) on ``--sessions`` generated OTTO-like sessions (data_prep.synth; default
200,000) with D=100, window 10, negative 5, sample 1e-3, min_count 1, seed 1, gensim fed ``str``
tokens, one worker:

* free-running, 1 epoch and 3 epochs (separate runs, as ``epochs=1`` / ``epochs=3`` train calls):
  the first flip (job, pair, term, dot products ours / gensim / OpenBLAS sdot / exact), jobs that
  ended bit-identical before it, max and mean |difference| of both weight matrices per epoch, and
  held-out recall@20 of both models with the standard error of their difference;
* ``--resync``: 1 epoch in which, after every job that flipped, our weights are reset to gensim's:
  every job that contains a flip, and for each flip whether gensim's decision is that of the exact
  dot product, and whether the value OpenBLAS's sdot actually returns would have agreed with ours
  (then the flip is caused by the way gensim reads sdot's result, see gensim_replay.gensim_dot);
* ``--emulate-gensim-dot``: instead of the free-running runs, each ``--epochs`` count is run with
  gensim's dot product substituted in our parity update (``gensim_replay.gensim_dot_model``, a
  Numba port of ``openblas_sdot_model``), requiring bit-identical weights after every job (the
  run stops with an error at the first job that differs);
* a check that ``gensim_replay.openblas_sdot_model`` reproduces the BLAS pointer gensim calls on
  random vectors on this machine;
* ``--int-tokens``: gensim alone fed ``int`` instead of ``str`` tokens (docs/ALGORITHM.md section
  12.1): rows whose negative-sampling weight is another word's count, the total-variation distance
  of the two negative distributions, the share of negatives going to the 1,000 most frequent rows,
  and held-out recall@20 after 1 and 3 epochs (separate runs) for both token types.

Timings are wall-clock seconds of the whole replay (both trainers plus the comparisons), not a
speed comparison (bench/bench_train.py has that). Writes a Markdown summary to stdout and, with
``--out``, JSON.

Usage: python bench/bench_parity.py [--sessions 200000] [--test-sessions 5000] [--epochs 1,3] [--resync]
       [--int-tokens] [--emulate-gensim-dot] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import gensim_replay as gr  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def recall(res, test) -> dict:
    row_of = {int(a): i for i, a in enumerate(res.ours.aids.tolist())}
    q, t = gr.heldout_pairs(test, row_of, 20_000)
    return gr.recall_agreement(gr.recall_hits(res.ours.vectors, q, t), gr.recall_hits(res.gensim.wv.vectors, q, t))


def model_check(n: int = 2000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ret = read = 0
    from scipy.linalg import blas
    for _ in range(n):
        d = int(rng.integers(1, 300))
        x = (rng.standard_normal(d) * 0.1).astype(np.float32)
        y = rng.standard_normal(d).astype(np.float32)
        r, g = gr.openblas_sdot_model(x, y)
        ret += r == float(np.float32(blas.sdot(x, y)))
        read += float(np.float32(g)) == gr.gensim_dot(x, y)
    return dict(vectors=n, sdot_return_matches=ret, gensim_value_matches=read)


def int_tokens(train, test, epochs=(1, 3)) -> dict:
    """gensim with int vs str tokens on the same corpus (see the module docstring)."""
    import warnings

    from gensim.models import Word2Vec as GensimW2V
    out, dist = {}, {}
    for kind, conv in (("str", str), ("int", int)):
        sents = [[conv(w) for w in s.tolist()] for s in train]
        for ep in epochs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                g = GensimW2V(sg=1, hs=0, workers=1, epochs=ep, **gr.PARAMS)
                g.build_vocab(sents)
                if kind not in dist:
                    ct = g.cum_table.astype(np.int64)
                    dist[kind] = np.diff(np.concatenate(([0], ct))) / float(ct[-1])
                    if kind == "int":
                        cnt = {int(k): int(g.wv.get_vecattr(k, "count")) for k in g.wv.index_to_key}
                        out["rows"] = len(cnt)
                        out["misread_rows"] = sum(1 for r, k in enumerate(g.wv.index_to_key)
                                                  if r in cnt and cnt[r] != cnt[int(k)])
                g.train(sents, total_examples=g.corpus_count, epochs=ep)
            row_of = {int(k): i for i, k in enumerate(g.wv.index_to_key)}
            q, t = gr.heldout_pairs(test, row_of, 20_000)
            out[f"recall_{kind}_{ep}"] = float(gr.recall_hits(g.wv.vectors, q, t).mean())
            out["pairs"] = int(q.shape[0])
            log(f"int tokens: {kind} {ep} epoch(s): recall@20 {out[f'recall_{kind}_{ep}']:.4f}")
    out["total_variation"] = float(0.5 * np.abs(dist["str"] - dist["int"]).sum())
    out["top1000_share_str"] = float(dist["str"][:1000].sum())
    out["top1000_share_int"] = float(dist["int"][:1000].sum())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=200_000, help="training sessions generated")
    ap.add_argument("--test-sessions", type=int, default=5_000, help="held-out sessions for recall@20")
    ap.add_argument("--items", type=int, default=None, help="catalogue size (default: data_prep.synth's default)")
    ap.add_argument("--epochs", default="1,3", help="comma-separated epoch counts, one free-running run each")
    ap.add_argument("--resync", action="store_true", help="also run 1 epoch resynchronised after every flip")
    ap.add_argument("--int-tokens", action="store_true", help="also compare gensim fed int and str tokens")
    ap.add_argument("--emulate-gensim-dot", action="store_true",
                    help="instead of the free-running runs, run each --epochs count with gensim's dot product "
                         "substituted in our parity update (gensim_replay.gensim_dot_model) and require the "
                         "weights bit-identical to gensim's after every job")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    train, test = gr.synth_corpus(args.sessions, args.test_sessions, seed=0, n_items=args.items)
    log(f"corpus: {len(train):,} sessions, {sum(s.shape[0] for s in train):,} events "
        f"({time.perf_counter() - t0:.1f}s)")
    out = dict(env=dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=platform.machine(),
                        processor=platform.processor(), python=platform.python_version(),
                        loadavg_start=os.getloadavg()),
               sessions=args.sessions, params=gr.PARAMS, runs={})
    import gensim
    import scipy
    out["env"].update(gensim=gensim.__version__, scipy=scipy.__version__, numpy=np.__version__)
    out["model_check"] = model_check()
    log(f"sdot model: {out['model_check']}")
    # the replay's bit-identity needs gensim's BLAS saxpy to round every lane once, as our update
    # does (tests/test_w2v_parity_scale.py skips the replay where it does not); there both sides are
    # trained independently and only their held-out recall is compared
    unfused = gr.saxpy_unfused_lanes(gr.PARAMS["vector_size"])
    if unfused:
        out["saxpy_unfused_lanes"] = unfused
        log(f"this machine's BLAS saxpy does not fuse lanes {unfused}: no job-by-job replay; both models "
            "trained independently, held-out recall compared")
    for ep in [int(e) for e in args.epochs.split(",") if e]:
        if unfused and not args.emulate_gensim_dot:
            t1 = time.perf_counter()
            ours, g = gr.train_both(train, ep)
            out["runs"][f"independent-{ep}"] = dict(
                epochs=ep, vocab=len(ours.aids), recall=recall(types.SimpleNamespace(ours=ours, gensim=g), test),
                seconds=time.perf_counter() - t1)
            log(f"independent-{ep}: {out['runs'][f'independent-{ep}']['recall']}")
            continue
        if args.emulate_gensim_dot:
            r = gr.replay(train, ep, progress=log, emulate_gensim_dot=True)  # raises at the first job that differs
            out["runs"][f"emulated-{ep}"] = dict(
                epochs=ep, vocab=r.vocab, raw_words=r.raw_words, jobs_per_epoch=r.jobs_per_epoch,
                identical_jobs=r.identical_jobs, sdot_model="avx512" if r.emulated else "avx2",
                epoch_diffs=r.epoch_diffs, seconds=r.seconds)
            log(f"emulated-{ep}: {r.identical_jobs} of {ep * r.jobs_per_epoch} jobs bit-identical in {r.seconds:.0f}s")
            continue
        r = gr.replay(train, ep, progress=log)
        out["runs"][f"free-{ep}"] = dict(
            epochs=ep, vocab=r.vocab, raw_words=r.raw_words, jobs_per_epoch=r.jobs_per_epoch,
            identical_jobs=r.identical_jobs, first_flip=asdict(r.first_flip) if r.first_flip else None,
            epoch_diffs=r.epoch_diffs, recall=recall(r, test), seconds=r.seconds)
        log(f"free-{ep}: {out['runs'][f'free-{ep}']['recall']} in {r.seconds:.0f}s")
    if args.resync and unfused:
        log("resync: skipped (it is a replay, which this machine's BLAS rules out)")
    elif args.resync:
        r = gr.replay(train, 1, resync=True)
        kinds = Counter()
        for f in r.flips:
            exact = gr.decision(f.dot_exact)
            kinds["gensim_is_exact" if f.decision_gensim == exact else
                  "ours_is_exact" if f.decision_ours == exact else "neither_is_exact"] += 1
            kinds["sdot_return_agrees_with_ours"] += gr.decision(f.dot_sdot) == f.decision_ours
        out["runs"]["resync-1"] = dict(jobs_per_epoch=r.jobs_per_epoch, jobs_with_a_flip=len(r.flips),
                                       kinds=dict(kinds), flips=[asdict(f) for f in r.flips[:20]], seconds=r.seconds)
        log(f"resync-1: {len(r.flips)} of {r.jobs_per_epoch} jobs flip; {dict(kinds)}")
    if args.int_tokens:
        out["int_tokens"] = int_tokens(train, test)
    out["env"]["loadavg_end"] = os.getloadavg()
    print(f"# {out['env']}")
    print(f"sdot model matches the pointer gensim calls: {out['model_check']}")
    print("| run | vocab | jobs/epoch | identical jobs | first flip | max abs diff (vectors, output) | "
          "mean abs diff | recall@20 ours / gensim | diff / SE |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, run in out["runs"].items():
        if not name.startswith("free"):
            continue
        f = run["first_flip"]
        where = (f"epoch {f['epoch']} job {f['job']}: ours {f['dot_ours']:.9g} -> {f['decision_ours']}, gensim "
                 f"{f['dot_gensim']:.9g} -> {f['decision_gensim']}, exact {f['dot_exact']:.9g}") if f else "none"
        d, rc = run["epoch_diffs"][-1], run["recall"]
        print(f"| {name} | {run['vocab']:,} | {run['jobs_per_epoch']} | {run['identical_jobs']} | {where} | "
              f"{d['vectors_max']:.3g}, {d['output_max']:.3g} | {d['vectors_mean']:.3g}, {d['output_mean']:.3g} | "
              f"{rc['recall_ours']:.4f} / {rc['recall_gensim']:.4f} | {rc['z']:.2f} |")
    for name, run in out["runs"].items():
        if name.startswith("emulated"):
            d = run["epoch_diffs"][-1]
            print(f"| {name} (gensim's dot, {run['sdot_model']} sdot model) | {run['vocab']:,} | "
                  f"{run['jobs_per_epoch']} | {run['identical_jobs']} of {run['epochs'] * run['jobs_per_epoch']} | "
                  f"none | {d['vectors_max']:.3g}, {d['output_max']:.3g} | {d['vectors_mean']:.3g}, "
                  f"{d['output_mean']:.3g} | - | - |")
    for name, run in out["runs"].items():
        if name.startswith("independent"):
            rc = run["recall"]
            print(f"| {name} (no replay: unfused saxpy lanes) | {run['vocab']:,} | - | - | - | - | - | "
                  f"{rc['recall_ours']:.4f} / {rc['recall_gensim']:.4f} | {rc['z']:.2f} |")
    if "resync-1" in out["runs"]:
        rs = out["runs"]["resync-1"]
        print(f"\nresync, 1 epoch: {rs['jobs_with_a_flip']} of {rs['jobs_per_epoch']} jobs contain a flip; {rs['kinds']}")
    if "int_tokens" in out:
        print(f"\ngensim, int vs str tokens: {out['int_tokens']}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
