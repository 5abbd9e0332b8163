"""word2vec C format export/import: ours vs gensim on the same random matrix, in one run.

For a V x D float32 matrix (standard normal x 0.1, like trained vectors) with random integer
aids, times

* export text / binary: ``w2v.interchange.write_word2vec`` vs gensim ``save_word2vec_format``;
* import text / binary: ``w2v.interchange.read_word2vec`` vs gensim ``load_word2vec_format``;

checks that each side reads the other's file bit-exactly, and prints seconds, MB/s and the
ratio gensim/ours (above 1: ours is faster), for wall time and for process CPU time (the CPU
ratio is the fairer one on a loaded machine; ours uses up to all cores, gensim one). Our export includes the fsync of the atomic write;
gensim's does not sync. ``--skip-gensim`` times ours only (use it for the full 1.86M x 100).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from w2v import interchange as ix


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000, help="V, rows of the matrix (default 200000)")
    p.add_argument("--dim", type=int, default=100, help="D, vector size (default 100)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per operation, best kept (default 1)")
    p.add_argument("--skip-gensim", action="store_true", help="time ours only")
    p.add_argument("--tmpdir", default=None, help="directory for the files (default: system temp)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p.parse_args(argv)


def best_of(fn, repeat):
    """Best wall time of ``repeat`` runs, as (wall s, process CPU s of that run, result)."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        w = time.perf_counter() - t
        if w < best:
            best, cpu = w, time.process_time() - c
    return (best, cpu), out


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    V, D = args.rows, args.dim
    vec = (rng.standard_normal((V, D), dtype=np.float32) * np.float32(0.1))
    aids = rng.choice(1_860_000 * 2, size=V, replace=False).astype(np.int64)
    print(f"# {V} x {D} float32, numpy {np.__version__}, numba {numba.__version__}, "
          f"python {platform.python_version()}, {os.cpu_count()} cpus", flush=True)
    # warm the kernels (compile or load the cache) outside the timings
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as d:
        for b in (False, True):
            ix.write_word2vec(Path(d) / "w", aids[:3], vec[:3], binary=b)
            ix.read_word2vec(Path(d) / "w")
    kv = None
    if not args.skip_gensim:
        from gensim.models import KeyedVectors
        kv = KeyedVectors(D)
        kv.add_vectors([str(a) for a in aids], vec)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as d:
        for binary in (False, True):
            kind = "binary" if binary else "text"
            ours = Path(d) / f"ours.{kind}"
            theirs = Path(d) / f"gensim.{kind}"
            t_ow, _ = best_of(lambda: ix.write_word2vec(ours, aids, vec, binary=binary), args.repeat)
            size = ours.stat().st_size
            t_or, (a2, v2, _) = best_of(lambda: ix.read_word2vec(ours), args.repeat)
            assert np.array_equal(a2, aids) and np.array_equal(v2.view(np.uint32), vec.view(np.uint32))
            del a2, v2
            t_gw = t_gr = None
            if kv is not None:
                from gensim.models import KeyedVectors
                t_gw, _ = best_of(lambda: kv.save_word2vec_format(str(theirs), binary=binary), args.repeat)
                t_gr, kv2 = best_of(lambda: KeyedVectors.load_word2vec_format(str(ours), binary=binary), args.repeat)
                rowsel = [kv2.key_to_index[str(a)] for a in aids[:1000]]
                assert np.array_equal(kv2.vectors[rowsel], vec[:1000]), "gensim read our file differently"
                del kv2
                a3, v3, _ = ix.read_word2vec(theirs)
                assert np.array_equal(a3, aids) and np.array_equal(v3.view(np.uint32), vec.view(np.uint32))
                if not binary:
                    assert ours.read_bytes() == theirs.read_bytes(), "text exports differ"
                del a3, v3
            mb = size / 1e6
            rows.append((f"export {kind}", t_ow, t_gw, mb))
            rows.append((f"import {kind}", t_or, t_gr, mb))
            ours.unlink()
            if theirs.exists():
                theirs.unlink()
    print(f"{'operation':<14} {'file MB':>8} {'ours s':>8} {'ours cpu':>9} {'ours MB/s':>10} "
          f"{'gensim s':>9} {'gensim cpu':>11} {'wall ratio':>11} {'cpu ratio':>10}")
    for name, (to, co), tg, mb in rows:
        if tg is not None:
            (tg, cg) = tg
            g = f"{tg:9.2f} {cg:11.2f} {tg / to:10.1f}x {cg / co:9.1f}x"
        else:
            g = f"{'-':>9} {'-':>11} {'-':>11} {'-':>10}"
        print(f"{name:<14} {mb:8.1f} {to:8.2f} {co:9.2f} {mb / to:10.1f} {g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
