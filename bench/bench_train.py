"""Benchmark: our skip-gram negative-sampling training vs gensim 4.4, same corpus, same settings.

Builds (or reuses) a synthetic OTTO dataset of at least ``--events`` events under bench/out/
(data_prep.synth -> JSONL -> data_prep.reader.convert), keeps the last ``--test-frac`` of the
sessions for evaluation and trains on the rest with sg, D=100, window=10, negative=5,
sample=1e-3, min_count=1, 1 epoch. Every run is a fresh subprocess:

* ours fast mode with 1 and 2 threads, ours parity mode (1 thread),
* gensim with 1 and 2 workers, trained on the same sentences as lists of ``str`` tokens.

Reported per run: training wall time (vocabulary building and, for us, JIT compilation excluded:
a warm-up run on a tiny corpus comes first), words/s counted the same way for both (RAW words of
the training sentences per second of ``train``), held-out next-item recall@20 (for consecutive
pairs a -> b, a != b, both in the vocabulary: is b among the 20 nearest aids of a by cosine) and
the process's peak RSS at the end of training (VmHWM; gensim's includes its Python token lists).
Ratios are ours/gensim. On a shared machine wall-clock words/s depend on the load, so words per
CPU-second (process CPU time during ``train``) are reported too.

Usage: python bench/bench_train.py [--events 3000000] [--repeats 1] [--pairs 20000] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
HYPER = dict(vector_size=100, window=10, negative=5, sample=1e-3, min_count=1, epochs=1, alpha=0.025,
             min_alpha=0.0001, seed=1)
RUNS = ("ours-fast-1", "ours-fast-2", "ours-parity-1", "gensim-1", "gensim-2")


def make_dataset(events: int, quiet: bool) -> Path:
    path = OUT / f"train_synth_{events}"
    if (path / "meta.json").exists():
        return path
    from data_prep import reader, synth
    OUT.mkdir(parents=True, exist_ok=True)
    n_sessions = int(events / 16.5) + 1  # synth sessions average about 16.8 events
    jsonl = OUT / f"train_synth_{events}.jsonl"
    t0 = time.perf_counter()
    synth.generate(jsonl, n_sessions, None, seed=0, quiet=True)
    reader.convert(jsonl, path, quiet=True, overwrite=True)
    jsonl.unlink()
    if not quiet:
        print(f"dataset {path.name}: {n_sessions:,} sessions in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return path


def split(ds, test_frac: float):
    n_test = max(1, int(ds.n_sessions * test_frac))
    train_rows = np.arange(0, ds.n_sessions - n_test)
    test_rows = np.arange(ds.n_sessions - n_test, ds.n_sessions)
    return ds.take(train_rows), ds.take(test_rows)


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_pairs(test, row_of: dict, max_pairs: int, seed: int = 0):
    a = np.asarray(test.aid, dtype=np.int64)
    same_session = np.ones(a.shape[0], bool)
    same_session[np.asarray(test.offsets[1:-1])] = False  # pair (i-1, i) crosses a session boundary
    src, dst = a[:-1], a[1:]
    ok = same_session[1:] & (src != dst)
    src, dst = src[ok], dst[ok]
    keep = np.array([int(s) in row_of and int(d) in row_of for s, d in zip(src, dst)], bool)
    src, dst = src[keep], dst[keep]
    if src.shape[0] > max_pairs:
        sel = np.random.default_rng(seed).choice(src.shape[0], max_pairs, replace=False)
        src, dst = src[sel], dst[sel]
    return (np.array([row_of[int(s)] for s in src], np.int64), np.array([row_of[int(d)] for d in dst], np.int64))


def recall_at_20(vectors: np.ndarray, q_rows: np.ndarray, t_rows: np.ndarray) -> float:
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    v = v.astype(np.float32)
    hits = 0
    for lo in range(0, q_rows.shape[0], 512):
        q = q_rows[lo:lo + 512]
        sims = v[q] @ v.T
        sims[np.arange(q.shape[0]), q] = -np.inf
        top = np.argpartition(-sims, 20, axis=1)[:, :20]
        hits += int((top == t_rows[lo:lo + 512, None]).any(axis=1).sum())
    return hits / max(1, q_rows.shape[0])


def worker(run: str, dataset: str, test_frac: float, max_pairs: int) -> dict:
    from data_prep.dataset import Dataset
    ds = Dataset.open(dataset)
    train, test = split(ds, test_frac)
    kind, *rest = run.split("-")
    threads = int(rest[-1])
    raw_words = int(train.n_events)
    if kind == "ours":
        from w2v.config import W2VConfig
        from w2v.trainer import Word2Vec
        cfg = W2VConfig(mode=rest[0], workers=threads, **HYPER)
        warm = Word2Vec(W2VConfig(mode=rest[0], workers=threads, vector_size=8, min_count=1, epochs=1))
        warm.build_vocab_from_sequences([[1, 2, 3, 4]] * 10).train(progress=False)
        t0 = time.perf_counter()
        model = Word2Vec(cfg).build_vocab(train)
        vocab_s = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        model.train(progress=False)
        train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        aids, vectors = model.aids, model.vectors
        kept = model.history[-1]["kept_words"]
        loss = model.epoch_losses[-1]
    else:
        from gensim.models import Word2Vec as GensimW2V
        t0 = time.perf_counter()
        words = np.asarray(train.aid).astype(str).tolist()
        off = np.asarray(train.offsets)
        sentences = [words[off[i]:off[i + 1]] for i in range(train.n_sessions)]
        g = GensimW2V(sg=1, hs=0, workers=threads, **HYPER)
        g.build_vocab(sentences)
        vocab_s = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        kept, raw = g.train(sentences, total_examples=g.corpus_count, epochs=1)
        train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        assert raw == raw_words
        aids = np.array([int(k) for k in g.wv.index_to_key], np.int64)
        vectors = g.wv.vectors
        loss = None
    rss = peak_rss_mb()  # before the evaluation's own temporaries
    row_of = {int(a): i for i, a in enumerate(aids)}
    q, t = test_pairs(test, row_of, max_pairs)
    return dict(run=run, threads=threads, raw_words=raw_words, kept_words=int(kept), vocab_s=vocab_s,
                train_s=train_s, cpu_s=cpu_s, words_per_cpu_s=raw_words / max(cpu_s, 1e-9), words_per_s=raw_words / train_s, recall20=recall_at_20(vectors, q, t),
                test_pairs=int(q.shape[0]), loss=loss, peak_rss_mb=rss, vocab=int(aids.shape[0]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=3_000_000, help="events in the generated dataset (>= 3M for the table)")
    ap.add_argument("--test-frac", type=float, default=0.05, help="fraction of sessions held out for recall@20")
    ap.add_argument("--pairs", type=int, default=20000, help="held-out (a -> b) pairs evaluated")
    ap.add_argument("--repeats", type=int, default=1, help="runs per configuration; the fastest is reported")
    ap.add_argument("--only", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.dataset, args.test_frac, args.pairs)))
        return 0
    path = make_dataset(args.events, args.quiet)
    results = {}
    runs = [r for r in args.only.split(",") if r]
    for rep in range(args.repeats):
        for run in runs:
            cmd = [sys.executable, __file__, "--worker", run, "--dataset", str(path), "--test-frac", str(args.test_frac),
                   "--pairs", str(args.pairs)]
            p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
            if p.returncode != 0:
                print(f"{run}: failed\n{p.stderr[-2000:]}", file=sys.stderr)
                return 1
            r = json.loads(p.stdout.strip().splitlines()[-1])
            if not args.quiet:
                print(f"[{rep + 1}/{args.repeats}] {run}: {r['words_per_s']:,.0f} words/s, "
                      f"{r['words_per_cpu_s']:,.0f} words/CPU-s, recall@20 {r['recall20']:.4f}, "
                      f"{r['train_s']:.1f}s, peak RSS {r['peak_rss_mb']:.0f} MB", file=sys.stderr)
            if run not in results or r["words_per_s"] > results[run]["words_per_s"]:
                results[run] = r
    import numba
    env = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=platform.machine(),
               nproc=os.cpu_count(), python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
               loadavg=os.getloadavg())
    try:
        import gensim
        env["gensim"] = gensim.__version__
    except ImportError:
        pass
    print(f"# {env}")
    print("| run | threads | words/s (wall) | vs gensim same threads | words per CPU-s | vs gensim | recall@20 | vs gensim "
          "| train s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        r = results[run]
        g = results.get(f"gensim-{r['threads']}")
        sp = f"{r['words_per_s'] / g['words_per_s']:.2f}x" if g else "-"
        rc = f"{r['recall20'] / g['recall20']:.3f}x" if g and g["recall20"] > 0 else "-"
        cp = f"{r['words_per_cpu_s'] / g['words_per_cpu_s']:.2f}x" if g else "-"
        print(f"| {run} | {r['threads']} | {r['words_per_s']:,.0f} | {sp} | {r['words_per_cpu_s']:,.0f} | {cp} | "
              f"{r['recall20']:.4f} | {rc} | {r['train_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(dict(env=env, results=results), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
