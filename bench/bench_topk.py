"""Cosine top-k: our kernels vs gensim, NumPy and FAISS on the same random matrices, in one run.

Measures, per matrix (default 290,870 x 100 and 1,860,000 x 64 float32, standard normal):

* single-query p50 latency (k=20, the query row excluded): ours (1 and 2 threads, exact and int8
  reduced precision with its recall@k, exact via an int8 bound pre-scan), gensim ``most_similar``, NumPy (BLAS dot + argpartition),
  FAISS ``IndexFlatIP`` (1 and 2 threads), and a streaming-read floor (one Numba pass summing every
  element, 1 and 2 threads);
* batched throughput (queries/s) of ``topk_batch`` vs FAISS and NumPy (BLAS product + argpartition);
* neighbour-table build on a subset of query rows vs the bare BLAS products of the same rows
  (``unit[rows] @ unit.T`` in blocks, no top-k) -- the full table is O(V^2 D);
* table lookup time for one aid (aid -> row plus the table read).

NumPy's BLAS is limited to ``--blas-threads`` (default 1) through OPENBLAS_NUM_THREADS, set
before NumPy is imported, so BLAS baselines are compared thread for thread.
"""
from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="290870x100,1860000x64",
                   help="comma-separated VxD matrices (default: 290870x100,1860000x64)")
    p.add_argument("--queries", type=int, default=30, help="single queries timed per method (default 30)")
    p.add_argument("--k", type=int, default=20, help="neighbours per query (default 20)")
    p.add_argument("--batch", type=int, default=512, help="queries in the batched-throughput test (default 512)")
    p.add_argument("--table-rows", type=int, default=1024,
                   help="query rows of the neighbour-table build timing (default 1024)")
    p.add_argument("--rerank", type=int, default=100, help="candidates re-ranked by the int8 scan (default 100)")
    p.add_argument("--blas-threads", type=int, default=1, help="OpenBLAS threads for NumPy baselines (default 1)")
    p.add_argument("--skip-gensim", action="store_true", help="do not time gensim (it builds a str-key dict)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p.parse_args(argv)


ARGS = parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.blas_threads)
os.environ.setdefault("OMP_NUM_THREADS", "2")

import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from data_prep.parallel import run_tasks, split_ranges  # noqa: E402
from w2v import knn, knn_int8  # noqa: E402
from w2v.knn_int8 import Int8Stats  # noqa: E402
from w2v.keyed import KeyedVectors  # noqa: E402


# Streaming floor: sum of every element, one sequential pass (the least work a scan can do).
# v: float32 [V, D] C-contiguous; rows lo..hi-1.
@njit(cache=True, nogil=True, fastmath=True)
def _stream_sum(v, lo, hi):
    acc = np.float32(0.0)
    for i in range(lo, hi):
        for d in range(v.shape[1]):
            acc += v[i, d]
    return acc


def stream_floor(v, threads):
    run_tasks(_stream_sum, [(v, lo, hi) for lo, hi in split_ranges(v.shape[0], threads)])


