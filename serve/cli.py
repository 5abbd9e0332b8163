"""``otto-serve MODEL_DIR``: serve recommendations over HTTP (stdlib ``http.server`` underneath).

One process (``--workers 1``, the default) runs the poller and a fixed pool of ``--threads``
worker threads. ``--workers N`` starts N such processes on one port with ``SO_REUSEPORT`` (the
kernel spreads connections over them); they map the same model files, so the vectors live
once in the page cache, not N times (``python -m serve.memory PID...`` shows RSS vs PSS).

Signals: ``SIGHUP`` reloads the model from disk (fully loaded first, then swapped; requests
in flight finish on the old one; a failed reload keeps the old model). ``SIGTERM`` and Ctrl-C
drain: stop accepting, finish requests in flight, exit 0. With ``--workers N`` the supervisor
forwards both to every worker.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, fields

from data_prep.command import ArgumentParser, UsageError, positive_int
from data_prep.flags import add_config_flags, config_from_args

from .server import ServerConfig, make_server

log = logging.getLogger("serve")
PROG = "otto-serve"


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535, got {text!r}")
    return v


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Serve item and session recommendations from a model directory over HTTP/1.1 "
                    "(GET /api/v1/popular, GET /api/v1/recommendations/<aid>, POST /api/v1/recommendations, "
                    "/healthz, /readyz, /metrics, /openapi.json). SIGHUP reloads the model; SIGTERM drains and exits.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model directory written by otto-train (memory-mapped read-only)")
    g = p.add_argument_group("network")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to bind; use 0.0.0.0 to accept connections from other machines (default: 127.0.0.1)")
    g.add_argument("--port", type=_port, default=8000,
                   help="TCP port; 0 picks a free one (printed on the 'listening on' line) (default: 8000)")
    g.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="processes sharing the port with SO_REUSEPORT (Linux); each maps the same model files "
                        "(default: 1)")
    add_config_flags(g, ServerConfig, only=("threads", "reuse_port", "backlog"))
    g = p.add_argument_group("limits (every drop is counted in /metrics, otto_events_total)")
    add_config_flags(g, ServerConfig, exclude=("threads", "reuse_port", "backlog", "access_log", "type_weights", "decay"))
    g = p.add_argument_group("session blend")
    add_config_flags(g, ServerConfig, only=("type_weights", "decay"), metavars={"type_weights": "CLICKS,CARTS,ORDERS"})
    g = p.add_argument_group("output")
    add_config_flags(g, ServerConfig, only=("access_log",))
    g.add_argument("--quiet", action="store_true", help="log only warnings and errors (the 'listening on' line is still printed)")
    g.add_argument("--print-examples", action="store_true",
                   help="after the 'listening on' line, print ready-to-paste curl commands for every endpoint, "
                        "using aids from the loaded model")
    g.add_argument("--ready-fd", type=int, default=None, metavar="FD",
                   help="write 'ready PORT PID' to this inherited file descriptor once listening, then close it "
                        "(used by --workers to start its processes; also handy for scripts)")
    return p


def _config(args) -> dict:
    """The ``ServerConfig`` fields of ``args`` (resolved in :func:`main`), but for threads and reuse_port."""
    return {f.name: getattr(args, f.name) for f in fields(ServerConfig) if f.name not in ("threads", "reuse_port")}


def examples(url: str, rec) -> str:
    """Ready-to-paste curl commands for every endpoint, with aids taken from the loaded model."""
    aids = rec.model.aids
    if rec.has_popular:
        known = [a for a in rec.popular(2, 10)[0] if a in rec][:3]
    else:
        known = []
    known = (known + [int(a) for a in aids[:3]])[:3]
    first = known[0] if known else 0
    events = ", ".join(f'{{"aid": {a}, "type": "{t}"}}' for a, t in zip(known, ("clicks", "carts", "orders")))
    lines = [
        "Try it (Ctrl-C stops the server):",
        f"  curl -s '{url}/api/v1/popular'",
        f"  curl -s '{url}/api/v1/popular?k=5&type=carts'",
        f"  curl -s '{url}/api/v1/recommendations/{first}'",
        f"  curl -s '{url}/api/v1/recommendations/{first}?k=5&scores=true'",
        f"  curl -s -X POST '{url}/api/v1/recommendations' -H 'Content-Type: application/json' "
        f"-d '{{\"aids\": {known}, \"k\": 5}}'",
        f"  curl -s -X POST '{url}/api/v1/recommendations' -H 'Content-Type: application/json' "
        f"-d '{{\"events\": [{events}], \"k\": 5, \"scores\": true}}'",
        f"  curl -s '{url}/healthz'",
        f"  curl -s '{url}/readyz'",
        f"  curl -s '{url}/metrics'",
        f"  curl -s '{url}/openapi.json'",
    ]
    return "\n".join(lines)


def _serve_one(args) -> int:
    if hasattr(signal, "SIGHUP"):   # a reload request while the model is still loading is moot
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    server = make_server(args.model_dir, args.host, args.port, args.threads,
                         reuse_port=args.reuse_port or args.workers > 1, **_config(args))

    def on_drain(signum, frame):
        log.info("signal %d: draining", signum)
        server.drain()

    def on_reload(signum, frame):
        threading.Thread(target=server.reload, name="otto-serve-reload", daemon=True).start()

    signal.signal(signal.SIGTERM, on_drain)
    signal.signal(signal.SIGINT, on_drain)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_reload)
    # Everything allocated so far (modules, JIT dispatchers, the model) lives as long as the
    # process: move it out of the collector's view so full collections stay short under load.
    gc.collect()
    gc.freeze()
    rec = server.recommender
    if args.ready_fd is None:
        print(f"{PROG}: listening on {server.url} (model {rec.path}: {rec.vocab_size} x {rec.vector_size}, "
              f"table k={rec.table_k}, {args.threads} threads, pid {os.getpid()})", flush=True)
        if args.print_examples:
            print(examples(server.url, rec), flush=True)
    else:
        log.info("worker %d listening on %s", os.getpid(), server.url)
        try:
            os.write(args.ready_fd, f"ready {server.port} {os.getpid()}\n".encode())
            os.close(args.ready_fd)
        except OSError:
            pass
    try:
        server.serve_forever()
    finally:
        server.server_close()
    log.info("drained, exiting")
    return 0


def _child_argv(args, port: int, ready_fd: int) -> list[str]:
    argv = [sys.executable, "-m", "serve", args.model_dir, "--host", args.host, "--port", str(port),
            "--threads", str(args.threads), "--workers", "1", "--reuse-port", "--ready-fd", str(ready_fd),
            "--type-weights", ",".join(map(repr, args.type_weights)), "--decay", repr(args.decay)]
    for name, value in _config(args).items():
        if name in ("type_weights", "decay"):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if value:
                argv.append(flag)
        else:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    if args.quiet:
        argv.append("--quiet")
    return argv


def _serve_many(args) -> int:
    """Supervisor: start ``--workers`` processes on one port, forward signals, wait for them."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("--workers > 1 needs SO_REUSEPORT, which this platform lacks")
    # Hold the port (bound, not listening: it takes no connections) while the workers start.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((args.host, args.port))
    port = holder.getsockname()[1]
    procs: list[subprocess.Popen] = []
    stop = {"sig": None, "ready": False}

    def forward(signum, frame):
        if signum in (signal.SIGTERM, signal.SIGINT):
            stop["sig"] = signal.SIGTERM
        elif not stop["ready"]:
            log.warning("SIGHUP ignored: workers are still starting")
            return
        for pr in procs:
            if pr.poll() is None:
                try:
                    pr.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)
                except OSError:
                    pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    pids = []
    try:
        r, w = os.pipe()
        for _ in range(args.workers):
            procs.append(subprocess.Popen(_child_argv(args, port, w), pass_fds=(w,)))
        os.close(w)
        buf = b""
        deadline = time.monotonic() + 300
        with os.fdopen(r, "rb", buffering=0) as rf:
            while buf.count(b"\n") < args.workers:
                if stop["sig"] is not None:
                    break
                if any(pr.poll() is not None for pr in procs):
                    raise OSError(f"a worker exited during startup (exit status "
                                  f"{[pr.returncode for pr in procs if pr.returncode is not None]}); see its error above")
                if time.monotonic() > deadline:
                    raise OSError("workers did not become ready within 300 s")
                ready, _, _ = select.select([rf], [], [], 0.2)
                if ready:
                    chunk = rf.read(4096)
                    if not chunk and buf.count(b"\n") < args.workers:
                        time.sleep(0.05)
                    buf += chunk
        pids = [int(line.split()[2]) for line in buf.decode().splitlines() if line.startswith("ready")]
        stop["ready"] = True
        holder.close()
        if stop["sig"] is None:
            host = f"[{args.host}]" if ":" in args.host else args.host
            print(f"{PROG}: listening on http://{host}:{port} ({args.workers} workers, pids "
                  f"{' '.join(map(str, pids))}; {args.threads} threads each, SO_REUSEPORT)", flush=True)
        codes = []
        for pr in procs:
            while True:
                try:
                    codes.append(pr.wait(timeout=0.5))
                    break
                except subprocess.TimeoutExpired:
                    continue
        bad = [c for c in codes if c != 0]
        if bad and stop["sig"] is None:
            log.error("workers exited with status %s", codes)
            return 1
        return 0
    finally:
        holder.close()
        for pr in procs:
            if pr.poll() is None:
                pr.terminate()
                try:
                    pr.wait(timeout=args.drain_timeout + 5)
                except subprocess.TimeoutExpired:
                    pr.kill()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # validate every limit before anything starts; then args holds the resolved values
        vars(args).update(asdict(config_from_args(ServerConfig, args)))
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    try:
        return _serve_many(args) if args.workers > 1 else _serve_one(args)
    except KeyboardInterrupt:
        return 0
    except (ValueError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
