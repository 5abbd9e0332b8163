"""The evaluation table as Markdown and JSON, and the optional plots (matplotlib, imported lazily)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from data_prep.atomic import atomic_file


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def markdown(report: dict) -> str:
    """Render the report dict built by ``eval.run`` as Markdown."""
    lines = ["# Evaluation report", ""]
    info = report.get("info", {})
    if info:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in info.items()]
        lines.append("")
    otto = report.get("otto")
    if otto:
        lines += ["## Official OTTO protocol (weighted recall@20) and next click at every position", "",
                  "| recommender | clicks R@20 | carts R@20 | orders R@20 | **total** | next-click R@20 | next-click MRR@20 | fit s | predict s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in otto["results"].items():
            nc = r.get("next_click") or {}
            lines.append(f"| {name} | {_fmt(r['clicks'])} | {_fmt(r['carts'])} | {_fmt(r['orders'])} | **{_fmt(r['total'])}** "
                         f"| {_fmt(nc.get('recall'))} | {_fmt(nc.get('mrr'))} | {r['fit_s']:.1f} | {r['predict_s']:.1f} |")
        lines += ["", f"Split: {otto['split'].get('train_sessions')} train sessions, {otto['split'].get('test_sessions')} "
                      f"test sessions; next click over {otto.get('next_click', {}).get('positions', '–')} positions of "
                      f"{otto.get('next_click', {}).get('sessions', '–')} full test sessions.", ""]
    ne = report.get("nextevent")
    if ne:
        s = ne["split"]
        lines += ["## Original study: (second-to-last -> last) pairs", "",
                  f"Types {s['types']}, sessions with at least {s['min_len']} such events: {s['eligible_sessions']}; "
                  f"{s['test_pairs']} test and {s['valid_pairs']} validation pairs (seed {s['seed']}).", ""]
        if ne.get("skipped"):
            lines += [f"Skipped: {ne['skipped']}.", ""]
        else:
            lines += ["| recommender | test recall@20 | test MRR@20 | valid recall@20 | valid MRR@20 |", "|---|---|---|---|---|"]
        for name, r in ne["results"].items():
            lines.append(f"| {name} | {_fmt(r['test']['recall'])} | {_fmt(r['test']['mrr'])} | "
                         f"{_fmt(r['valid']['recall'])} | {_fmt(r['valid']['mrr'])} |")
        lines.append("")
    if report.get("timings"):
        lines += ["## Time taken (s)", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in report["timings"].items()]
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict, out_dir: str | os.PathLike) -> None:
    out_dir = Path(out_dir)
    with atomic_file(out_dir / "report.json", "w") as fh:
        fh.write(json.dumps(report, indent=2) + "\n")
    with atomic_file(out_dir / "report.md", "w") as fh:
        fh.write(markdown(report) + "\n")


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OSError("--plot needs matplotlib (pip install 'otto-recommender[plot]')") from None
    return plt


def check_plotting() -> None:
    """Raise the one-line error early when matplotlib is missing."""
    _pyplot()


def plot(report: dict, out_dir: str | os.PathLike) -> list[str]:
    """recall@k curves (OTTO total per recommender) and the training loss per epoch."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    written = []
    curves = {n: r["curve"] for n, r in report.get("otto", {}).get("results", {}).items() if r.get("curve")}
    if curves:
        fig, axes = plt.subplots(1, 4, figsize=(16, 4))
        for ax, key in zip(axes, ("clicks", "carts", "orders", "total")):
            for name, c in curves.items():
                ax.plot(range(1, len(c[key]) + 1), c[key], label=name, marker=".")
            ax.set_title(f"{key} recall@k")
            ax.set_xlabel("k")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "recall_at_k.png", dpi=100)
        plt.close(fig)
        written.append("recall_at_k.png")
    losses = report.get("losses") or {}
    losses = {k: v for k, v in losses.items() if v}
    if losses:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, ls in losses.items():
            ax.plot(range(1, len(ls) + 1), ls, marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "loss.png", dpi=100)
        plt.close(fig)
        written.append("loss.png")
    return written
