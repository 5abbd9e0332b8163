"""Benchmark: OTTO JSONL -> columns. Our reader vs pyarrow, polars, an orjson loop and a json loop.

Generates (or reuses) an OTTO-format file under bench/out/, warms it into the page cache, then runs
every reader in a fresh subprocess and reports wall time, MB/s, events/s, peak RSS (VmHWM) and
the ratio to pyarrow.json.read_json. Also times ``export`` (dataset -> compact JSONL).

Usage: python bench/bench_prep.py [--size-mb 600] [--only ours,pyarrow,...] [--keep] [--threads N]
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

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
READERS = ("ours", "pyarrow", "polars", "orjson", "json")


# --------------------------------------------------------------------------- input file
def make_input(size_mb: int, quiet: bool) -> Path:
    """An OTTO JSONL file of about ``size_mb`` MB (synthetic sessions, realistic ids and ts)."""
    path = OUT / f"otto_{size_mb}mb.jsonl"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    # the full OTTO train file: 11.3 GB for 12.9M sessions -> ~880 bytes per session
    n_sessions = max(1000, int(size_mb * 1e6 / 880))
    t0 = time.perf_counter()
    try:
        from data_prep import synth
        synth.generate(path, n_sessions, None, seed=0, quiet=True)
        how = "data_prep.synth.generate"
    except ImportError:
        _simple_generate(path, n_sessions)
        how = "simple generator"
    if not quiet:
        print(f"generated {path.name} ({path.stat().st_size / 1e6:.0f} MB, {n_sessions:,} sessions) "
              f"with {how} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


def _simple_generate(path: Path, n_sessions: int) -> None:
    import numpy as np
    from data_prep import Dataset
    from data_prep.reader import export
    rng = np.random.default_rng(0)
    lens = np.minimum(rng.geometric(1 / 16.8, n_sessions), 500)
    offsets = np.zeros(n_sessions + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    E = int(offsets[-1])
    aid = (rng.zipf(1.3, E) * 7919 % 1_855_603).astype(np.int32)
    start = 1659304800000 + rng.integers(0, 28 * 86400_000, n_sessions)
    gaps = rng.exponential(60_000, E).astype(np.int64)
    gaps[offsets[:-1]] = 0
    ts = np.repeat(start, lens) + np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[offsets[:-1]], lens)
    typ = rng.choice(3, E, p=[0.9, 0.08, 0.02]).astype(np.uint8)
    ds = Dataset(np.arange(n_sessions, dtype=np.int64), offsets, aid, ts, typ)
    export(ds, path, quiet=True)


def warm_cache(path: Path) -> float:
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while fh.read(64 << 20):
            pass
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- one reader (child process)
def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(name: str, path: Path, threads: int | None) -> dict:
    rss0 = peak_rss_mb()
    if name == "ours":
        import numpy as np  # noqa: F401
        from data_prep.reader import convert
        sample = HERE.parent / "tests" / "data" / "otto_sample_train.jsonl"
        tmp = OUT / f"ds_{os.getpid()}"
        convert(sample, tmp, quiet=True, overwrite=True, threads=threads)  # load the cached kernels
        rss0 = peak_rss_mb()
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        convert(path, tmp, quiet=True, overwrite=True, threads=threads)
        dt = time.perf_counter() - t0
        cpu = cpu_seconds() - c0
        rss = peak_rss_mb()  # before the export below
        meta = json.loads((tmp / "meta.json").read_text())
        events = meta["n_events"]
        out_bytes = sum(f.stat().st_size for f in tmp.iterdir())
        # export the dataset back (dataset -> compact JSONL), byte-compare with the input
        back = OUT / f"export_{os.getpid()}.jsonl"
        from data_prep.reader import export
        t1 = time.perf_counter()
        export(tmp, back, quiet=True)
        dt_export = time.perf_counter() - t1
        same = _same_file(back, path)
        back.unlink()
        shutil.rmtree(tmp)
        return {"seconds": dt, "cpu_seconds": cpu, "events": events, "rss_mb": rss, "rss_before_mb": rss0,
                "output_mb": out_bytes / 1e6, "export_seconds": dt_export, "export_identical": same}
    if name == "pyarrow":
        import pyarrow.compute as pc
        import pyarrow.json as pj
        rss0 = peak_rss_mb()
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        table = pj.read_json(path)
        dt = time.perf_counter() - t0
        cpu = cpu_seconds() - c0
        events = int(pc.sum(pc.list_value_length(table.column("events"))).as_py())
    elif name == "polars":
        import polars as pl
        rss0 = peak_rss_mb()
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        df = pl.read_ndjson(path)
        dt = time.perf_counter() - t0
        cpu = cpu_seconds() - c0
        events = int(df["events"].list.len().sum())
    elif name in ("orjson", "json"):
        import array
        loads = __import__(name).loads
        rss0 = peak_rss_mb()
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        sess, offs, aid, ts, typ = array.array("q"), array.array("q", [0]), array.array("i"), array.array("q"), array.array("B")
        codes = {"clicks": 0, "carts": 1, "orders": 2}
        with open(path, "rb") as fh:
            for line in fh:
                rec = loads(line)
                sess.append(rec["session"])
                for ev in rec["events"]:
                    aid.append(ev["aid"])
                    ts.append(ev["ts"])
                    typ.append(codes[ev["type"]])
                offs.append(len(aid))
        dt = time.perf_counter() - t0
        cpu = cpu_seconds() - c0
        events = len(aid)
    else:
        raise SystemExit(f"unknown reader {name}")
    return {"seconds": dt, "cpu_seconds": cpu, "events": events, "rss_mb": peak_rss_mb(), "rss_before_mb": rss0}


def _same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(16 << 20), fb.read(16 << 20)
            if x != y:
                return False
            if not x:
                return True


# --------------------------------------------------------------------------- driver
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=600, help="approximate input size in MB (default 600)")
    ap.add_argument("--input", type=Path, help="use this OTTO JSONL file instead of generating one")
    ap.add_argument("--only", default=",".join(READERS), help=f"comma list of readers to run (default {','.join(READERS)})")
    ap.add_argument("--threads", type=int, default=None, help="threads for our reader (default: all cores)")
    ap.add_argument("--keep", action="store_true", help="keep the generated input under bench/out/ for the next run")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--child", nargs=2, metavar=("READER", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.threads)))
        return 0
    path = args.input or make_input(args.size_mb, quiet=False)
    size = path.stat().st_size
    warm = warm_cache(path)
    print(f"input {path.name}: {size / 1e6:.0f} MB, warmed into the page cache in {warm:.1f} s", file=sys.stderr)
    results = {}
    for name in [r for r in args.only.split(",") if r]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, str(path)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        warm_cache(path)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
        if proc.returncode != 0:
            print(f"{name}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["mb_s"] = size / 1e6 / r["seconds"]
        r["ev_s"] = r["events"] / r["seconds"]
        results[name] = r
        print(f"{name:8s} {r['seconds']:8.2f} s {r['mb_s']:8.0f} MB/s {r['ev_s'] / 1e6:8.2f} M events/s "
              f"peak RSS {r['rss_mb']:8.0f} MB", file=sys.stderr)
    base = results.get("pyarrow", {}).get("mb_s")
    import numba
    import numpy
    print()
    print(f"input: {path.name}, {size / 1e6:.0f} MB, {results.get('ours', results.get('pyarrow', {})).get('events', 0):,} events; "
          f"read from page cache (warmed before each run)")
    print(f"python {platform.python_version()}, numpy {numpy.__version__}, numba {numba.__version__}, nproc {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f}")
    print()
    print("| reader | wall s | CPU s | MB/s | M events/s | peak RSS MB (before read) | MB/s vs pyarrow |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        ratio = f"{r['mb_s'] / base:.2f}x" if base else "n/a"
        print(f"| {name} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['mb_s']:.0f} | {r['ev_s'] / 1e6:.2f} | "
              f"{r['rss_mb']:.0f} ({r['rss_before_mb']:.0f}) | {ratio} |")
    if "ours" in results:
        r = results["ours"]
        print()
        print(f"ours: output {r['output_mb']:.0f} MB; peak RSS {r['rss_mb']:.0f} MB "
              f"(budget: output + 1 GB = {r['output_mb'] + 1024:.0f} MB); "
              f"export {r['export_seconds']:.2f} s = {size / 1e6 / r['export_seconds']:.0f} MB/s written, "
              f"byte-identical to the input: {r['export_identical']}")
    if args.json:
        args.json.write_text(json.dumps({"size": size, "results": results}, indent=2))
    if not args.keep and not args.input:
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
