"""Benchmark: the synthetic OTTO generator (``otto-prep synth``).

1. End to end: ``generate`` of ``--sessions`` sessions into bench/out/ in a fresh subprocess (after
   a tiny warm-up call that loads the cached kernels), with 1 thread and with all threads: wall
   time, MB/s, sessions/s, events/s and peak RSS (VmHWM).
2. JSON formatting, ours vs the competitors: the same generated sessions serialised by our Numba
   formatter (``format_batch``) and by orjson / json (dict per session, compact separators). The
   outputs are compared byte for byte and the ratios printed.
3. ``--full-stats``: generate the full-size set (12,899,779 sessions, default items) in memory
   without writing and print its statistics next to the published OTTO table.
4. ``--full``: write the full-size file (~11 GB) to bench/out/, time and peak RSS, then delete it
   (unless ``--keep``). Checks free disk space first.

Usage: python bench/bench_synth.py [--sessions 1000000] [--format-sessions 100000] [--full-stats]
                                   [--full] [--keep] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
FULL_SESSIONS = 12_899_779
PUBLISHED = {
    "sessions": 12_899_779, "items": 1_855_603, "events": 216_716_096,
    "clicks": 194_720_954, "carts": 16_896_191, "orders": 5_098_951,
    "per_session": {"mean": 16.80, "std": 33.58, "min": 2, "p50": 6, "p75": 15, "p90": 39, "p95": 68, "max": 500},
    "per_item": {"mean": 116.79, "std": 728.85, "min": 3, "p50": 20, "p75": 56, "p90": 183, "p95": 398, "max": 129_004},
}


def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- child: one generate run
def child(n_sessions: int, threads: int, path: Path) -> dict:
    from data_prep import synth
    synth.generate(OUT / f".warm_{os.getpid()}.jsonl", 200, None, 0, quiet=True, threads=threads)
    os.unlink(OUT / f".warm_{os.getpid()}.jsonl")
    rss0 = peak_rss_mb()
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    s = synth.generate(path, n_sessions, None, 0, quiet=True, threads=threads)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "cpu_seconds": cpu_seconds() - c0, "bytes": s["jsonl_bytes"], "events": s["events"],
            "sessions": n_sessions, "rss_mb": peak_rss_mb(), "rss_before_mb": rss0, "summary": s}


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (load-independent cost)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_child(n_sessions: int, threads: int, path: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n_sessions), str(threads), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    if proc.returncode != 0:
        raise SystemExit(f"generate child failed: {proc.stderr.strip()[-2000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["mb_s"] = r["bytes"] / 1e6 / r["seconds"]
    r["sessions_s"] = r["sessions"] / r["seconds"]
    r["events_s"] = r["events"] / r["seconds"]
    return r


# --------------------------------------------------------------------------- formatting vs orjson / json
def bench_format(n_sessions: int, threads: int) -> dict:
    import orjson

    from data_prep import synth
    cat = synth.build_catalog(synth.default_items(n_sessions), 0, threads=threads)
    offsets, aid, ts, typ, *_ = synth.generate_batch(cat, 0, n_sessions, n_sessions, 0, threads=threads)
    synth.format_batch(0, offsets[:3], aid, ts, typ)  # warm
    res = {}
    for name, th in (("ours (1 thread)", 1), (f"ours ({threads} threads)", threads)):
        t0 = time.perf_counter()
        ours = synth.format_batch(0, offsets, aid, ts, typ, th).tobytes()
        res[name] = time.perf_counter() - t0
    names = ("clicks", "carts", "orders")
    # the competitors start from the same arrays; building the Python objects is part of the job
    t0 = time.perf_counter()
    aid_l, ts_l, typ_l = aid.tolist(), ts.tolist(), typ.tolist()
    parts = []
    for i in range(n_sessions):
        a, b = int(offsets[i]), int(offsets[i + 1])
        obj = {"session": i, "events": [{"aid": aid_l[e], "ts": ts_l[e], "type": names[typ_l[e]]} for e in range(a, b)]}
        parts.append(orjson.dumps(obj))
        parts.append(b"\n")
    other = b"".join(parts)
    res["orjson"] = time.perf_counter() - t0
    same_orjson = other == ours
    k = max(1, n_sessions // 5)  # json is slow: time a fifth and scale
    t0 = time.perf_counter()
    parts = []
    for i in range(k):
        a, b = int(offsets[i]), int(offsets[i + 1])
        obj = {"session": i, "events": [{"aid": aid_l[e], "ts": ts_l[e], "type": names[typ_l[e]]} for e in range(a, b)]}
        parts.append(json.dumps(obj, separators=(",", ":")))
        parts.append("\n")
    js = "".join(parts).encode()
    res["json (scaled from 1/5)"] = (time.perf_counter() - t0) * n_sessions / k
    same_json = ours.startswith(js)
    return {"seconds": res, "bytes": len(ours), "events": int(offsets[-1]), "sessions": n_sessions,
            "identical_orjson": same_orjson, "identical_json_prefix": same_json}


# --------------------------------------------------------------------------- full-size statistics in memory
def full_stats(threads: int, batch: int = 262_144) -> tuple[dict, float]:
    from data_prep import stats, synth
    from data_prep.progress import Progress
    t0 = time.perf_counter()
    n_items = synth.default_items(FULL_SESSIONS)
    cat = synth.build_catalog(n_items, 0, threads=threads)
    lens = np.empty(FULL_SESSIONS, dtype=np.int64)
    counts = np.zeros(n_items, dtype=np.int64)
    types = np.zeros(3, dtype=np.int64)
    progress = Progress("full-stats", FULL_SESSIONS, unit="sessions")
    for first in range(0, FULL_SESSIONS, batch):
        nb = min(batch, FULL_SESSIONS - first)
        offsets, aid, ts, typ, item, *_ = synth.generate_batch(cat, first, nb, FULL_SESSIONS, 0, threads=threads)
        lens[first:first + nb] = np.diff(offsets)
        counts += np.bincount(aid, minlength=n_items)
        types += np.bincount(typ, minlength=3)
        progress.report(first + nb)
    progress.close()
    per_item = counts[counts > 0]
    st = {"sessions": FULL_SESSIONS, "items": int(per_item.size), "events": int(lens.sum()),
          "clicks": int(types[0]), "carts": int(types[1]), "orders": int(types[2]),
          "per_session": stats.describe(lens), "per_item": stats.describe(per_item),
          "top_item_share": float(per_item.max() / lens.sum())}
    return st, time.perf_counter() - t0


def print_stats_table(st: dict) -> None:
    print("| | ours | published | ratio |")
    print("|---|---:|---:|---:|")
    for k in ("sessions", "items", "events", "clicks", "carts", "orders"):
        print(f"| {k} | {st[k]:,} | {PUBLISHED[k]:,} | {st[k] / PUBLISHED[k]:.3f} |")
    for k in ("clicks", "carts", "orders"):
        print(f"| {k} share | {100 * st[k] / st['events']:.2f}% | {100 * PUBLISHED[k] / PUBLISHED['events']:.2f}% | |")
    for part in ("per_session", "per_item"):
        for f in ("mean", "std", "min", "p50", "p75", "p90", "p95", "max"):
            o, p = st[part][f], PUBLISHED[part][f]
            print(f"| {part} {f} | {o:,.2f} | {p:,} | {o / p:.2f} |")


# --------------------------------------------------------------------------- driver
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1_000_000, help="sessions for the end-to-end run (default 1000000)")
    ap.add_argument("--format-sessions", type=int, default=100_000,
                    help="sessions for the formatter comparison (default 100000)")
    ap.add_argument("--threads", type=int, default=None, help="threads for the multi-threaded runs (default: all CPUs)")
    ap.add_argument("--full-stats", action="store_true", help="statistics of the full-size set, generated in memory")
    ap.add_argument("--full", action="store_true", help="also write the full-size file (~11 GB) to bench/out/")
    ap.add_argument("--keep", action="store_true", help="keep the generated files under bench/out/")
    ap.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end medium-size runs")
    ap.add_argument("--child", nargs=3, metavar=("N", "THREADS", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), int(args.child[1]), Path(args.child[2]))))
        return 0
    from data_prep import synth
    threads = args.threads or synth.default_threads()
    OUT.mkdir(parents=True, exist_ok=True)
    import numba
    print(f"# bench_synth: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
          f"nproc {os.cpu_count()}, python {platform.python_version()}, numpy {np.__version__}, "
          f"numba {numba.__version__}, load {os.getloadavg()[0]:.2f}")
    if not args.skip_e2e:
        print(f"\n## End to end: {args.sessions:,} sessions (default items), plain JSONL\n")
        print("| threads | seconds | CPU seconds | MB | MB/s | MB per CPU-second | sessions/s | events/s | peak RSS MB |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for th in sorted({1, threads}):
            path = OUT / f"synth_{args.sessions}.jsonl"
            r = run_child(args.sessions, th, path)
            print(f"| {th} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['bytes'] / 1e6:,.0f} | {r['mb_s']:,.0f} | "
                  f"{r['bytes'] / 1e6 / r['cpu_seconds']:,.0f} | "
                  f"{r['sessions_s']:,.0f} | {r['events_s'] / 1e6:.2f} M | {r['rss_mb']:,.0f} |", flush=True)
            if not args.keep:
                path.unlink(missing_ok=True)
    f = bench_format(args.format_sessions, threads)
    print(f"\n## JSON formatting of the same {f['sessions']:,} sessions ({f['events']:,} events, "
          f"{f['bytes'] / 1e6:.1f} MB); identical bytes: orjson {f['identical_orjson']}, "
          f"json {f['identical_json_prefix']}\n")
    print("| formatter | seconds | MB/s | ratio vs orjson |")
    print("|---|---:|---:|---:|")
    base = f["seconds"]["orjson"]
    for name, sec in f["seconds"].items():
        print(f"| {name} | {sec:.3f} | {f['bytes'] / 1e6 / sec:,.0f} | {base / sec:.2f}x |")
    if args.full_stats:
        st, sec = full_stats(threads)
        print(f"\n## Full-size statistics (generated in memory, {sec:.0f} s; top item holds "
              f"{100 * st['top_item_share']:.3f}% of events, published 0.060%)\n")
        print_stats_table(st)
    if args.full:
        need = 14e9
        free = shutil.disk_usage(OUT).free
        if free < need:
            print(f"\n(full-size run skipped: {free / 1e9:.0f} GB free under bench/out, need {need / 1e9:.0f} GB)")
        else:
            path = OUT / "synth_full.jsonl"
            r = run_child(FULL_SESSIONS, threads, path)
            print(f"\n## Full size: {FULL_SESSIONS:,} sessions, {threads} threads\n")
            print("| seconds | CPU seconds | GB | MB/s | sessions/s | events | peak RSS MB |")
            print("|---:|---:|---:|---:|---:|---:|---:|")
            print(f"| {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['bytes'] / 1e9:.2f} | {r['mb_s']:,.0f} | {r['sessions_s']:,.0f} | "
                  f"{r['events']:,} | {r['rss_mb']:,.0f} |")
            if not args.keep:
                path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
