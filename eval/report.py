"""The evaluation table as Markdown and JSON, and the optional plots (matplotlib, imported lazily)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from data_prep.atomic import atomic_file
from data_prep.flags import format_default

from .metrics import WEIGHTS


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


STUDY = ("hejfelix/otto-recommender", "https://github.com/hejfelix/otto-recommender")
PLOT_CAPTIONS = {
    "events_per_aid.png": "Events per aid, sorted (log-log): a few aids take most events, most aids are rare.",
    "recall_at_k.png": "Recall@k of every recommender, per type and weighted total, k = 1..K.",
    "loss.png": "Word2Vec training loss (mean SGNS loss per pair) per epoch.",
}


def _types(codes) -> str:
    from data_prep.dataset import TYPE_NAMES
    if isinstance(codes, str):
        return codes
    return ", ".join(TYPE_NAMES[int(c)] if isinstance(c, int) or str(c).isdigit() else str(c) for c in codes)


def markdown(report: dict) -> str:
    """Render the report dict built by ``eval.run`` as Markdown (plots embedded when drawn)."""
    lines = ["# Evaluation report", ""]
    info = report.get("info", {})
    k = info.get("k", 20)
    if info:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {key} | {format_default(v) if isinstance(v, float) else _fmt(v)} |" for key, v in info.items()]
        lines.append("")
    plots = set(report.get("plots") or ())
    if "events_per_aid.png" in plots:
        lines += ["![events per aid](events_per_aid.png)", "", PLOT_CAPTIONS["events_per_aid.png"], ""]
    otto = report.get("otto")
    if otto:
        lines += [f"## Official OTTO protocol (weighted recall@{k}) and next click at every position", "",
                  f"| recommender | clicks R@{k} | carts R@{k} | orders R@{k} | **total** | next-click R@{k} "
                  f"| next-click MRR@{k} | fit s | predict s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in otto["results"].items():
            nc = r.get("next_click") or {}
            lines.append(f"| {name} | {_fmt(r['clicks'])} | {_fmt(r['carts'])} | {_fmt(r['orders'])} | **{_fmt(r['total'])}** "
                         f"| {_fmt(nc.get('recall'))} | {_fmt(nc.get('mrr'))} | {r['fit_s']:.1f} | {r['predict_s']:.1f} |")
        sp, ncs = otto["split"], otto.get("next_click", {})
        lines += ["",
                  f"**total** = {WEIGHTS['clicks']:.2f} × clicks + {WEIGHTS['carts']:.2f} × carts + "
                  f"{WEIGHTS['orders']:.2f} × orders, the OTTO competition's score. Each type's R@{k} is "
                  f"micro-averaged: the hits in the first {k} predictions of every test session, divided by the sum "
                  f"over sessions of min({k}, |truth|), |truth| being the number of true aids (clicks: the one next "
                  "click; carts and orders: the distinct aids carted or ordered after the cut). Next click: R@k is the share of prefixes "
                  "whose next clicked aid is in the clicks list, MRR@k the mean of 1/rank (0 when missing).", "",
                  f"Split: {_int(sp.get('train_sessions'))} train sessions, {_int(sp.get('test_sessions'))} test "
                  f"sessions; next click over {_int(ncs.get('positions'))} positions of {_int(ncs.get('sessions'))} "
                  "full test sessions.", ""]
        lines += _session_method(otto["results"])
        if "recall_at_k.png" in plots:
            lines += ["![recall at k](recall_at_k.png)", "", PLOT_CAPTIONS["recall_at_k.png"] + " "
                      "A recall@k curve can fall as k grows: the denominator min(k, |truth|) grows with k for "
                      "sessions with several true aids, so a recommender whose extra predictions are rarely hits "
                      "(co-visitation runs out of strong neighbours) loses more in the denominator than it gains.", ""]
        else:
            lines += ["Recall@k is not monotone in k: its denominator min(k, |truth|) grows with k, so a recommender "
                      "whose later predictions are rarely hits (co-visitation runs out of strong neighbours) can score "
                      "lower at a larger k.", ""]
    ne = report.get("nextevent")
    if ne:
        s = ne["split"]
        lines += ["## Original study: (second-to-last -> last) pairs", "",
                  f"The protocol of the original study, [{STUDY[0]}]({STUDY[1]}), whose Word2Vec scored "
                  f"recall@20 ≈ 0.04 on the real OTTO orders (and its random baseline ≈ 0): keep events of types "
                  f"{_types(s['types'])}; sessions with at least {s['min_len']} such events: "
                  f"{_int(s['eligible_sessions'])}; train on each without its last event; query the second-to-last "
                  f"aid, target the last one; {_int(s['test_pairs'])} test and {_int(s['valid_pairs'])} validation "
                  f"pairs (seed {s['seed']}). recall@{k} is the hit rate, MRR@{k} the mean of 1/rank.", ""]
        if ne.get("skipped"):
            lines += [f"Skipped: {ne['skipped']}.", ""]
        else:
            lines += [f"| recommender | test recall@{k} | test MRR@{k} | valid recall@{k} | valid MRR@{k} |",
                      "|---|---|---|---|---|"]
        for name, r in ne["results"].items():
            lines.append(f"| {name} | {_fmt(r['test']['recall'])} | {_fmt(r['test']['mrr'])} | "
                         f"{_fmt(r['valid']['recall'])} | {_fmt(r['valid']['mrr'])} |")
        lines.append("")
    if "loss.png" in plots:
        lines += ["![training loss](loss.png)", "", PLOT_CAPTIONS["loss.png"], ""]
    timings = dict(report.get("timings") or {})
    if timings:
        total = timings.pop("total", sum(timings.values()))
        other = total - sum(timings.values())
        lines += ["## Time taken (s)", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {key} | {v:.1f} |" for key, v in timings.items()]
        if other >= 0.05:
            lines.append(f"| other (loading, logging, writing) | {other:.1f} |")
        lines += [f"| **total** | **{total:.1f}** |", ""]
    return "\n".join(lines)


def _session_method(results: dict) -> list[str]:
    """A line on how the Word2Vec session answers were computed when they are approximate (the
    IVF method): nprobe, the table expansion and the recall checked against the exact rule."""
    for name in ("w2v-session", "blend"):
        info = (results.get(name) or {}).get("info") or {}
        info = info.get("w2v", info)
        if info.get("method") == "ivf" and "sampled_recall" in info:
            how = f"IVF, {_int(info.get('nprobe'))} of {_int(info.get('nlist'))} lists probed"
            if info.get("expand_rounds"):
                how += (f", then {info['expand_rounds']} expansion round(s) through the model's {info.get('table_k')}-"
                        f"neighbour table (the first {info.get('expand_width')} results' rows)")
            return [f"Word2Vec session answers ({name}): {how}; sampled recall {_fmt(info['sampled_recall'])} "
                    f"against the exact answers (the service's) of {_int(info.get('recall_sample'))} sessions.", ""]
    return []


def _int(v) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else _fmt(v)


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


def plot(report: dict, out_dir: str | os.PathLike, dataset=None) -> list[str]:
    """The events-per-aid curve of ``dataset`` (data_prep.stats), the recall@k curves (per type and
    total, per recommender) and the training loss per epoch; returns the file names written."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    written = []
    if dataset is not None and dataset.n_events:
        from data_prep.stats import plot as plot_events_per_aid
        plot_events_per_aid(dataset, out_dir / "events_per_aid.png")
        written.append("events_per_aid.png")
    curves = {n: r["curve"] for n, r in report.get("otto", {}).get("results", {}).items() if r.get("curve")}
    if curves:
        fig, axes = plt.subplots(1, 4, figsize=(16, 4))
        for ax, key in zip(axes, ("clicks", "carts", "orders", "total")):
            for name, c in curves.items():
                ax.plot(range(1, len(c[key]) + 1), c[key], label=name, marker=".")
            ax.set_title(f"{key} recall@k" + (" ({:g} clicks + {:g} carts + {:g} orders)".format(*WEIGHTS.values())
                                               if key == "total" else ""),
                         fontsize=9)
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
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("mean SGNS loss per pair")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "loss.png", dpi=100)
        plt.close(fig)
        written.append("loss.png")
    return written
