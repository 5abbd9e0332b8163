"""Process memory from ``/proc`` (Linux): is a memory-mapped model shared between workers?

RSS counts every resident page a process maps, so N workers mapping the same ``vectors.npy``
each report its full size. PSS divides each shared page by the number of processes mapping it,
so the PSS of the file summed over the workers is about one copy. :func:`mapping_usage` gives
both for the mappings of one file; :func:`rollup` gives the whole-process totals.

``python -m serve.memory PID [PID ...] [--file NAME]`` prints a table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def rollup(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` as ``{field: bytes}`` (Rss, Pss, Shared_Clean, ...)."""
    out: dict[str, int] = {}
    path = Path(f"/proc/{pid}/smaps_rollup")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise OSError(f"{path}: not available (no such process, or not Linux >= 4.14)") from None
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[name.strip()] = int(parts[0]) * 1024
    return out


def mapping_usage(pid: int, name_suffix: str) -> dict[str, int]:
    """Sum of ``Size``/``Rss``/``Pss``/``Shared_Clean``/``Private_Clean``/``Private_Dirty`` (bytes)
    over the mappings of ``/proc/<pid>/smaps`` whose path ends with ``name_suffix``."""
    keys = ("Size", "Rss", "Pss", "Shared_Clean", "Private_Clean", "Private_Dirty")
    out = {k: 0 for k in keys}
    out["mappings"] = 0
    path = Path(f"/proc/{pid}/smaps")
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise OSError(f"{path}: not available (no such process, or not Linux)") from None
    current = False
    for line in lines:
        first = line.split(None, 1)[0] if line else ""
        if "-" in first and not first.endswith(":"):   # a mapping header: "addr-addr perms off dev inode path"
            fields = line.split()
            current = len(fields) >= 6 and fields[-1].endswith(name_suffix)
            out["mappings"] += current
            continue
        if current:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if name in out and len(parts) == 2 and parts[1] == "kB":
                out[name] += int(parts[0]) * 1024
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.memory",
                                     description="RSS and PSS of processes (Linux /proc), in total and for one mapped file.")
    parser.add_argument("pids", nargs="+", type=int, help="process ids (e.g. the workers of otto-serve)")
    parser.add_argument("--file", default="vectors.npy", help="mapped file name suffix to report (default: vectors.npy)")
    args = parser.parse_args(argv)
    try:
        print(f"{'pid':>8} {'RSS MiB':>9} {'PSS MiB':>9} {args.file + ' RSS':>18} {args.file + ' PSS':>18}")
        tot = [0, 0, 0, 0]
        for pid in args.pids:
            r, m = rollup(pid), mapping_usage(pid, args.file)
            row = [r.get("Rss", 0), r.get("Pss", 0), m["Rss"], m["Pss"]]
            tot = [a + b for a, b in zip(tot, row)]
            print(f"{pid:>8} " + " ".join(f"{v / 2**20:>{w}.1f}" for v, w in zip(row, (9, 9, 18, 18))))
        print(f"{'sum':>8} " + " ".join(f"{v / 2**20:>{w}.1f}" for v, w in zip(tot, (9, 9, 18, 18))))
    except OSError as exc:
        print(f"serve.memory: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
