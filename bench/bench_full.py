"""The whole pipeline at full OTTO size, and at fractions of it, with the growth of every stage.

    python bench/bench_full.py [--scales 1/16,1/4,1] [--work DIR] [--input FULL.jsonl]
                               [--dataset FULL_DATASET] [--results bench/RESULTS.md]
    python bench/bench_full.py --report-only [--work DIR]     # re-render RESULTS from the JSON

For every scale s, ``round(s * --sessions)`` sessions are generated with ``otto-prep synth``
(defaults = the published OTTO statistics; ``--input`` / ``--dataset`` reuse an existing
full-size file / converted dataset for s = 1), then the demo chain runs, each stage a separate
process measured with ``os.wait4`` (wall, user+system CPU, peak RSS) plus the size of what it
wrote and the load average while it ran:

    convert -> split (7 days) -> train -> index (k = 20, --method auto) -> otto-eval run (every
    recommender, the whole test set; next-click on --next-click-sessions sampled sessions) ->
    otto-serve (time to ready, RSS) + a bounded load test (item and session requests).

Before the first scale, an untimed warm-up chain on ``--warm-up`` generated sessions (in
WORK/warm-up) compiles every Numba kernel the timed stages use (the IVF index with its reprobe
steps forced by a target recall of 1), so that on a fresh machine, whose kernel caches are empty,
the smallest scale is not charged the compilation and the growth exponents are not flattened.

Measurements go to WORK/scale-*/bench_full.json after every stage (a killed run keeps what it measured)
and, at the end of every scale, to the "Full-size chain" section (10) of --results. Growth exponents
are least-squares slopes of log(wall) and log(peak RSS) against log(events), and against
log(aids) for the vector stages, over the scales measured so far.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FULL_SESSIONS = 12_899_779
SECTION_BEGIN = "<!-- bench_full:begin -->"
SECTION_END = "<!-- bench_full:end -->"
VECTOR_STAGES = ("train", "index", "eval run", "serve")
WARM_UP_SESSIONS = 20_000
# the warm-up takes the IVF paths of the full-size stages: every refinement step and reprobe step
WARM_UP_IVF = "--method ivf --ivf-target-recall 1"


def log(msg: str) -> None:
    """The script's one progress printer (one line per event, stderr)."""
    print(f"[bench_full {time.strftime('%H:%M:%S', time.gmtime())}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scales", default="1/16,1/4,1", help="comma-separated fractions of --sessions (default 1/16,1/4,1)")
    p.add_argument("--sessions", type=int, default=FULL_SESSIONS, help=f"sessions at scale 1 (default {FULL_SESSIONS:,}, the real train set)")
    p.add_argument("--seed", type=int, default=42, help="seed of generation, split and training (default 42)")
    p.add_argument("--work", default=str(ROOT / "bench" / "out" / "full"), help="work directory (default bench/out/full)")
    p.add_argument("--input", help="existing OTTO JSONL to use at scale 1 instead of generating one")
    p.add_argument("--dataset", help="existing converted dataset to use at scale 1 (convert is then not re-run)")
    p.add_argument("--next-click-sessions", type=int, default=20_000,
                   help="full test sessions sampled for the next-click protocol of otto-eval run (default 20000)")
    p.add_argument("--serve-seconds", type=float, default=10.0, help="length of the load test (default 10 s)")
    p.add_argument("--serve-clients", type=int, default=4, help="concurrent keep-alive clients in the load test (default 4)")
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="results file whose section is (re)written")
    p.add_argument("--no-results", action="store_true", help="do not touch --results")
    p.add_argument("--resume", action="store_true",
                   help="keep the stages WORK/scale-*/bench_full.json records as done (rc 0, output present) and run the rest")
    p.add_argument("--index-flags", default="", help="extra flags of the index stage, e.g. '--ivf-nprobe 452'")
    p.add_argument("--eval-flags", default="", help="extra flags of the eval run stage, e.g. '--ivf-nprobe 452'")
    p.add_argument("--skip", type=lambda t: {x.strip() for x in t.split(",") if x.strip()}, default=set(),
                   help="comma-separated stages not to run: only 'eval run' may be skipped")
    p.add_argument("--report-only", action="store_true", help="only re-render the results section from WORK/bench_full.json")
    p.add_argument("--warm-up", type=int, default=WARM_UP_SESSIONS, metavar="SESSIONS",
                   help="sessions of the untimed chain run first (in WORK/warm-up) to compile every kernel, so the "
                        f"smallest scale is not charged the compilation (default {WARM_UP_SESSIONS:,}; 0: none)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ measurement
class LoadSampler:
    """1-minute load average sampled every 5 s while a stage runs (the machine is shared)."""

    def __init__(self):
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(5.0):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> dict:
        self._stop.set()
        self._t.join()
        self.samples.append(os.getloadavg()[0])
        return {"load_mean": round(sum(self.samples) / len(self.samples), 2), "load_max": round(max(self.samples), 2)}


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run_stage(name: str, cmd: list[str], out: Path, logfile: Path) -> dict:
    """Run one stage as a child process; wall, CPU, peak RSS (wait4), output size, load."""
    log(f"{name}: {' '.join(cmd)}")
    load = LoadSampler()
    t0 = time.perf_counter()
    with open(logfile, "w") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    r = {"stage": name, "wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
         "peak_rss_mb": round(ru.ru_maxrss / 1024, 1), "out_mb": round(tree_bytes(out) / 1e6, 1),
         "rc": p.returncode, "log": str(logfile), **load.stop()}
    log(f"{name}: rc {r['rc']}, {r['wall_s']} s wall, {r['cpu_s']} s CPU, {r['peak_rss_mb']} MB peak RSS, "
        f"{r['out_mb']} MB written, load {r['load_mean']} (max {r['load_max']})")
    if p.returncode != 0:
        tail = logfile.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{name} failed (exit {p.returncode}); end of {logfile}:\n{tail}")
    return r


def rss_of(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a live process in MB."""
    txt = Path(f"/proc/{pid}/status").read_text()
    get = lambda key: int(re.search(rf"^{key}:\s+(\d+) kB", txt, re.M).group(1)) / 1024  # noqa: E731
    return round(get("VmRSS"), 1), round(get("VmHWM"), 1)


def load_test(port: int, aids: list[int], seconds: float, clients: int, seed: int) -> dict:
    """``clients`` keep-alive connections for ``seconds``: 90% GET item, 10% POST session (5 aids)."""
    stop_at = time.monotonic() + seconds
    lat = {"item": [], "session": []}
    errors = {"n": 0}
    lock = threading.Lock()

    def client(c):
        rng = random.Random(seed * 1000 + c)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = {"item": [], "session": []}
        while time.monotonic() < stop_at:
            kind = "session" if rng.random() < 0.1 else "item"
            t = time.perf_counter()
            try:
                if kind == "item":
                    conn.request("GET", f"/api/v1/recommendations/{rng.choice(aids)}?k=20")
                else:
                    body = json.dumps({"aids": rng.sample(aids, 5), "k": 20})
                    conn.request("POST", "/api/v1/recommendations", body=body,
                                 headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if ok:
                mine[kind].append(time.perf_counter() - t)
            else:
                with lock:
                    errors["n"] += 1
        conn.close()
        with lock:
            for key in lat:
                lat[key] += mine[key]

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def q(xs, f):
        xs = sorted(xs)
        return round(1000 * xs[min(len(xs) - 1, int(f * len(xs)))], 2) if xs else None

    out = {"seconds": seconds, "clients": clients, "errors": errors["n"]}
    for key, xs in lat.items():
        out[key] = {"requests": len(xs), "rps": round(len(xs) / seconds, 1), "p50_ms": q(xs, 0.5), "p99_ms": q(xs, 0.99)}
    return out


def serve_stage(py: str, model: Path, logfile: Path, args) -> dict:
    """Start otto-serve on port 0, time it to /readyz = 200, load-test it, read its RSS, stop it."""
    import numpy as np
    aids = np.load(model / "aids.npy", mmap_mode="r")
    pick = np.random.default_rng(args.seed).choice(aids.shape[0], min(10_000, aids.shape[0]), replace=False)
    aid_list = [int(a) for a in np.asarray(aids)[pick]]
    cmd = [py, "-m", "serve", str(model), "--port", "0", "--quiet"]
    log(f"serve: {' '.join(cmd)}")
    load = LoadSampler()
    t0 = time.perf_counter()
    fh = open(logfile, "w")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=fh, text=True, cwd=ROOT, start_new_session=True)
    try:
        port = None
        while port is None:
            line = p.stdout.readline()
            if not line and p.poll() is not None:
                raise RuntimeError(f"otto-serve exited with {p.returncode} before listening; see {logfile}")
            m = re.search(r"listening on http://[^:]+:(\d+)", line)
            if m:
                port = int(m.group(1))
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/readyz")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() - t0 > 300:
                raise RuntimeError("otto-serve not ready after 300 s")
            time.sleep(0.05)
        ready = time.perf_counter() - t0
        rss_ready, _ = rss_of(p.pid)
        lt = load_test(port, aid_list, args.serve_seconds, args.serve_clients, args.seed)
        rss_after, hwm = rss_of(p.pid)
    finally:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        fh.close()
    vec_mb = (model / "vectors.npy").stat().st_size / 1e6
    r = {"stage": "serve", "wall_s": round(ready, 2), "ready_s": round(ready, 2), "rss_ready_mb": rss_ready,
         "rss_after_load_mb": rss_after, "peak_rss_mb": hwm, "vectors_mb": round(vec_mb, 1),
         "rss_budget_mb": round(vec_mb + 300, 1), "load_test": lt, "cpu_s": None, "out_mb": 0.0,
         "rc": 0, "log": str(logfile), **load.stop()}
    log(f"serve: ready in {ready:.2f} s, RSS {rss_ready} MB ready / {hwm} MB peak (budget {r['rss_budget_mb']} MB); "
        f"item p50 {lt['item']['p50_ms']} ms p99 {lt['item']['p99_ms']} ms ({lt['item']['rps']} rps), "
        f"session p50 {lt['session']['p50_ms']} ms p99 {lt['session']['p99_ms']} ms; errors {lt['errors']}")
    return r


# ------------------------------------------------------------------------------ the chain
def train_flags(py: str) -> tuple[list[str], str]:
    """The recommended training settings: the 'session' preset when this checkout has one."""
    h = subprocess.run([py, "-m", "w2v", "train", "--help"], capture_output=True, text=True, cwd=ROOT).stdout
    if "--preset" in h and "session" in h:
        return ["--preset", "session"], "--preset session"
    return [], "otto-train train defaults (no 'session' preset in this checkout)"


def scale_dir(work: Path, frac: Fraction) -> Path:
    tag = "1" if frac == 1 else f"{frac.numerator}-{frac.denominator}"
    return work / f"scale-{tag}"


def warm_up(args, machine: str) -> None:
    """The chain once on ``args.warm_up`` generated sessions in WORK/warm-up, not recorded in the
    results: it compiles (and caches) the Numba kernels of every stage."""
    log(f"warm-up: the chain on {args.warm_up:,} sessions (untimed; compiles the kernels)")
    t0 = time.perf_counter()
    run_scale(Fraction(1), argparse.Namespace(**{
        **vars(args), "sessions": args.warm_up, "work": str(Path(args.work) / "warm-up"), "input": None,
        "dataset": None, "resume": False, "serve_seconds": 1.0,
        "index_flags": f"{args.index_flags} {WARM_UP_IVF}", "eval_flags": f"{args.eval_flags} {WARM_UP_IVF}"}), machine)
    log(f"warm-up: done in {time.perf_counter() - t0:.1f} s")


def run_scale(frac: Fraction, args, machine: str) -> None:
    """The chain at one scale; its figures go to WORK/scale-*/bench_full.json after every stage
    (one file per scale, so runs of different scales may share WORK)."""
    py = sys.executable
    d = scale_dir(Path(args.work), frac)
    d.mkdir(parents=True, exist_ok=True)
    sessions = round(args.sessions * frac)
    jpath = d / "bench_full.json"
    rec = {"fraction": str(frac), "sessions": sessions, "stages": {}, "machine": machine,
           "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.resume and jpath.exists():  # the stages recorded as done are kept, with their figures
        rec = json.loads(jpath.read_text())
        rec.setdefault("resumed", []).append(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    stages = rec["stages"]

    def save():
        tmp = jpath.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        os.replace(tmp, jpath)

    def stage(name, cmd, out, marker=None):
        done = stages.get(name)
        if args.resume and done and done.get("rc") == 0 and Path(marker or out).exists():
            log(f"{name}: recorded as done ({done['wall_s']} s wall), kept (--resume)")
            return
        stages[name] = run_stage(name, cmd, out, d / f"{name.replace(' ', '_')}.log")
        stages[name]["cmd"] = " ".join(cmd[1:])
        save()

    inp = Path(args.input) if (frac == 1 and args.input) else d / "train.jsonl"
    if frac == 1 and args.input:
        rec["input"] = "given (--input)"
    elif inp.exists():
        rec["input"] = "generated earlier, reused"
    else:
        stage("synth", [py, "-m", "data_prep", "synth", str(inp), "--sessions", str(sessions), "--seed", str(args.seed)], inp)
        rec["input"] = "generated"
    rec["input_mb"] = round(inp.stat().st_size / 1e6, 1) if inp.exists() else None
    ds = d / "dataset"
    if frac == 1 and args.dataset:
        ds = Path(args.dataset)
        rec["dataset"] = "given (--dataset); convert not re-run"
    else:
        stage("convert", [py, "-m", "data_prep", "convert", str(inp), str(ds), "--overwrite"], ds)
    meta = json.loads((ds / "meta.json").read_text())
    rec["events"] = int(meta["n_events"])
    rec["sessions"] = int(meta["n_sessions"])
    split = d / "split"
    stage("split", [py, "-m", "eval", "split", str(ds), str(split), "--days", "7", "--seed", str(args.seed), "--overwrite"], split)
    flags, rec["train_settings"] = train_flags(py)
    model = d / "model"
    stage("train", [py, "-m", "w2v", "train", str(split / "train"), str(model), "--seed", str(args.seed),
                    "--overwrite", *flags], model)
    mmeta = json.loads((model / "meta.json").read_text())
    rec["aids"] = int(mmeta.get("vocab_size", 0))
    rec["vector_size"] = int(mmeta.get("vector_size", 0))
    stage("index", [py, "-m", "w2v", "index", str(model), "--k", "20", *args.index_flags.split()], model,
          model / "index.json")
    rec["index"] = json.loads((model / "index.json").read_text())
    report = d / "report"
    if "eval run" in args.skip:
        log("eval run: skipped (--skip)")
        rec["skipped"] = sorted(set(rec.get("skipped", [])) | {"eval run"})
    else:
        _eval_stage(stage, rec, py, ds, split, model, report, args)
    stages["serve"] = serve_stage(py, model, d / "serve.log", args)
    save()
    rec["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    save()


def _eval_stage(stage, rec, py, ds, split, model, report, args) -> None:
    stage("eval run", [py, "-m", "eval", "run", str(ds), str(report), "--split", str(split), "--model", str(model),
                       "--seed", str(args.seed), "--next-click-sessions", str(args.next_click_sessions), "--overwrite",
                       *args.eval_flags.split()],
          report, report / "report.json")
    rj = json.loads((report / "report.json").read_text())
    rec["eval"] = {"timings": rj.get("timings", {}),
                   "results": {n: {"total": r.get("total"), "fit_s": r.get("fit_s"), "predict_s": r.get("predict_s"),
                                   "next_click_s": r.get("next_click_s")}
                               for n, r in rj.get("otto", {}).get("results", {}).items()}}


# ------------------------------------------------------------------------------ report
def slope(xs, ys):
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / den, 2) if den else None


def load_scales(work: Path) -> list[dict]:
    recs = [json.loads(p.read_text()) for p in work.glob("scale-*/bench_full.json")]
    return sorted(recs, key=lambda r: Fraction(r["fraction"]))


def render(scales: list[dict]) -> str:
    m = scales[0]["machine"] if scales else "?"
    started = ", ".join(f"{r['fraction']} {r['started']}" for r in scales)
    lines = [SECTION_BEGIN, "## 10. Full-size chain (`bench/bench_full.py`)", "",
             f"Runs started (scale, UTC): {started}; machine: {m}. Each stage is one process (`os.wait4`: wall, "
             "user+system CPU, peak RSS); load = 1-minute load average sampled every 5 s while the stage ran "
             "(2 cores shared with other work). Input generated by `otto-prep synth --sessions N --seed 42` "
             "(defaults = the published OTTO statistics) unless noted.", ""]
    for r in scales:
        st = r["stages"]
        skipped = [n for n in r.get("skipped", []) if n not in r["stages"]]
        done = ("**partial (run still going or stopped)**" if not r.get("finished") else
                f"**complete except {', '.join(skipped)} (not run: --skip)**" if skipped else "complete")
        lines += [f"### scale {r['fraction']}: {r.get('sessions', 0):,} sessions, {r.get('events', 0):,} events, "
                  f"{r.get('aids', 0):,} aids x {r.get('vector_size', 0)} ({done})", "",
                  f"input: {r.get('input', '?')} ({r.get('input_mb')} MB); training: {r.get('train_settings', '?')}; "
                  f"index: method {r.get('index', {}).get('method', '?')}"
                  + (f", nlist {r['index']['ivf']['nlist']}, nprobe {r['index']['ivf']['nprobe']}" if r.get("index", {}).get("ivf") else ""),
                  "", "| stage | wall (s) | CPU (s) | peak RSS (MB) | output (MB) | load mean / max |",
                  "|---|---|---|---|---|---|"]
        total = 0.0
        for name, s in st.items():
            if name != "synth":
                total += s["wall_s"]
            cpu = "" if s.get("cpu_s") is None else f"{s['cpu_s']:,.1f}"
            lines.append(f"| {name} | {s['wall_s']:,.1f} | {cpu} | {s['peak_rss_mb']:,.0f} | {s['out_mb']:,.1f} | "
                         f"{s['load_mean']} / {s['load_max']} |")
        lines += ["", f"chain after generation: **{total / 60:.1f} min** wall ({('all stages but ' + ', '.join(skipped)) if r.get('finished') and skipped else 'all stages' if r.get('finished') else 'stages so far'})."]
        if "serve" in st:
            s = st["serve"]
            lt = s["load_test"]
            lines += [f"serve: ready in {s['ready_s']} s; RSS {s['rss_ready_mb']:,.0f} MB when ready, "
                      f"{s['peak_rss_mb']:,.0f} MB peak (budget = vectors.npy {s['vectors_mb']:,.0f} MB + 300 MB); "
                      f"{lt['clients']} clients for {lt['seconds']} s: item GET p50 {lt['item']['p50_ms']} ms, p99 "
                      f"{lt['item']['p99_ms']} ms ({lt['item']['rps']} req/s); session POST p50 {lt['session']['p50_ms']} ms, "
                      f"p99 {lt['session']['p99_ms']} ms ({lt['session']['rps']} req/s); {lt['errors']} errors."]
        if r.get("eval"):
            ev = r["eval"]
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in ev["timings"].items())
            lines += [f"`otto-eval run` inside: {parts}."]
            lines += ["per recommender (fit / predict / next-click s): " + "; ".join(
                f"{n} {v['fit_s']:.1f}/{v['predict_s']:.1f}/{v['next_click_s']:.1f}" for n, v in ev["results"].items())]
        lines.append("")
    if len(scales) >= 2:
        names = [n for n in scales[0]["stages"] if n != "synth"]
        lines += ["### growth (least-squares exponent over the scales above)", "",
                  "Wall times depend on the load while each stage ran; CPU time is the steadier measure.", "",
                  "| stage | wall vs events | CPU vs events | RSS vs events | CPU vs aids | RSS vs aids |",
                  "|---|---|---|---|---|---|"]
        for n in names:
            have = [r for r in scales if n in r["stages"]]
            ev = [r.get("events") for r in have]
            ai = [r.get("aids") for r in have]
            w = [r["stages"][n]["wall_s"] for r in have]
            mem = [r["stages"][n]["peak_rss_mb"] for r in have]
            cpu = [r["stages"][n].get("cpu_s") for r in have]
            vec = n in VECTOR_STAGES
            f = lambda v: "–" if v is None else v  # noqa: E731
            lines.append(f"| {n} | {f(slope(ev, w))} | {f(slope(ev, cpu))} | {f(slope(ev, mem))} | "
                         f"{f(slope(ai, cpu)) if vec else ''} | {f(slope(ai, mem)) if vec else ''} |")
        lines.append("")
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def write_results(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if SECTION_BEGIN in text and SECTION_END in text:
        a = text.index(SECTION_BEGIN)
        b = text.index(SECTION_END) + len(SECTION_END) + 1
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        section = render(load_scales(work))
        print(section)
        if not args.no_results:
            write_results(Path(args.results), section)
        return 0
    import numba
    import numpy
    machine = (f"{platform.machine()}, nproc {os.cpu_count()}, "
               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, python "
               f"{platform.python_version()}, numpy {numpy.__version__}, numba {numba.__version__}")
    fracs = []
    for text in args.scales.split(","):
        frac = Fraction(text.strip())
        if not 0 < frac <= 1:
            raise SystemExit(f"bench_full: error: --scales: {text!r} is not a fraction in (0, 1]")
        fracs.append(frac)
    if args.warm_up > 0:
        warm_up(args, machine)
    for frac in fracs:
        run_scale(frac, args, machine)
        if not args.no_results:
            write_results(Path(args.results), render(load_scales(work)))
    print(render(load_scales(work)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