def p50(fn, queries, warm=2):
    """Median (wall seconds, calling-thread CPU seconds) over the queries."""
    for q in queries[:warm]:
        fn(q)
    wall, cpu = [], []
    for q in queries:
        c = time.thread_time()
        t = time.perf_counter()
        fn(q)
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def timed(fn, repeat=1):
    """Best (wall seconds, calling-thread CPU seconds) of `repeat` runs."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        c = time.thread_time()
        t = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t, time.thread_time() - c))
    return best


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def bench_matrix(V, D, rng, out):
    k = ARGS.k
    log(f"== {V} x {D}: generating")
    v = rng.standard_normal((V, D), dtype=np.float32)
    inv = knn.inverse_norms(v)
    unit = knn.normalize_rows(v)
    qrows = rng.choice(V, ARGS.queries, replace=False)
    rows = {}

    def row(name, times, note=""):
        """times: (wall, cpu of the calling thread); cpu is shown for 1-thread methods only."""
        wall, cpu = times
        if "2 thread" in name:
            cpu = None
        rows[name] = (wall, cpu)
        out.append((f"{V}x{D}", name, wall, cpu, note))
        cpu_s = f"{cpu * 1e3:10.3f}" if cpu is not None else "         -"
        log(f"  {name:<48} wall {wall * 1e3:10.3f} ms  cpu {cpu_s} ms  {note}")

    # ---- single query -----------------------------------------------------------------------
    row("stream floor, 1 thread", p50(lambda q: stream_floor(v, 1), qrows))
    row("stream floor, 2 threads", p50(lambda q: stream_floor(v, 2), qrows))
    for t in (1, 2):
        row(f"ours topk exact, {t} thread(s)",
            p50(lambda q: knn.topk(v, inv, v[q], k, exclude=np.array([q]), n_threads=t), qrows))
    codes, scales = knn_int8.quantize_rows(v, inv)
    hits = {k: 0, ARGS.rerank: 0}
    for q in qrows:
        e = set(knn.topk(v, inv, v[q], k, exclude=np.array([q]))[1].tolist())
        for rr in hits:
            r = knn_int8.topk_reduced(v, inv, codes, scales, v[q], k, exclude=np.array([q]), rerank=rr)[1]
            hits[rr] += len(e & set(r.tolist()))
    recall_k = hits[k] / (len(qrows) * k)
    recall = hits[ARGS.rerank] / (len(qrows) * k)
    for t in (1, 2):
        row(f"ours topk_reduced int8, {t} thread(s)",
            p50(lambda q: knn_int8.topk_reduced(v, inv, codes, scales, v[q], k, exclude=np.array([q]),
                                           rerank=ARGS.rerank, n_threads=t), qrows),
            f"recall@{k} {recall:.4f} with rerank {ARGS.rerank} ({recall_k:.4f} with rerank {k})")
    cands, st = [], Int8Stats()
    for q in qrows:
        r = knn_int8.topk_exact_int8(v, inv, codes, scales, v[q], k, exclude=np.array([q]), stats=st)
        assert np.array_equal(r[1], knn.topk(v, inv, v[q], k, exclude=np.array([q]))[1])
        cands.append(st.last_candidates)
    fallbacks = st.fallbacks
    for t in (1, 2):
        row(f"ours topk_exact_int8, {t} thread(s)",
            p50(lambda q: knn_int8.topk_exact_int8(v, inv, codes, scales, v[q], k, exclude=np.array([q]),
                                              n_threads=t), qrows),
            f"exact (rows equal topk); median {statistics.median(cands):.0f} rows re-scored, "
            f"{fallbacks} exact-scan fallbacks")
    codes = scales = None  # free the int8 copy before the next matrix

    def numpy_topk(q):
        s = unit @ unit[q]
        s[q] = -np.inf
        top = np.argpartition(-s, k)[:k]
        return top[np.lexsort((top, -s[top]))]

    row(f"numpy dot+argpartition (BLAS {ARGS.blas_threads} thr)", p50(numpy_topk, qrows))

    try:
        import faiss
        index = faiss.IndexFlatIP(D)
        index.add(unit)
        for t in (1, 2):
            faiss.omp_set_num_threads(t)
            row(f"faiss IndexFlatIP, {t} thread(s)", p50(lambda q: index.search(unit[q:q + 1], k + 1), qrows))
    except ImportError:
        index = None
        log("  faiss not installed")

    if not ARGS.skip_gensim:
        from gensim.models import KeyedVectors as GensimKV
        g = GensimKV(D)
        g.add_vectors([str(i) for i in range(V)], v)
        g.fill_norms()
        row(f"gensim most_similar (BLAS {ARGS.blas_threads} thr)",
            p50(lambda q: g.most_similar(str(q), topn=k), qrows))
        del g

    # ---- batched throughput --------------------------------------------------------------------
    bq = rng.choice(V, min(ARGS.batch, V), replace=False)
    for t in (1, 2):
        sec = timed(lambda: knn.topk_batch(v, inv, v[bq], k, exclude_self=bq, n_threads=t))
        row(f"ours topk_batch {len(bq)} q, {t} thread(s)", sec, f"{len(bq) / sec[0]:,.0f} q/s (wall)")
    if index is not None:
        for t in (1, 2):
            faiss.omp_set_num_threads(t)
            sec = timed(lambda: index.search(unit[bq], k + 1))
            row(f"faiss search {len(bq)} q, {t} thread(s)", sec, f"{len(bq) / sec[0]:,.0f} q/s (wall)")
        del index

    # ---- table build on a subset vs bare BLAS products ----------------------------------------
    trows = np.sort(rng.choice(V, min(ARGS.table_rows, V), replace=False))
    blk = 4096

    qb = unit[trows]
    buf = np.empty((len(trows), blk), np.float32)
    tail = np.empty((len(trows), V % blk), np.float32)

    def blas_products():  # preallocated outputs: only the products are timed
        for i0 in range(0, V, blk):
            n = min(blk, V - i0)
            np.matmul(qb, unit[i0:i0 + n].T, out=buf if n == blk else tail)

    blas = timed(blas_products)
    row(f"BLAS products {len(trows)} rows x V, {ARGS.blas_threads} thread(s)", blas,
        f"{2 * len(trows) * V * D / blas[1] / 1e9:.1f} GFLOP/s (cpu)")
    for t in (1, 2):
        sec = timed(lambda: knn.build_neighbor_table(v, k, rows=trows, n_threads=t))
        note = (f"{2 * len(trows) * V * D / sec[1] / 1e9:.1f} GFLOP/s (cpu); {sec[1] / blas[1]:.2f}x BLAS cpu"
                if t == 1 else f"{sec[0] / blas[0]:.2f}x BLAS wall")
        row(f"ours table build {len(trows)} rows, {t} thread(s)", sec,
            note + f"; full table ~{sec[0] * V / len(trows) / 3600:.1f} h wall")

    # ---- lookup ---------------------------------------------------------------------------------
    aids = rng.permutation(V).astype(np.int64) * 7 + 11
    nb = rng.integers(0, V, size=(V, k), dtype=np.int32)  # content does not affect lookup time
    ns = np.sort(rng.random((V, k), dtype=np.float32), axis=1)[:, ::-1].copy()
    kv = KeyedVectors(v, aids, nb, ns)
    probe = aids[rng.integers(0, V, 20000)]
    probe = [int(a) for a in probe]
    for a in probe[:100]:
        kv.neighbors(a, k)
    c = time.thread_time()
    t0 = time.perf_counter()
    for a in probe:
        kv.neighbors(a, k)
    row("table lookup (aid->row + read k)",
        ((time.perf_counter() - t0) / len(probe), (time.thread_time() - c) / len(probe)),
        "mean over 20,000 random aids")
    return rows


def main():
    rng = np.random.default_rng(ARGS.seed)
    out = []
    summary = []
    for spec in ARGS.sizes.split(","):
        V, D = (int(x) for x in spec.lower().split("x"))
        r = bench_matrix(V, D, rng, out)
        # 1-thread comparisons on CPU time of the calling thread (robust to a loaded machine);
        # 2-thread comparisons on wall time
        f1c = r["faiss IndexFlatIP, 1 thread(s)"][1] if "faiss IndexFlatIP, 1 thread(s)" in r else None
        f1 = r["faiss IndexFlatIP, 1 thread(s)"][0] if f1c is not None else None
        ours1 = r["ours topk exact, 1 thread(s)"][1]
        ours2 = r["ours topk exact, 2 thread(s)"][0]
        int8_2 = r["ours topk_exact_int8, 2 thread(s)"][0]
        floor = r["stream floor, 1 thread"][1]
        build = next(v for n, v in r.items() if n.startswith("ours table build") and "1 thread" in n)[1]
        blas = next(v for n, v in r.items() if n.startswith("BLAS products"))[1]
        lookup_wall, lookup = r["table lookup (aid->row + read k)"]
        summary.append((spec, [
            ("exact 1-thread <= FAISS 1-thread (cpu)", f"{ours1 / f1c:.2f}x" if f1c else "n/a", bool(f1c) and ours1 <= f1c),
            ("exact 1-thread <= 1.2x stream floor (cpu)", f"{ours1 / floor:.2f}x", ours1 <= 1.2 * floor),
            ("exact 2-thread <= 0.6x FAISS 1-thread (wall)", f"{ours2 / f1:.2f}x" if f1 else "n/a", bool(f1) and ours2 <= 0.6 * f1),
            ("exact-int8 2-thread <= 0.6x FAISS 1-thread (wall)", f"{int8_2 / f1:.2f}x" if f1 else "n/a",
             bool(f1) and int8_2 <= 0.6 * f1),
            ("table lookup <= 10 us (cpu)", f"{lookup * 1e6:.2f} us (wall {lookup_wall * 1e6:.2f} us)", lookup <= 10e-6),
            ("table build <= 1.3x BLAS products (1 thread, cpu)", f"{build / blas:.2f}x", build <= 1.3 * blas),
        ]))
    print(f"# bench_topk  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {platform.machine()}, nproc {os.cpu_count()}, python {platform.python_version()}, "
          f"numpy {np.__version__}, numba {numba.__version__}, load avg {os.getloadavg()[0]:.2f}, "
          f"OPENBLAS_NUM_THREADS={ARGS.blas_threads}")
    print("\n| matrix | method | wall p50 (ms) | cpu p50 (ms) | note |\n|---|---|---:|---:|---|")
    for m, name, wall, cpu, note in out:
        cpu_s = f"{cpu * 1e3:.3f}" if cpu is not None else "-"
        print(f"| {m} | {name} | {wall * 1e3:.3f} | {cpu_s} | {note} |")
    print("\n| matrix | target | measured | met |\n|---|---|---|---|")
    for spec, items in summary:
        for name, meas, ok in items:
            print(f"| {spec} | {name} | {meas} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
