"""otto-serve as a subprocess: CLI, SIGHUP reload, SIGTERM drain, Ctrl-C, several workers, memory."""
from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from serve import memory
from w2v.model_io import load_model
from test_serve_support import call, make_model, parse_raw

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="signals, SO_REUSEPORT and /proc are Linux features")


def start(args, timeout=120):
    """Start ``python -m serve ARGS --port 0``; return (process, port) once it prints 'listening on'."""
    p = subprocess.Popen([sys.executable, "-m", "serve", *map(str, args), "--port", "0", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if "listening on" in line or not line:
            break
    m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    if not m:
        p.kill()
        raise AssertionError(f"no 'listening on' line: {line!r} {p.stderr.read()}")
    p.listening_line = line
    return p, int(m.group(1))


def stop(p, sig=signal.SIGTERM, timeout=30):
    p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    return p.returncode, err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("proc") / "m", V=150, D=8, table_k=10)


def test_help_and_one_line_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "explorer page at /" in " ".join(r.stdout.split())
    for flag in ("--host", "--port", "--threads", "--workers", "--max-connections", "--idle-timeout",
                 "--request-timeout", "--send-timeout", "--send-buffer", "--max-body", "--max-session-events",
                 "--access-log", "--quiet", "--decay"):
        assert flag in r.stdout
    r = subprocess.run([sys.executable, "-m", "serve", str(tmp_path / "missing"), "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "missing" in r.stderr



@pytest.mark.parametrize("bad", [["--threads", "0"], ["--port", "70000"], ["--decay", "1.5"], ["--type-weights", "1,2"],
                                 ["--linger", "-1"], ["--idle-timeout", "nan"]])
def test_bad_flags_are_usage_errors(tmp_path, capsys, bad):
    from serve.cli import main
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), *bad])
    assert e.value.code == 2 and bad[0] in capsys.readouterr().err


def test_sighup_reload_under_load_and_sigterm(tmp_path):
    d = make_model(tmp_path / "m", V=100, D=8, seed=1, table_k=5)
    aids = sorted(set(load_model(d).aids.tolist()))
    p, port = start([d, "--threads", "4"])
    stop_ev = threading.Event()
    errors, done = [], [0]

    def client():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            while not stop_ev.is_set():
                status, _, body = call(port, "POST", "/api/v1/recommendations", {"aids": aids[:40], "k": 3}, conn=c)
                if status != 200:
                    errors.append((status, body))
                done[0] += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
        finally:
            c.close()

    try:
        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        # replace the model on disk (atomic directory swap), keeping the same aids plus more
        make_model(tmp_path / "m", V=130, D=8, seed=1, table_k=5)
        p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and call(port, "GET", "/readyz")[2]["vocab_size"] != 130:
            time.sleep(0.05)
        assert call(port, "GET", "/readyz")[2]["vocab_size"] == 130
        p.send_signal(signal.SIGHUP)   # and once more, while loaded
        time.sleep(0.3)
        stop_ev.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        code, err = stop(p)
    assert code == 0 and "Traceback" not in err
    assert not errors, errors[:3]
    assert done[0] > 10


def test_sigterm_drains_request_in_flight(model_dir):
    p, port = start([model_dir])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")   # in flight: headers not finished
        time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(OSError):   # no longer accepting
            socket.create_connection(("127.0.0.1", port), timeout=2).recv(1)
        s.sendall(b"\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        status, h, body = parse_raw(data)
        assert status == 200 and h["connection"] == "close" and body == b'{"status":"ok"}'
    finally:
        s.close()
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0 and "Traceback" not in err


def test_ctrl_c_exits_cleanly(model_dir):
    p, port = start([model_dir])
    assert p.listening_line.rstrip().endswith(f"; explorer page http://127.0.0.1:{port}/")
    assert call(port, "GET", "/healthz")[0] == 200
    code, err = stop(p, signal.SIGINT)
    assert code == 0 and "Traceback" not in err


@pytest.mark.slow
def test_two_workers_one_port_share_the_mapped_vectors(tmp_path):
    d = make_model(tmp_path / "big", V=20000, D=64, table_k=0, popular=False)   # 5 MiB of vectors
    size = os.path.getsize(d / "vectors.npy")
    p, port = start([d, "--workers", "2", "--threads", "2"])
    try:
        pids = set()
        aid = int(load_model(d).aids[0])
        for _ in range(60):   # new connections: SO_REUSEPORT spreads them over both workers
            status, _, body = call(port, "GET", "/readyz")
            assert status == 200
            pids.add(body["pid"])
            status, _, recs = call(port, "GET", f"/api/v1/recommendations/{aid}?k=5")   # exact scan: touches all rows
            assert status == 200 and len(recs) == 5
        assert len(pids) == 2
        usage = [memory.mapping_usage(pid, "vectors.npy") for pid in pids]
        rss = sum(u["Rss"] for u in usage)
        pss = sum(u["Pss"] for u in usage)
        assert all(u["Rss"] >= 0.9 * size for u in usage)   # each worker sees the whole file...
        assert pss <= 1.2 * size < 0.7 * rss                   # ...but together they hold one copy
        assert all(memory.rollup(pid)["Pss"] > 0 for pid in pids)
        p.send_signal(signal.SIGHUP)   # forwarded to every worker
        time.sleep(0.5)
        assert call(port, "GET", "/healthz")[0] == 200
    finally:
        code, err = stop(p)
    assert code == 0 and "Traceback" not in err


def test_memory_tool_on_self(tmp_path):
    path = tmp_path / "mapped.npy"
    np.save(path, np.ones(1 << 18))   # 2 MiB
    arr = np.load(path, mmap_mode="r")
    assert float(arr.sum()) == 1 << 18   # touch every page
    use = memory.mapping_usage(os.getpid(), "mapped.npy")
    assert use["mappings"] == 1 and use["Rss"] >= 2 << 20 and use["Pss"] >= 2 << 20   # only we map it
    assert memory.rollup(os.getpid())["Rss"] > 0
    assert memory.mapping_usage(os.getpid(), "no-such-file.npy")["mappings"] == 0
    with pytest.raises(OSError):
        memory.rollup(2**22 + 12345)
    assert memory.main([str(os.getpid())]) == 0
    del arr


def test_out_of_file_descriptors_is_survived(model_dir):
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (60, 60)); "
            "from serve.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.Popen([sys.executable, "-c", code, str(model_dir), "--port", "0", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    port = int(re.search(r":(\d+) ", line).group(1))
    socks = []
    try:
        for _ in range(80):   # more than the process may open: some accepts fail with EMFILE
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        for s in socks:
            s.close()
        socks = []
        deadline = time.monotonic() + 20
        while True:   # once descriptors are free again it serves normally
            try:
                if call(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        text = call(port, "GET", "/metrics")[2].decode()
        assert 'otto_events_total{event="accept_error"}' in text
    finally:
        for s in socks:
            s.close()
        code_, err = stop(p)
    assert code_ == 0 and "Traceback" not in err
