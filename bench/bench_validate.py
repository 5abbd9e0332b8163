"""Cost of validation on load: ``load_model`` / ``Dataset.open`` vs the same checks in plain NumPy.

Every consumer (CLIs, evaluation, the service) opens models and datasets through one loader that
checks every rule of docs/FORMATS.md. This measures what that costs, in one run:

* **model** (synthetic, ``--rows`` x ``--dim`` float32 vectors and output vectors, a permutation
  of aids, a ``--k`` neighbour table): ``w2v.model_io.load_model`` (memory-maps, then scans every
  array once with the ``data_prep.checks`` kernels) vs the *same checks written the usual NumPy
  way* on the same memory maps (``np.isfinite(v).all()``, ``np.unique(aids).size``,
  ``((nb >= -1) & (nb < V)).all()``, ...), and vs a bare ``np.load(mmap_mode="r")`` of the files
  (no check at all: the floor);
* **dataset** (``--dataset DIR``, e.g. a full-size conversion of the OTTO train file):
  ``Dataset.open`` vs the same checks in NumPy (``(aid >= 0).all()``, ``(np.diff(offsets) >= 0).all()``,
  ``np.unique(session_ids).size``, ...) vs bare memory maps.

Timings are best of ``--repeat`` runs with the files in the page cache (the first, cold run is
reported separately: it includes reading the files from disk and loading the compiled kernels).
Prints seconds and the ratio NumPy/ours (above 1: ours is faster).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from data_prep.dataset import ARRAYS, Dataset
from w2v.model_io import load_model, save_index, save_model

MODEL_FILES = {"vectors": "<f4", "output": "<f4", "aids": "<i8", "counts": "<i8",
               "neighbors": "<i4", "neighbor_scores": "<f4"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_860_000, help="V, model rows (default 1860000, the OTTO vocabulary)")
    p.add_argument("--dim", type=int, default=64, help="D, vector size (default 64)")
    p.add_argument("--k", type=int, default=20, help="neighbours per row of the index (default 20)")
    p.add_argument("--dataset", default=None, help="also time opening this dataset directory")
    p.add_argument("--repeat", type=int, default=3, help="timed warm runs, best kept (default 3)")
    p.add_argument("--tmpdir", default=None, help="where the synthetic model is written (default: system temp)")
    return p.parse_args(argv)


def _best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _bare(path: Path, names) -> dict:
    return {n: np.load(path / f"{n}.npy", mmap_mode="r", allow_pickle=False) for n in names}


def _numpy_model_checks(path: Path) -> None:
    a = _bare(path, MODEL_FILES)
    V = a["vectors"].shape[0]
    assert V >= 1 and a["vectors"].shape[1] >= 1
    assert np.isfinite(a["vectors"]).all() and np.isfinite(a["output"]).all()
    assert (a["aids"] >= 0).all() and np.unique(a["aids"]).size == V and (a["counts"] >= 0).all()
    nb, sc = a["neighbors"], a["neighbor_scores"]
    assert ((nb >= -1) & (nb < V)).all() and not np.isnan(sc).any() and not (sc == np.inf).any()


def _numpy_dataset_checks(path: Path) -> None:
    a = _bare(path, ARRAYS)
    off = a["offsets"]
    assert off[0] == 0 and off[-1] == a["aid"].shape[0] and (np.diff(off) >= 0).all()
    assert (a["type"] <= 2).all() and (a["aid"] >= 0).all() and (a["session_ids"] >= 0).all()
    assert np.unique(a["session_ids"]).size == a["session_ids"].shape[0]


def _report(what: str, cold: float, ours: float, numpy_s: float, bare: float) -> None:
    print(f"{what:<8} cold {cold:7.3f} s | ours {ours:7.3f} s | numpy checks {numpy_s:7.3f} s "
          f"(numpy/ours {numpy_s / ours:5.2f}) | bare mmap {bare:7.4f} s")


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, numpy {np.__version__}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-validate-", dir=args.tmpdir))
    try:
        V, D, k = args.rows, args.dim, args.k
        rng = np.random.default_rng(0)
        vec = rng.standard_normal((V, D), dtype=np.float32)
        m = save_model(tmp / "model", vec, vec, rng.permutation(V).astype(np.int64), np.ones(V, np.int64), {})
        del vec
        save_index(m, rng.integers(0, V, (V, k), dtype=np.int32), rng.random((V, k), dtype=np.float32), {})
        size = sum(f.stat().st_size for f in m.iterdir()) / 1e6
        print(f"model: {V} x {D}, k={k}, {size:.0f} MB", flush=True)
        t = time.perf_counter()
        load_model(m)
        cold = time.perf_counter() - t
        _report("model", cold, _best(lambda: load_model(m), args.repeat),
                _best(lambda: _numpy_model_checks(m), args.repeat), _best(lambda: _bare(m, MODEL_FILES), args.repeat))
        if args.dataset:
            ds = Path(args.dataset)
            size = sum(f.stat().st_size for f in ds.iterdir()) / 1e6
            t = time.perf_counter()
            d = Dataset.open(ds)
            cold = time.perf_counter() - t
            print(f"dataset: {d.n_sessions} sessions, {d.n_events} events, {size:.0f} MB", flush=True)
            _report("dataset", cold, _best(lambda: Dataset.open(ds), args.repeat),
                    _best(lambda: _numpy_dataset_checks(ds), args.repeat), _best(lambda: _bare(ds, ARRAYS), args.repeat))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
