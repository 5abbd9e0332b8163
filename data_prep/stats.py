"""Dataset statistics in the layout of the published OTTO table.

``otto-prep stats DATASET [--json] [--plot FILE.png]`` prints the counts (sessions, items, events,
clicks, carts, orders) and the distribution of events per session and per item (mean, std, min,
p50, p75, p90, p95, max). ``std`` is the sample standard deviation (``ddof=1``, as pandas'
``describe``, which produced the published table); percentiles use numpy's default ``linear``
method (pandas' too). "Items" are the distinct aids that occur at least once.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .dataset import TYPE_NAMES, Dataset

PERCENTILES = (50, 75, 90, 95)
SHARE_POINTS = (0.01, 0.10, 0.50, 0.75, 0.90)
# counting uses np.bincount (an int64 table of max aid + 1 entries) while the largest aid is below
# BINCOUNT_MAX_AID; beyond, np.unique sorts a copy of the aids instead.
BINCOUNT_MAX_AID = 1 << 26


def describe(x: np.ndarray) -> dict:
    """mean, std (ddof=1; 0.0 for fewer than two values), min, p50..p95 (numpy linear), max.

    An empty input gives ``None`` for every field.
    """
    keys = ["mean", "std", "min"] + [f"p{p}" for p in PERCENTILES] + ["max"]
    x = np.asarray(x)
    if x.size == 0:
        return dict.fromkeys(keys)
    xf = x.astype(np.float64, copy=False)
    pct = np.percentile(xf, PERCENTILES)
    out = {"mean": float(xf.mean()), "std": float(xf.std(ddof=1)) if x.size > 1 else 0.0,
           "min": int(x.min())}
    out.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, pct)})
    out["max"] = int(x.max())
    return out


def item_counts(aid: np.ndarray) -> np.ndarray:
    """Events per distinct aid (int64 [items], in aid order); aids must be non-negative."""
    if aid.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(aid.min()), int(aid.max())
    if lo < 0:
        raise ValueError(f"aid.npy: negative aid {lo}")
    if hi < BINCOUNT_MAX_AID:
        c = np.bincount(aid, minlength=hi + 1)
        return c[c > 0].astype(np.int64, copy=False)
    _, c = np.unique(aid, return_counts=True)
    return c.astype(np.int64, copy=False)


def compute(dataset: Dataset, per_item: np.ndarray | None = None) -> dict:
    """The published-table statistics of ``dataset`` as a JSON-ready dict.

    Keys: sessions, items, events, clicks, carts, orders, per_session, per_item (each a
    ``describe`` dict), and definitions (std and percentile conventions). ``per_item`` may pass
    precomputed ``item_counts(dataset.aid)``.
    """
    counts = dataset.type_counts()
    if per_item is None:
        per_item = item_counts(np.asarray(dataset.aid))
    out = {
        "sessions": dataset.n_sessions,
        "items": int(per_item.shape[0]),
        "events": dataset.n_events,
        **{name: counts[name] for name in TYPE_NAMES},
        "per_session": describe(dataset.lengths()),
        "per_item": describe(per_item),
        "definitions": {"std": "sample (ddof=1)", "percentiles": "numpy linear",
                        "items": "distinct aids with at least one event"},
    }
    return out


def share_points(per_item: np.ndarray, shares=SHARE_POINTS) -> list[dict]:
    """For each share s: the fewest top items (by count) holding at least s of all events."""
    c = np.sort(np.asarray(per_item, dtype=np.int64))[::-1]
    total = int(c.sum())
    if total == 0:
        return []
    cum = np.cumsum(c)
    out = []
    for s in shares:
        k = int(np.searchsorted(cum, s * total, side="left")) + 1
        k = min(k, c.shape[0])
        out.append({"share": s, "items": k, "count_at": int(c[k - 1]),
                    "item_fraction": k / c.shape[0]})
    return out


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.2f}"


def format_table(st: dict) -> str:
    """The plain-text table printed by ``otto-prep stats``."""
    lines = []
    heads = ["sessions", "items", "events", *TYPE_NAMES]
    w = 14
    lines.append("".join(h.rjust(w) for h in heads))
    lines.append("".join(_fmt(st[h]).rjust(w) for h in heads))
    ev = st["events"] or 1
    lines.append("".join("".rjust(w) for _ in range(3)) +
                 "".join(f"{100.0 * st[t] / ev:.2f}%".rjust(w) for t in TYPE_NAMES))
    lines.append("")
    cols = ["mean", "std", "min"] + [f"p{p}" for p in PERCENTILES] + ["max"]
    lines.append("".rjust(12) + "".join(c.rjust(11) for c in cols))
    for key, label in (("per_session", "per session"), ("per_item", "per item")):
        lines.append(label.ljust(12) + "".join(_fmt(st[key][c]).rjust(11) for c in cols))
    lines.append("")
    lines.append("std: sample (ddof=1); percentiles: numpy linear; items: distinct aids with events")
    return "\n".join(lines)


def plot(dataset: Dataset, out_png: str | Path, per_item: np.ndarray | None = None) -> list[dict]:
    """Draw the sorted events-per-aid curve (log-log) with the cumulative-share points; return them."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OSError("--plot needs matplotlib (install the 'plot' extra: "
                      "pip install 'otto-recommender[plot]')") from None
    if per_item is None:
        per_item = item_counts(np.asarray(dataset.aid))
    c = np.sort(per_item)[::-1]
    pts = share_points(per_item)
    fig, ax = plt.subplots(figsize=(8, 5))
    if c.size:
        ranks = np.arange(1, c.size + 1)
        ax.plot(ranks, c, lw=1.2, color="tab:blue", label="events per aid (sorted)")
        for p in pts:
            ax.plot(p["items"], p["count_at"], "o", color="tab:red")
            ax.annotate(f"{p['share']:.0%} of events: top {p['items']:,} aids ({p['item_fraction']:.1%})",
                        (p["items"], p["count_at"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("aid rank (by event count)")
    ax.set_ylabel("events")
    ax.set_title(f"Events per aid: {c.size:,} aids, {int(c.sum()):,} events")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    out_png = Path(out_png)
    from .atomic import atomic_file
    with atomic_file(out_png, "wb", inputs=(dataset.path,)) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return pts


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stats",
        help="print dataset statistics (the published OTTO table)",
        description="Print sessions, items, events and the type mix of a dataset directory, then "
                    "the distribution of events per session and per item: mean, std, min, p50, "
                    "p75, p90, p95, max. std is the sample standard deviation (ddof=1); "
                    "percentiles use numpy's default 'linear' interpolation (as pandas' describe); "
                    "items are distinct aids with at least one event.",
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset directory (otto-prep convert output)")
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON object instead of the table")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="also draw the sorted events-per-aid curve (log-log) with the 1/10/50/75/90%% "
                        "cumulative event-share points marked (needs matplotlib, the 'plot' extra)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    ds = Dataset.open(args.dataset)
    per_item = item_counts(np.asarray(ds.aid))
    st = compute(ds, per_item)
    if args.plot:
        st["share_points"] = plot(ds, args.plot, per_item)
    if args.json:
        print(json.dumps(st))
    else:
        print(format_table(st), flush=True)
        if args.plot:
            print(f"plot: {args.plot}", file=sys.stderr)
    return 0
