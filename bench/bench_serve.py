"""Benchmark: otto-serve vs a Flask+gensim service vs a bare stdlib server, in one run.

All servers get the same random model directory (290,870 x 100 float32 by default). Its
neighbour table is built by ``w2v.knn.build_neighbor_table`` for the query rows the load
generator asks for (``--query-rows``) and filled with random valid rows elsewhere (serving
cost does not depend on the table's contents); ``--full-table`` builds it for every row.

Load: ``wrk`` when installed (keep-alive connections, ``--latency``), else a multi-process
Python load generator on raw keep-alive sockets. All servers stay up; ``--rounds`` rounds each
measure every scenario once at 1 and 8 connections (the table path and the bare server back to
back), so a shared machine's changing background load hits all servers alike. It reports the
median requests/s, p50 and p99 latency and non-2xx answers per scenario, then the per-round
ratios against the targets:

* table path at 8 connections >= 100x the Flask+gensim rps and >= 0.8x the bare-server rps
* table path at 8 connections p99 <= 5 ms; at 1 connection p50 <= 0.3 ms
* under hostile load (``--hostile N``, default 64: N never-reading pipeliners + N CRLF tricklers +
  N 1-byte/s header senders, held open by a separate process that reconnects whatever the server
  drops), the table path's requests all succeed with p99 <= 50 ms (1 connection, "a normal
  client"); the bare server is measured under the same load, and each p99 is also given as a
  ratio to the same server's p99 without it in the same round

and the memory of the otto-serve processes (RSS vs PSS of the mapped ``vectors.npy``).

``--also-model DIR`` adds a second otto-serve on an existing model directory with a neighbour
table (e.g. the full-size one ``bench/bench_full.py`` trains): its table path is measured right
after ours in every round (``--query-rows`` of its aids, drawn with a fixed seed), and its p50
(1 connection) and p99 (8 connections) are reported as ratios to ours, per round, against the
target "the same latency" (ratio <= 1.10).

``python bench/bench_serve.py [--duration 4] [--rounds 3] [--hostile 64] [--quiet]``
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serve import memory  # noqa: E402
from w2v import knn  # noqa: E402
from w2v.model_io import popularity, save_index, save_model  # noqa: E402


def log(msg, quiet=False):
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# --- model -----------------------------------------------------------------------------------------

def build_model(path: Path, V: int, D: int, k: int, query_rows: int, full: bool, seed: int, quiet: bool) -> str:
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal((V, D), dtype=np.float32)
    aids = rng.permutation(V * 6)[:V].astype(np.int64)
    counts = np.sort(rng.integers(1, 10000, V))[::-1].astype(np.int64)
    ev = rng.choice(aids, 200_000)
    pop, popc = popularity(ev, rng.integers(0, 3, ev.shape[0]), 1000)
    save_model(path, vec, np.zeros_like(vec), aids, counts, {"bench": True}, popular=pop, popular_counts=popc,
               overwrite=True)
    t0 = time.perf_counter()
    if full:
        nb, ns = knn.build_neighbor_table(vec, k)
        how = f"exact for all {V} rows (build_neighbor_table)"
    else:
        rows = np.arange(query_rows, dtype=np.int64)
        nb = rng.integers(0, V, (V, k)).astype(np.int32)
        ns = np.sort(rng.random((V, k), dtype=np.float32), axis=1)[:, ::-1].copy()
        nb_q, ns_q = knn.build_neighbor_table(vec, k, rows=rows)
        nb[:query_rows], ns[:query_rows] = nb_q, ns_q
        how = (f"exact (build_neighbor_table) for the {query_rows} queried rows, random valid rows elsewhere")
    save_index(path, nb, ns, {"bench": how})
    log(f"model: {V} x {D}, table k={k}: {how} ({time.perf_counter() - t0:.1f} s)", quiet)
    return how


# --- servers ---------------------------------------------------------------------------------------

def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(cmd: list[str], timeout: float = 300, cwd: Path = ROOT) -> subprocess.Popen:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd,
                         start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if "listening on" in line:
            return p
        if not line and p.poll() is not None:
            break
    p.kill()
    raise RuntimeError(f"{cmd[:4]} did not start")


def wait_http(port: int, path: str, timeout: float = 120):
    import http.client
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"port {port}: {path} never answered 200")


def stop(p: subprocess.Popen):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


# --- load ------------------------------------------------------------------------------------------

def lua_script(path: Path, method: str, paths: list[str], bodies: list[str] | None) -> Path:
    q = lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731
    lines = ["local paths = {" + ",".join(q(p) for p in paths) + "}"]
    if bodies:
        lines.append("local bodies = {" + ",".join(q(b) for b in bodies) + "}")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    lines.append("local i = 0")
    lines.append("request = function()")
    lines.append("  i = i + 1")
    body = "bodies[(i % #bodies) + 1]" if bodies else "nil"
    lines.append(f'  return wrk.format("{method}", paths[(i % #paths) + 1], nil, {body})')
    lines.append("end")
    path.write_text("\n".join(lines) + "\n")
    return path


def _unit(v: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def run_wrk(port: int, conns: int, duration: float, script: Path) -> dict:
    threads = 1 if conns == 1 else 2
    proc = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=duration + 60)
    out = proc.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"wrk failed: {out[-500:]} {proc.stderr[-500:]}")
    rps = float(m.group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": _unit(lat["50"]), "p99_ms": _unit(lat["99"]),
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errs.group(1) if errs else ""}


def _py_client(port, method, paths, bodies, duration, q):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    reqs = []
    for i, p in enumerate(paths):
        if bodies:
            b = bodies[i % len(bodies)].encode()
            reqs.append(f"{method} {p} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(b)}\r\n\r\n".encode() + b)
        else:
            reqs.append(f"{method} {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    lat, bad, i = [], 0, 0
    end = time.perf_counter() + duration
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        s.sendall(reqs[i % len(reqs)])
        i += 1
        status = f.readline()
        n = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            if line[:15].lower() == b"content-length:":
                n = int(line[15:])
        f.read(n)
        lat.append(time.perf_counter() - t0)
        bad += not status.startswith(b"HTTP/1.1 2")
    q.put((lat, bad))
    s.close()


def run_python(port: int, conns: int, duration: float, method: str, paths, bodies) -> dict:
    q = mp.Queue()
    procs = [mp.Process(target=_py_client, args=(port, method, paths[i::conns] or paths, bodies, duration, q))
             for i in range(conns)]
    for p in procs:
        p.start()
    lats, bad = [], 0
    for _ in procs:
        lat, b = q.get()
        lats += lat
        bad += b
    for p in procs:
        p.join()
    a = np.asarray(lats) * 1000
    return {"rps": len(a) / duration, "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "non2xx": bad, "socket_errors": ""}


# --- hostile load -----------------------------------------------------------------------------------

PIPELINE = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 1600   # 64 KB of requests nobody reads


def hostile_load(port: int, n: int, started, stop, q) -> None:
    """``n`` of each: never-reading pipeliners, CRLF tricklers (2 bytes every 2 ms, ~1 KB/s) and
    header senders (1 byte/s). Whatever the server closes is reopened at once, so the attack is
    sustained. Puts the number of reopened connections per kind on ``q`` when stopped."""

    def pipeliner():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        try:
            s.send(PIPELINE)
        except OSError:
            pass
        return s

    def trickler():
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        return s

    def header_sender():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        s.setblocking(False)
        return s

    kinds = {"pipeliner": pipeliner, "trickler": trickler, "header_sender": header_sender}
    socks = {k: [make() for _ in range(n)] for k, make in kinds.items()}
    reopened = dict.fromkeys(kinds, 0)
    started.set()
    next_slow = next_pipe = time.monotonic()

    def poke(kind, data):
        for i, s in enumerate(socks[kind]):
            try:
                s.send(data)
            except BlockingIOError:
                pass
            except OSError:   # closed by the server: open another one
                s.close()
                try:
                    socks[kind][i] = kinds[kind]()
                    reopened[kind] += 1
                except OSError:
                    pass

    while not stop.wait(0.002):
        poke("trickler", b"\r\n")
        now = time.monotonic()
        if now >= next_slow:
            poke("header_sender", b"a")
            next_slow = now + 1.0
        if now >= next_pipe:   # one more unread request: fails once the server has dropped the socket
            poke("pipeliner", PIPELINE[:39])
            next_pipe = now + 0.5
    for ss in socks.values():
        for s in ss:
            s.close()
    q.put(reopened)


class Hostile:
    """The hostile load in its own process, for the duration of a ``with`` block."""

    def __init__(self, port: int, n: int):
        self.port, self.n = port, n
        self.reopened = None

    def __enter__(self):
        self.started, self.stop, self.q = mp.Event(), mp.Event(), mp.Queue()
        self.proc = mp.Process(target=hostile_load, args=(self.port, self.n, self.started, self.stop, self.q))
        self.proc.start()
        if not self.started.wait(60):
            raise RuntimeError("the hostile load did not start")
        time.sleep(0.5)   # let the pipeliners fill their buffers
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.reopened = self.q.get(timeout=60)
        self.proc.join(30)


# --- main ------------------------------------------------------------------------------------------

TABLE, BARE, FLASK = "otto-serve table path", "bare ThreadingHTTPServer (constant body)", "Flask+gensim most_similar"
HOSTILE = ", hostile load"
TABLE_H, BARE_H = TABLE + HOSTILE, BARE + HOSTILE
COMPARED = "[--compare] "
ALSO = "otto-serve table path, --also-model"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="otto-serve vs Flask+gensim vs a bare http.server (same model, one run).")
    ap.add_argument("--vocab", type=int, default=290_870, help="model rows")
    ap.add_argument("--dim", type=int, default=100, help="vector size")
    ap.add_argument("--table-k", type=int, default=20, help="neighbour table width (the kernel path asks for k=table_k+10)")
    ap.add_argument("--query-rows", type=int, default=2000, help="distinct aids the load generator asks for")
    ap.add_argument("--full-table", action="store_true", help="build the exact table for every row (slow: O(V^2 D))")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3,
                    help="measure every scenario this many times, interleaved (all servers stay up), and report "
                         "medians; ratios are taken between adjacent measurements of the same round")
    ap.add_argument("--threads", type=int, default=None,
                    help="otto-serve worker threads per process (default: each checkout's own default)")
    ap.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                    help="load generator (auto: wrk if installed)")
    ap.add_argument("--work", default=None, help="directory for the model (default: a temporary directory)")
    ap.add_argument("--json", default=None, help="also write the results as JSON to this file")
    ap.add_argument("--skip-flask", action="store_true", help="do not run the Flask+gensim baseline")
    ap.add_argument("--compare", default=None, metavar="DIR",
                    help="another checkout of this project (e.g. the previous release): its otto-serve runs "
                         "every otto-serve single-process scenario right after ours, and the ratios are reported")
    ap.add_argument("--hostile", type=int, default=64,
                    help="hostile connections of each kind for the hostile-load scenarios (0: skip them)")
    ap.add_argument("--also-model", default=None, metavar="DIR",
                    help="an existing model directory with a neighbour table (e.g. the full-size one): its "
                         "otto-serve's table path runs right after ours in every round, and its latency is "
                         "reported as a ratio to ours")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk"))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = work / "model"
    py = sys.executable
    procs = {}
    try:
        how = build_model(model, args.vocab, args.dim, args.table_k, args.query_rows, args.full_table, 0, args.quiet)
        aids = np.load(model / "aids.npy")[: args.query_rows].tolist()
        rng = np.random.default_rng(1)
        item_paths = [f"/api/v1/recommendations/{a}" for a in aids]
        kernel_paths = [f"/api/v1/recommendations/{a}?k={args.table_k + 10}" for a in aids[:200]]
        bodies = [json.dumps({"events": [{"aid": int(a), "type": ["clicks", "carts", "orders"][int(t)]}
                                         for a, t in zip(rng.choice(aids, 5), rng.integers(0, 3, 5))]})
                  for _ in range(200)]
        # (name, server, method, paths, bodies): the table path and the bare server run back to back
        also = []
        if args.also_model:
            also_aids = np.load(Path(args.also_model) / "aids.npy", mmap_mode="r")
            pick = np.random.default_rng(2).choice(also_aids.shape[0], min(args.query_rows, also_aids.shape[0]),
                                                   replace=False)
            also = [(ALSO, "also", "GET", [f"/api/v1/recommendations/{int(also_aids[i])}" for i in pick], None)]
        scenarios = [(TABLE, "ours", "GET", item_paths, None), *also,
                     (BARE, "bare", "GET", ["/"], None),
                     ("otto-serve table path, 2 workers", "ours2", "GET", item_paths, None),
                     ("otto-serve popular", "ours", "GET", ["/api/v1/popular"], None),
                     ("otto-serve kernel path (k=%d)" % (args.table_k + 10), "ours", "GET", kernel_paths, None),
                     ("otto-serve POST session (5 events)", "ours", "POST", ["/api/v1/recommendations"], bodies)]
        if not args.skip_flask:
            scenarios.append((FLASK, "flask", "GET", item_paths, None))
        if args.hostile:
            scenarios += [(TABLE_H, "ours", "GET", item_paths, None), (BARE_H, "bare", "GET", ["/"], None)]
        if args.compare:   # the other checkout's server right after ours, scenario by scenario
            scenarios = [x for sc in scenarios
                         for x in ([sc, (COMPARED + sc[0], "compared") + sc[2:]] if sc[1] == "ours" else [sc])]
        ports = {}
        threads = [] if args.threads is None else ["--threads", str(args.threads)]
        for key in dict.fromkeys(sc[1] for sc in scenarios):
            port = ports[key] = free_port()
            if key in ("ours", "compared", "also"):
                cmd = [py, "-m", "serve", str(args.also_model if key == "also" else model), "--port", str(port),
                       *threads, "--quiet"]
            elif key == "ours2":
                cmd = [py, "-m", "serve", str(model), "--port", str(port), *threads,
                       "--workers", "2", "--quiet"]
            elif key == "flask":
                cmd = [py, "bench/baselines/flask_gensim.py", str(model), "--port", str(port)]
            else:
                cmd = [py, "bench/baselines/bare_server.py", "--port", str(port)]
            log(f"starting {key} on port {port}", args.quiet)
            procs[key] = start(cmd, cwd=Path(args.compare).resolve() if key == "compared" else ROOT)
            wait_http(port, "/" if key == "bare" else "/readyz" if key == "also" else item_paths[0])
        results = []
        for rnd in range(args.rounds):
            for name, key, method, paths, bods in scenarios:
                for conns in (1, 8):
                    hostile = Hostile(ports[key], args.hostile) if name.endswith(HOSTILE) else None
                    with hostile or contextlib.nullcontext():
                        if use_wrk:
                            script = lua_script(work / f"{key}-{len(results)}.lua", method, paths, bods)
                            r = run_wrk(ports[key], conns, args.duration, script)
                        else:
                            r = run_python(ports[key], conns, args.duration, method, paths, bods)
                    r.update(name=name, conns=conns, round=rnd, load=os.getloadavg()[0],
                             reopened=hostile.reopened if hostile else None)
                    results.append(r)
                    log(f"  round {rnd + 1} {name:42s} c={conns}: {r['rps']:9.0f} rps  p50 {r['p50_ms']:.3f} ms  "
                        f"p99 {r['p99_ms']:.3f} ms  non-2xx {r['non2xx']}  errors {r['socket_errors'] or 0}  "
                        f"load {r['load']:.1f}" + (f"  reopened {r['reopened']}" if hostile else ""), args.quiet)
        mem = None
        if "ours2" in ports:
            # every otto-serve process (the single one and both workers) maps the same vectors.npy;
            # exact scans touch all of it in each, then RSS/PSS are read from /proc
            import http.client
            pids = {}
            for key, n in (("ours", 1), ("ours2", 40)):
                for i in range(n):
                    c = http.client.HTTPConnection("127.0.0.1", ports[key], timeout=60)
                    c.request("GET", "/readyz")
                    pids[json.loads(c.getresponse().read())["pid"]] = "1 worker" if key == "ours" else "--workers 2"
                    c.request("GET", kernel_paths[i])
                    c.getresponse().read()
                    c.close()
            mem = {"file_mib": (model / "vectors.npy").stat().st_size / 2**20,
                   "workers": [{"pid": pid, "server": what, **memory.mapping_usage(pid, "vectors.npy"),
                                "total_rss": memory.rollup(pid)["Rss"], "total_pss": memory.rollup(pid)["Pss"]}
                               for pid, what in sorted(pids.items())]}
        report(results, mem, how, args, use_wrk)
        if args.json:
            Path(args.json).write_text(json.dumps({"results": results, "memory": mem, "table": how}, indent=2))
    finally:
        for p in procs.values():
            stop(p)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results, mem, how, args, use_wrk):
    names = list(dict.fromkeys(r["name"] for r in results))

    def runs(name, c):
        return [r for r in results if r["name"] == name and r["conns"] == c]

    def med(name, c, field):
        v = [r[field] for r in runs(name, c)]
        return float(np.median(v)) if v else None

    loads = [r["load"] for r in results]
    print(f"# otto-serve benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print(f"machine: {platform.machine()}, nproc {os.cpu_count()}, python {platform.python_version()}, "
          f"numpy {np.__version__}, numba {__import__('numba').__version__}, "
          f"1-min load average during the run {min(loads):.1f} to {max(loads):.1f}")
    print(f"model: {args.vocab} x {args.dim} float32; neighbour table k={args.table_k}: {how}")
    print(f"load generator: {'wrk (keep-alive, -t1 for 1 connection, -t2 for 8)' if use_wrk else 'python raw sockets'}, "
          f"{args.duration:g} s per measurement, {args.rounds} interleaved rounds (medians below); "
          f"otto-serve --threads {args.threads or 'default'}\n")
    print("| server / path | conns | rps | p50 ms | p99 ms | p99 per round ms | non-2xx | socket errors |")
    print("|---|---:|---:|---:|---:|---|---:|---|")
    for name in names:
        for c in (1, 8):
            rr = runs(name, c)
            per_round = " / ".join("%.1f" % r["p99_ms"] for r in rr)
            errs = "; ".join(sorted({r["socket_errors"] for r in rr if r["socket_errors"]})) or "none"
            print(f"| {name} | {c} | {med(name, c, 'rps'):.0f} | {med(name, c, 'p50_ms'):.3f} | "
                  f"{med(name, c, 'p99_ms'):.3f} | {per_round} | {sum(r['non2xx'] for r in rr)} | {errs} |")
    print("\n| target | per round | median | met |")
    print("|---|---|---:|:-:|")

    def paired(a, b, c):
        xs = [ra["rps"] / rb["rps"] for ra, rb in zip(runs(a, c), runs(b, c))]
        return xs, (float(np.median(xs)) if xs else None)

    if runs(FLASK, 8):
        xs, m = paired(TABLE, FLASK, 8)
        print(f"| table path rps (8 conns) >= 100x Flask+gensim | {' / '.join(f'{x:.0f}x' for x in xs)} | {m:.0f}x | "
              f"{'yes' if m >= 100 else 'NO'} |")
    if runs(BARE, 8):
        xs, m = paired(TABLE, BARE, 8)
        print(f"| table path rps (8 conns) >= 0.8x bare server | {' / '.join(f'{x:.2f}x' for x in xs)} | {m:.2f}x | "
              f"{'yes' if m >= 0.8 else 'NO'} |")
    p99 = [r["p99_ms"] for r in runs(TABLE, 8)]
    m = float(np.median(p99))
    print(f"| table path p99 (8 conns) <= 5 ms | {' / '.join(f'{x:.2f}' for x in p99)} ms | {m:.2f} ms | "
          f"{'yes' if m <= 5 else 'NO'} |")
    p50 = [r["p50_ms"] for r in runs(TABLE, 1)]
    m = float(np.median(p50))
    print(f"| table path p50 (1 conn) <= 0.3 ms | {' / '.join(f'{x:.3f}' for x in p50)} ms | {m:.3f} ms | "
          f"{'yes' if m <= 0.3 else 'NO'} |")
    hostile = runs(TABLE_H, 1)
    if hostile:
        p99 = [r["p99_ms"] for r in hostile]
        m = float(np.median(p99))
        failed = sum(r["non2xx"] for r in hostile) + sum(bool(r["socket_errors"]) for r in hostile)
        print(f"| hostile load ({args.hostile} of each kind): table path (1 conn) all succeed, p99 <= 50 ms | "
              f"{' / '.join(f'{x:.2f}' for x in p99)} ms | {m:.2f} ms | {'yes' if m <= 50 and not failed else 'NO'} |")
        print("\np99 under hostile load / p99 without it, same server, same round:\n")
        print("| server | conns | per round | median |")
        print("|---|---:|---|---:|")
        for a, b in ((TABLE_H, TABLE), (BARE_H, BARE)):
            for c in (1, 8):
                xs = [ra["p99_ms"] / rb["p99_ms"] for ra, rb in zip(runs(a, c), runs(b, c))]
                if xs:
                    print(f"| {b} | {c} | {' / '.join(f'{x:.1f}x' for x in xs)} | {float(np.median(xs)):.1f}x |")
        print("\nhostile connections the server closed (and the load generator reopened) during each "
              "hostile measurement, pipeliners / CRLF tricklers / header senders:\n")
        print("| server | conns | per round |")
        print("|---|---:|---|")
        for a in (TABLE_H, BARE_H):
            for c in (1, 8):
                rr = [r["reopened"] for r in runs(a, c)]
                print(f"| {a} | {c} | " + " ; ".join(f"{r['pipeliner']} / {r['trickler']} / {r['header_sender']}"
                                                    for r in rr) + " |")
    if runs(ALSO, 1):
        print(f"\nthe table path on {args.also_model} / on the {args.vocab} x {args.dim} model, measured back to "
              f"back in each round:\n")
        print("| latency | per round | median | target <= 1.10 |")
        print("|---|---|---:|:-:|")
        for what, c, field in (("p50 (1 conn)", 1, "p50_ms"), ("p99 (1 conn)", 1, "p99_ms"),
                               ("p50 (8 conns)", 8, "p50_ms"), ("p99 (8 conns)", 8, "p99_ms")):
            xs = [a[field] / b[field] if b[field] else float("nan") for a, b in zip(runs(ALSO, c), runs(TABLE, c))]
            m = float(np.median(xs))
            print(f"| {what} | {' / '.join(f'{x:.2f}' for x in xs)} | {m:.2f} | {'yes' if m <= 1.10 else 'NO'} |")
    compared = [n for n in names if n.startswith(COMPARED)]
    if compared:
        print(f"\nthis otto-serve / the --compare checkout's ({args.compare}), same scenario, measured back to "
              f"back in each round:\n")
        print("| scenario | conns | rps ratio per round | median | p99 ratio per round | median |")
        print("|---|---:|---|---:|---|---:|")
        for cn in compared:
            n = cn[len(COMPARED):]
            for c in (1, 8):
                pairs = list(zip(runs(n, c), runs(cn, c)))
                rps = [a["rps"] / b["rps"] if b["rps"] else float("inf") for a, b in pairs]
                p99 = [a["p99_ms"] / b["p99_ms"] if b["p99_ms"] else float("nan") for a, b in pairs]
                print(f"| {n} | {c} | {' / '.join(f'{x:.2f}' for x in rps)} | {float(np.median(rps)):.2f} | "
                      f"{' / '.join(f'{x:.2f}' for x in p99)} | {float(np.median(p99)):.2f} |")
    if mem:
        print(f"\nmemory of the otto-serve processes mapping vectors.npy ({mem['file_mib']:.1f} MiB), after exact "
              f"scans in each:\n")
        print("| process | vectors.npy RSS MiB | vectors.npy PSS MiB | process RSS MiB | process PSS MiB |")
        print("|---|---:|---:|---:|---:|")
        for w in mem["workers"]:
            print(f"| {w['server']} (pid {w['pid']}) | {w['Rss'] / 2**20:.1f} | {w['Pss'] / 2**20:.1f} | "
                  f"{w['total_rss'] / 2**20:.1f} | {w['total_pss'] / 2**20:.1f} |")
        print(f"| sum | {sum(w['Rss'] for w in mem['workers']) / 2**20:.1f} | "
              f"{sum(w['Pss'] for w in mem['workers']) / 2**20:.1f} | "
              f"{sum(w['total_rss'] for w in mem['workers']) / 2**20:.1f} | "
              f"{sum(w['total_pss'] for w in mem['workers']) / 2**20:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
