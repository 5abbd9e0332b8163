"""IVF neighbour table (w2v/ivf.py) against the exact table, FAISS IndexIVFFlat and HNSW.

    python bench/bench_ivf.py [--sizes 290870x100,1860000x64] [--model DIR ...] [--threads 2]
                              [--out bench/out/RESULTS_ivf.md]

For each matrix (generated clustered matrices of the given sizes, and the ``vectors.npy`` of each
``--model``): the full k = 20 neighbour table (self excluded) built

- exactly (``knn.build_neighbor_table``) on ``--sample`` rows, extrapolated to all rows (the
  full exact table is O(V^2 D): about an hour at 1.86M x 64), and those rows are the recall
  reference;
- by ours: k-means (``build_ivf``, the automatic nprobe measured for the refined table as
  ``otto-train index`` does) + the table over all rows, at several nprobe: the one-way search
  and the default symmetric search (every scored pair offered to both rows), each alone and
  plus the default neighbour-of-neighbour refinement (``refine_table``), and at the chosen
  nprobe plus the reprobe steps (the last such row is the default table);
- by FAISS ``IndexIVFFlat`` (inner product on unit rows, the same nlist, training sample size
  and k-means rounds) at the same nprobe values, searching all rows with k = 21;
- by hnswlib (HNSW, M = 16, ef_construction = 100, ef = 64) when V <= --hnsw-max-rows.

Recall@20 = |found ∩ exact| / 20 over the sample rows. Every method runs in this one process
with the same thread count, one after the other; wall and process CPU time (all threads) are
both given, since the machine is shared, and the load average is printed beside each row.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# FAISS's OpenMP threads would otherwise spin while waiting, which costs CPU time (and, on a
# shared machine, wall time) that is not search work
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(ROOT))

from w2v import ivf, knn  # noqa: E402


def clustered(V, D, seed=0):
    """Item-embedding-like rows: topics, sub-topics, noise (tests/test_ivf.py's generator at
    noise 0.75, topics ~ V/160)."""
    rng = np.random.default_rng(seed)
    n_topics = max(8, V // 160)
    topics = rng.standard_normal((n_topics, D)).astype(np.float32)
    sub = topics[rng.integers(0, n_topics, 4 * n_topics)] + np.float32(0.6) * rng.standard_normal((4 * n_topics, D), dtype=np.float32)
    out = np.empty((V, D), np.float32)
    pick = rng.integers(0, sub.shape[0], V)
    for lo in range(0, V, 262144):
        hi = min(V, lo + 262144)
        out[lo:hi] = sub[pick[lo:hi]] + np.float32(0.75) * rng.standard_normal((hi - lo, D), dtype=np.float32)
    return out


class Clock:
    """Wall and process CPU time (all threads) since creation: lap() -> (wall s, cpu s)."""

    def __init__(self):
        self.w, self.c = time.perf_counter(), time.process_time()

    def lap(self):
        return time.perf_counter() - self.w, time.process_time() - self.c


def recall(ref, got):
    k = ref.shape[1]
    return float((got[:, :, None] == ref[:, None, :]).any(2).sum() / (k * ref.shape[0]))


def load():
    return os.getloadavg()[0]


def bench(name, v, args, rows_out):
    V, D = v.shape
    k = 20
    rng = np.random.default_rng(1)
    sample = np.sort(rng.choice(V, min(args.sample, V), replace=False))
    t = Clock()
    ref, _ = knn.build_neighbor_table(v, k, rows=sample, n_threads=args.threads)
    ex = t.lap()
    ex = (ex[0] * V / sample.size, ex[1] * V / sample.size)

    def row(method, nlist, nprobe, build, table, rec, note=""):
        wall, cpu = build[0] + table[0], build[1] + table[1]
        r = (f"| {name} | {method} | {nlist} | {nprobe} | {build[0]:.1f} / {build[1]:.1f} | {table[0]:.1f} / {table[1]:.1f} | "
             f"{wall:.1f} / {cpu:.1f} | {ex[0] / wall:.1f}x / {ex[1] / cpu:.1f}x | {rec:.4f} | {load():.2f} | {note} |")
        print(r, flush=True)
        rows_out.append(r)

    row("exact (extrapolated from the sample)", "-", "-", (0.0, 0.0), ex, 1.0, f"{sample.size} rows timed")
    params = ivf.DEFAULTS
    nlist = ivf.default_nlist(V)
    # the build chooses nprobe itself, as otto-train index does (auto: a lower bound of the refined
    # table's sampled recall@20 >= target_recall); its build time includes that measurement
    t = Clock()
    kept = {}   # the last trial's searched rows: the table's search at that nprobe skips them, as otto-train index does
    inv = knn.inverse_norms(v)
    reference = ivf.recall_reference(v, inv, k, params, n_threads=args.threads)  # the index's own sample
    index = ivf.build_ivf(v, params, k=k, n_threads=args.threads, table=True, searched=kept, reference=reference)
    build = t.lap()
    auto = int(index.info["nprobe"])
    base = ivf.default_nprobe(nlist)
    nprobes = sorted({max(1, base // 2), base, auto} if args.nprobes == "auto" else
                     {int(x) for x in args.nprobes.split(",")})
    trials = ", ".join(f"{t_['nprobe']}: {t_['recall']:.4f}"
                       + (f" (refined at least {t_['table_bound']:.4f})" if "table_bound" in t_ else "")
                       for t_ in index.info.get("nprobe_trials", []))
    for npb in nprobes:
        # the one-way search (each row keeps its own probed lists' best) and the default symmetric
        # one (every scored pair offered to both rows), each refined, and at the chosen nprobe
        # with the reprobe steps: the default table is the last row
        for sym in (False, True):
            kind = "symmetric search (the default)" if sym else "one-way search"
            t = Clock()
            st = {}
            nb, sc = ivf.neighbor_table(v, k, index, nprobe=npb, refine_rounds=0, n_threads=args.threads,
                                        searched=kept.get("rows"), symmetric=sym, stats=st)
            searched = t.lap()
            note = ("default nprobe (auto; sampled recall at each nprobe tried: " + trials + ")" if npb == auto
                    else "base of the auto search" if npb == base else "")
            if sym:
                note = (note + "; " if note else "") + f"{st['symmetric_entries']:,} entries from the other direction"
            row(f"ours IVF, {kind}", nlist, npb, build, searched, recall(ref, nb[sample]), note)
            t = Clock()
            st = {}
            nb, sc = ivf.refine_table(v, knn.inverse_norms(v), nb, sc, rounds=params.refine_rounds,
                                      reverse=params.refine_reverse, order=index.rows, n_threads=args.threads,
                                      stats=st)
            refined = t.lap()
            row(f"ours IVF, {kind} + {params.refine_rounds} refinement rounds", nlist, npb, build,
                (searched[0] + refined[0], searched[1] + refined[1]), recall(ref, nb[sample]),
                f"refinement {refined[0]:.1f} s wall / {refined[1]:.1f} s CPU, "
                f"{st['refine_candidates'] / V:.0f} candidates per row")
            if npb == auto and params.reprobe_max > 0:
                # the weakest rows searched again until the index's own sample reaches the target;
                # the recall here is measured on this script's other sample
                t = Clock()
                nb, sc = ivf.reprobe_table(v, inv, index, nb, sc, reference, nprobe=npb, params=params,
                                           n_threads=args.threads, stats=st,
                                           packed=kept["rows"].packed if "rows" in kept else None)
                rep = t.lap()
                row(f"ours IVF, {kind} + {params.refine_rounds} refinement rounds + reprobe"
                    + (" (the default table)" if sym == params.symmetric else ""), nlist, npb,
                    build, (searched[0] + refined[0] + rep[0], searched[1] + refined[1] + rep[1]),
                    recall(ref, nb[sample]),
                    f"reprobe {rep[0]:.1f} s wall / {rep[1]:.1f} s CPU: {st['reprobe_rows']:,} rows at nprobe "
                    f"{st['reprobe_nprobe']}, the index's own sample's recall after each step "
                    + (" -> ".join(f"{x['recall']:.4f}" for x in st["reprobe_trials"]) or "(none: reached before)"))
        del nb, sc
    del index, kept
    unit = knn.normalize_rows(v)
    if "faiss" in args.peers:
        try:
            import faiss
            faiss.omp_set_num_threads(args.threads)
            t = Clock()
            quant = faiss.IndexFlatIP(D)
            fx = faiss.IndexIVFFlat(quant, D, nlist, faiss.METRIC_INNER_PRODUCT)
            fx.cp.niter = params.iterations
            fx.cp.max_points_per_centroid = params.train_per_list
            fx.cp.seed = params.seed
            fx.train(unit)
            fx.add(unit)
            fb = t.lap()
            for npb in nprobes:
                fx.nprobe = npb
                t = Clock()
                _, I = fx.search(unit, k + 1)
                ts = t.lap()
                got = np.array([r[r != i][:k] if (r == i).any() else r[:k] for i, r in zip(sample, I[sample])])
                row("FAISS IndexIVFFlat", nlist, npb, fb, ts, recall(ref, got))
                del I
            del fx, quant
        except ImportError:
            rows_out.append(f"| {name} | FAISS | not installed (pip install faiss-cpu) | | | | | | | | |")
    if "hnswlib" in args.peers and V <= args.hnsw_max_rows:
        try:
            import hnswlib
            t = Clock()
            h = hnswlib.Index(space="ip", dim=D)
            h.init_index(max_elements=V, M=16, ef_construction=100, random_seed=params.seed)
            h.add_items(unit, np.arange(V), num_threads=args.threads)
            hb = t.lap()
            h.set_ef(64)
            t = Clock()
            labels, _ = h.knn_query(unit, k=k + 1, num_threads=args.threads)
            ts = t.lap()
            got = np.array([r[r != i][:k] if (r == i).any() else r[:k] for i, r in zip(sample, labels[sample].astype(np.int64))])
            row("hnswlib HNSW (M 16, efC 100, ef 64)", "-", "-", hb, ts, recall(ref, got))
            del h, labels
        except ImportError:
            rows_out.append(f"| {name} | hnswlib | not installed (pip install hnswlib) | | | | | | | | |")
    elif "hnswlib" in args.peers:
        rows_out.append(f"| {name} | hnswlib | skipped: V > --hnsw-max-rows {args.hnsw_max_rows:,} | | | | | | | | |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="290870x100,1860000x64", help="generated clustered VxD matrices ('' for none)")
    p.add_argument("--model", action="append", default=[], help="also a model directory's vectors.npy (repeatable)")
    p.add_argument("--sample", type=int, default=2000, help="rows with an exact reference (default 2000)")
    p.add_argument("--threads", type=int, default=2, help="threads for every method (default 2)")
    p.add_argument("--nprobes", default="auto", help="comma-separated nprobe values of our and FAISS's rows, or 'auto': "
                   "half the base default, the base default and the nprobe the build chose (default auto)")
    p.add_argument("--peers", default="faiss,hnswlib", help="comma-separated peers to run: faiss, hnswlib ('' for none)")
    p.add_argument("--hnsw-max-rows", type=int, default=2_000_000, help="skip HNSW above this many rows")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "RESULTS_ivf.md"), help="markdown table to write")
    args = p.parse_args(argv)
    import numba
    head = [f"Run: bench_ivf {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"machine: {platform.machine()}, nproc {os.cpu_count()}, python {platform.python_version()}, "
            f"numpy {np.__version__}, numba {numba.__version__}, threads {args.threads}, load avg at start {load():.2f}",
            "", "| matrix | method | nlist | nprobe | build wall / CPU (s) | table wall / CPU (s) | total wall / CPU (s) | "
            "speed-up vs exact wall / CPU | recall@20 | load | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(head), flush=True)
    rows = []
    for spec in filter(None, args.sizes.split(",")):
        V, D = (int(x) for x in spec.lower().split("x"))
        bench(f"clustered {V}x{D}", clustered(V, D), args, rows)
    for m in args.model:
        v = np.load(Path(m) / "vectors.npy", mmap_mode="r")
        bench(f"model {Path(m).parent.name}/{Path(m).name} {v.shape[0]}x{v.shape[1]}", np.ascontiguousarray(v), args, rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(head + rows) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
