"""The report's three plots, as PNG bytes (matplotlib, headless Agg backend).

- metrics: one bar per variant for every quality metric in [0, 1];
- latency: each variant's per-case latencies (box plot with the cases as dots);
- cost vs quality: each variant as a point, total cost against the share of cases passed.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit: same output on a laptop and in CI

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from evals.scoring import METRICS, QUALITY

_LABELS = {d.key: d.label for d in METRICS}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def metric_bars(variants: list[dict[str, Any]]) -> bytes:
    keys = [k for k in QUALITY if any(v["metrics"].get(k) is not None for v in variants)]
    fig, ax = plt.subplots(figsize=(9, 0.3 * max(len(keys), 1) * max(len(variants), 1) ** 0.5 + 1.2))
    height = 0.8 / max(len(variants), 1)
    for i, v in enumerate(variants):
        ys = [len(keys) - 1 - j + (len(variants) / 2 - i - 0.5) * height for j in range(len(keys))]
        vals = [v["metrics"].get(k) or 0.0 for k in keys]
        bars = ax.barh(ys, vals, height=height, label=v["name"], color=f"C{i}")
        for bar, key in zip(bars, keys, strict=True):
            value = v["metrics"].get(key)
            text = "n/a" if value is None else f"{value:.2f}"
            ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=7)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([_LABELS[k] for k in reversed(keys)])
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("score (false refusal rate: lower is better)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Quality metrics per variant")
    return _png(fig)


def latency_distribution(variants: list[dict[str, Any]]) -> bytes:
    data = [[c["latency_ms"] for c in v["cases"] if c.get("latency_ms") is not None] or [0.0] for v in variants]
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.6 * len(variants)))
    ax.boxplot(data, vert=False, showfliers=False)
    for i, values in enumerate(data, start=1):
        ax.scatter(values, [i] * len(values), s=10, alpha=0.5, color=f"C{i - 1}")
    ax.set_yticks(range(1, len(variants) + 1))
    ax.set_yticklabels([v["name"] for v in variants])
    ax.set_xlabel("answer latency per case (ms)")
    ax.set_title("Latency distribution")
    return _png(fig)


def cost_vs_quality(variants: list[dict[str, Any]]) -> bytes:
    """Quality (share of cases passed) against total cost, and against latency p95 (the other price).

    Each variant keeps its colour from the bar chart; points that coincide are drawn smaller in
    turn, so every variant stays visible.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    costs = [v["metrics"].get("cost_total_usd") for v in variants]
    for i, v in enumerate(variants):
        quality = v["metrics"].get("pass_rate") or 0.0
        size = max(140 - 40 * i, 30)
        label = v["name"] + ("" if costs[i] is not None else " (cost unknown)")
        left.scatter([costs[i] or 0.0], [quality], s=size, color=f"C{i}", label=label, zorder=3)
        right.scatter([v["metrics"].get("latency_p95_ms") or 0.0], [quality], s=size, color=f"C{i}", zorder=3)
    left.set_xlabel("total cost of the suite (USD)")
    left.set_ylabel("share of cases passed")
    left.set_ylim(0, 1.05)
    if all((c or 0.0) == 0.0 for c in costs):
        left.set_xlim(-0.01, 0.1)
        left.set_title("Cost vs quality (all $0: offline provider)")
    else:
        left.set_xlim(left=0)
        left.set_title("Cost vs quality")
    right.set_xlabel("latency p95 (ms)")
    right.set_xlim(left=0, right=max(v["metrics"].get("latency_p95_ms") or 0.0 for v in variants) * 1.2 or 1.0)
    right.set_title("Latency vs quality")
    left.legend(loc="lower left", fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _png(fig)


def all_plots(variants: list[dict[str, Any]]) -> dict[str, bytes]:
    return {
        "metrics": metric_bars(variants),
        "latency": latency_distribution(variants),
        "cost_quality": cost_vs_quality(variants),
    }
