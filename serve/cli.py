"""``otto-serve MODEL_DIR``: serve recommendations over HTTP (stdlib ``http.server`` underneath).

One process (``--workers 1``, the default) runs the poller and two fixed pools of worker threads:
``--threads`` for short requests and ``--long-threads`` for long ones (sessions, exact scans).
``--workers N`` starts N such processes on one port with ``SO_REUSEPORT`` (the kernel spreads
connections over them); they map the same model files, so the vectors live once in the page cache, not N times (``python -m serve.memory PID...`` shows RSS vs PSS).

Signals: ``SIGHUP`` reloads the model from disk (fully loaded first, then swapped; requests
in flight finish on the old one; a failed reload keeps the old model). ``SIGTERM`` and Ctrl-C
drain: stop accepting, finish requests in flight, exit 0. With ``--workers N`` the supervisor
forwards both to every worker, and restarts a worker that exits on its own (logged, with a
back-off from 0.5 s doubling to 30 s while restarts keep failing quickly).

A crash on a hardware fault (``SIGBUS`` when a memory-mapped model file is truncated in place,
``SIGSEGV``) prints the Python stack of every thread on stderr (:mod:`faulthandler`).
"""
from __future__ import annotations

import argparse
import faulthandler
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

from .server import ServerConfig, bind_socket, family_of, format_address, make_server

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
                    "/healthz, /readyz, /metrics, /openapi.json), and an explorer page at / to browse them in a "
                    "web browser. SIGHUP reloads the model; SIGTERM drains and exits.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model directory written by otto-train (memory-mapped read-only)")
    g = p.add_argument_group("network")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to bind; use 0.0.0.0 to accept connections from other machines (default: 127.0.0.1)")
    g.add_argument("--port", type=_port, default=8000,
                   help="TCP port; 0 picks a free one (printed on the 'listening on' line) (default: 8000)")
    g.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="processes sharing the port with SO_REUSEPORT (Linux); each maps the same model files "
                        "(default: 1)")
    add_config_flags(g, ServerConfig, only=("threads", "long_threads", "reuse_port", "backlog"))
    g = p.add_argument_group("limits (every drop is counted in /metrics, otto_events_total)")
    add_config_flags(g, ServerConfig, exclude=("threads", "long_threads", "reuse_port", "backlog", "access_log", "type_weights", "decay",
                                               "table_rows"))
    g = p.add_argument_group("memory")
    add_config_flags(g, ServerConfig, only=("table_rows",))
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
    """The :class:`ServerConfig` fields of ``args`` (resolved in :func:`main`); ``--workers`` > 1 implies reuse_port."""
    cfg = {f.name: getattr(args, f.name) for f in fields(ServerConfig)}
    cfg["type_weights"] = tuple(cfg["type_weights"])
    cfg["reuse_port"] = args.reuse_port or args.workers > 1
    return cfg


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
    faulthandler.enable(all_threads=True)   # SIGBUS/SIGSEGV: at least the stacks, on stderr
    server = make_server(args.model_dir, args.host, args.port, **_config(args))

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
              f"table k={rec.table_k}, {server.config.threads} + {server.config.long_threads} threads, pid {os.getpid()}); explorer page {server.url}/",
              flush=True)
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
            "--workers", "1", "--reuse-port", "--ready-fd", str(ready_fd)]
    for name, value in _config(args).items():
        if name == "reuse_port":
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if value:
                argv.append(flag)
        elif isinstance(value, tuple):
            argv += [flag, ",".join(map(repr, value))]
        else:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    if args.quiet:
        argv.append("--quiet")
    return argv


def describe_exit(code: int) -> str:
    """``exit status 3``, ``killed by SIGKILL``; SIGBUS gets its likely cause."""
    if code >= 0:
        return f"exit status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if -code == getattr(signal, "SIGBUS", None):
        return (f"killed by {name}: a memory-mapped model file was probably truncated in place "
                f"(replace model files, never truncate them)")
    return f"killed by {name}"


