"""docs/img/scale.png from bench/scale.py's results.json: each measured figure against collection size."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setups = sorted({entry["setup"] for entry in results.values()})
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = [
        ("/search p95, 1 client (ms)", lambda e, m: e[f"search_{m}_1"]["p95"], ("dense", "lexical", "hybrid")),
        ("/search p95, 20 clients (ms)", lambda e, m: e[f"search_{m}_20"]["p95"], ("dense", "lexical", "hybrid")),
        ("API process RSS (MB)", lambda e, m: e[m], ("rss_mb", "rss_peak_mb")),
        ("data on disk (MB)", lambda e, m: e[m], ("disk_mb",)),
        ("seconds to ready; to a new document's first answer", _seconds, ("open", "restart", "answer")),
        (
            "ms: slowest query while ingesting, first after",
            lambda e, m: e["ingest"][m],
            ("max_query_ms_during", "first_query_after_ms"),
        ),
    ]
    for ax, (title, value, series) in zip(axes.flat, panels, strict=True):
        for setup in setups:
            entries = sorted((e for e in results.values() if e["setup"] == setup), key=lambda e: e["chunks"])
            for name in series:
                xs, ys = [], []
                for e in entries:
                    try:
                        y = value(e, name)
                    except KeyError:
                        continue
                    if y is not None:
                        xs.append(e["chunks"])
                        ys.append(y)
                if xs:
                    ax.plot(xs, ys, marker="o", label=f"{name} ({setup})" if len(setups) > 1 else name)
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("chunks in the collection")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("kb at 10k, 100k and 1M chunks (bench/scale.py; 2-core VM)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def _seconds(entry: dict[str, Any], name: str) -> float | None:
    if name == "answer":
        return entry["ingest"].get("first_answer_s")  # type: ignore[no-any-return]
    return entry.get(f"{name}_s")
