"""The knowledge-gap report as one self-contained HTML page: a chart of topics by size over time and a table.

The chart is rendered headless (matplotlib's Agg, as the eval reports) and embedded as a PNG data URL, so
the page needs nothing else. All text from questions and documents is HTML-escaped: it is user input.
"""

from __future__ import annotations

import base64
import html
import io
import time

from app.gaps import GapReport

TOP_IN_CHART = 8


def _chart(report: GapReport) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    topics = report.topics[:TOP_IN_CHART]
    days = sorted({d for t in topics for d in t.by_day})
    if not days:
        return ""
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=110)
    bottom = [0] * len(days)
    for topic in topics:
        counts = [topic.by_day.get(d, 0) for d in days]
        ax.bar(days, counts, bottom=bottom, label=f"{topic.label} ({topic.size})"[:48])
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.set_ylabel("questions")
    ax.set_title("Unanswered or disputed questions per day, largest topics")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render(report: GapReport) -> str:
    e = html.escape
    period = f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(report.since_ts))} to " + time.strftime(
        "%Y-%m-%d %H:%M UTC", time.gmtime(report.until_ts)
    )
    rows = []
    for t in report.topics:
        docs = "<br>".join(
            e(f"{d['collection']}: {d['source']}" + (f" p.{d['page']}" if d.get("page") else "")
              + f" ({d['similarity']:.2f})") for d in t.documents
        ) or "none"  # fmt: skip
        examples = "".join(f"<li>{e(q)}</li>" for q in t.examples)
        reasons = ", ".join(f"{e(k)} {v}" for k, v in sorted(t.reasons.items()))
        rows.append(
            f"<tr><td>{e(t.label)}</td><td>{t.size}</td><td>{e(t.trend)} ({t.first_half} → {t.second_half})</td>"
            f"<td>{reasons}</td><td><ul>{examples}</ul></td><td>{docs}</td></tr>"
        )
    chart = _chart(report)
    hidden = (
        f"<p><b>{report.hidden} questions cannot be shown</b>: "
        "their text was not stored (KB_AUDIT__STORE_TEXT=false).</p>"
        if report.hidden else ""
    )  # fmt: skip
    scope = ", ".join(report.collections) if report.collections else "all collections"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>kb knowledge gaps</title>"
        "<style>body{font-family:sans-serif;margin:2rem;max-width:80rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.4rem;vertical-align:top;font-size:.9rem}ul{margin:0;padding-left:1rem}"
        "</style></head><body>"
        f"<h1>Knowledge gaps</h1><p>{e(period)}, {e(scope)}: {report.questions} questions refused, weakly "
        f"supported or marked down, in {len(report.topics)} topics.</p>{hidden}"
        + (f"<img alt='topics by size over time' src='{chart}'>" if chart else "")
        + "<table><tr><th>topic</th><th>questions</th><th>trend (1st → 2nd half)</th><th>why</th>"
        "<th>representative questions</th><th>nearest documents (similarity)</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