class Supervisor:
    """``--workers N``: N worker processes on one port; each is restarted if it exits on its own.

    A restart waits ``BACKOFF_MIN`` seconds, doubled after every worker that ran less than
    ``STABLE`` seconds, up to ``BACKOFF_MAX``; a worker that ran longer resets its slot's back-off.
    """

    BACKOFF_MIN, BACKOFF_MAX, STABLE = 0.5, 30.0, 30.0

    def __init__(self, args, port: int):
        self.args, self.port = args, port
        n = args.workers
        self.procs: list[subprocess.Popen | None] = [None] * n
        self.ready_fd: list[int | None] = [None] * n   # read end of each worker's readiness pipe
        self.ready_buf: list[bytes] = [b""] * n
        self.ready = [False] * n                       # listening (and its signal handlers installed)
        self.started_at = [0.0] * n
        self.backoff = [self.BACKOFF_MIN] * n
        self.restart_at: list[float | None] = [None] * n
        self.stop_sig: int | None = None
        self.hup = False

    def spawn(self, i: int) -> None:
        r, w = os.pipe()
        try:
            self.procs[i] = subprocess.Popen(_child_argv(self.args, self.port, w), pass_fds=(w,))
        finally:
            os.close(w)
        self._close_ready(i)
        self.ready_fd[i], self.ready_buf[i], self.ready[i] = r, b"", False
        self.started_at[i] = time.monotonic()
        self.restart_at[i] = None

    def _close_ready(self, i: int) -> None:
        if self.ready_fd[i] is not None:
            os.close(self.ready_fd[i])
            self.ready_fd[i] = None

    def _read_ready(self, timeout: float) -> list[int]:
        """Slots whose worker reported 'ready PORT PID' during this wait."""
        fds = [fd for fd in self.ready_fd if fd is not None]
        done = []
        if not fds:
            time.sleep(timeout)
            return done
        readable, _, _ = select.select(fds, [], [], timeout)
        for i, fd in enumerate(self.ready_fd):
            if fd is None or fd not in readable:
                continue
            chunk = os.read(fd, 4096)
            self.ready_buf[i] += chunk
            if b"\n" in self.ready_buf[i] or not chunk:
                if b"\n" in self.ready_buf[i]:
                    done.append(i)
                    self.ready[i] = True
                self._close_ready(i)
        return done

    def forward(self, sig: int) -> None:
        """Send ``sig`` to every live worker (SIGHUP only to those listening: a starting one would die of it)."""
        for pr, ready in zip(self.procs, self.ready):
            if pr is not None and pr.poll() is None and (ready or sig != signal.SIGHUP):
                try:
                    pr.send_signal(sig)
                except OSError:
                    pass

    def start_all(self) -> list[int]:
        """Start every worker and wait until each is listening; their pids."""
        for i in range(len(self.procs)):
            self.spawn(i)
        ready = set()
        deadline = time.monotonic() + 300
        while len(ready) < len(self.procs) and self.stop_sig is None:
            exited = [pr.returncode for pr in self.procs if pr.poll() is not None]
            if exited:
                raise OSError(f"a worker exited during startup ({describe_exit(exited[0])}); see its error above")
            if time.monotonic() > deadline:
                raise OSError("workers did not become ready within 300 s")
            ready.update(self._read_ready(0.2))
        return [pr.pid for pr in self.procs]

    def run(self) -> int:
        """Watch the workers until a SIGTERM/SIGINT has drained them all."""
        while True:
            if self.stop_sig is not None:
                self.forward(signal.SIGTERM)
                return self.wait_all()
            if self.hup:
                self.hup = False
                self.forward(signal.SIGHUP)
            now = time.monotonic()
            for i, pr in enumerate(self.procs):
                if self.restart_at[i] is not None:
                    if now >= self.restart_at[i]:
                        self.spawn(i)
                        log.info("worker %d restarted as pid %d", i, self.procs[i].pid)
                    continue
                code = pr.poll()
                if code is None:
                    continue
                ran = now - self.started_at[i]
                self.backoff[i] = self.BACKOFF_MIN if ran >= self.STABLE else self.backoff[i]
                delay = self.backoff[i]
                self.backoff[i] = min(self.BACKOFF_MAX, 2 * delay)
                self.restart_at[i] = now + delay
                self._close_ready(i)
                log.error("worker %d (pid %d) exited unexpectedly after %.1f s (%s); restarting it in %.1f s",
                          i, pr.pid, ran, describe_exit(code), delay)
            for i in self._read_ready(0.2):
                log.info("worker %d (pid %d) is listening", i, self.procs[i].pid)

    def wait_all(self) -> int:
        codes = []
        for pr in self.procs:
            if pr is None:
                continue
            try:
                codes.append(pr.wait(timeout=self.args.drain_timeout + 5))
            except subprocess.TimeoutExpired:
                pr.kill()
                codes.append(pr.wait())
        bad = [c for c in codes if c not in (0, -signal.SIGTERM, -signal.SIGINT)]
        if bad:
            log.error("workers exited with %s", ", ".join(describe_exit(c) for c in bad))
            return 1
        return 0

    def kill_all(self) -> None:
        for i, pr in enumerate(self.procs):
            self._close_ready(i)
            if pr is not None and pr.poll() is None:
                pr.terminate()
                try:
                    pr.wait(timeout=self.args.drain_timeout + 5)
                except subprocess.TimeoutExpired:
                    pr.kill()
                    pr.wait()


def _serve_many(args) -> int:
    """Supervisor: start ``--workers`` processes on one port, forward signals, restart the ones that die."""
    # Hold the port (bound, not listening: it takes no connections) for the supervisor's life, so a
    # restarted worker can always bind it again.
    holder = socket.socket(family_of(args.host), socket.SOCK_STREAM)
    try:
        bind_socket(holder, args.host, args.port, reuse_port=True)
        port = holder.getsockname()[1]
        sup = Supervisor(args, port)

        def on_signal(signum, frame):
            if signum in (signal.SIGTERM, signal.SIGINT):
                sup.stop_sig = signal.SIGTERM
            else:
                sup.hup = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)   # until every worker is listening
        try:
            pids = sup.start_all()
            if sup.stop_sig is None:
                print(f"{PROG}: listening on http://{format_address(args.host, port)} ({args.workers} workers, pids "
                      f"{' '.join(map(str, pids))}; {args.threads} + {args.long_threads} threads each, SO_REUSEPORT)", flush=True)
            signal.signal(signal.SIGHUP, on_signal)
            return sup.run()
        finally:
            sup.kill_all()
    finally:
        holder.close()


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
