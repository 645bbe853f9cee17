"""The run's reports: a Markdown summary (stdout) and a self-contained HTML page with plots.

The HTML file embeds its plots as base64 PNG, so it can be mailed or attached to a CI run
as one file; the PNGs and ``results.json`` are written beside it for other tools.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from evals.compare import Comparison, compare_variants, comparison_markdown, signed
from evals.scoring import METRICS, format_value

MAX_LISTED = 12


MAX_FLAGGED = 3


def comparisons(results: dict[str, Any]) -> list[Comparison]:
    """The first variant is the baseline of every other one."""
    variants = results["variants"]
    return [compare_variants(variants[0], v) for v in variants[1:]]


def _headline(results: dict[str, Any]) -> str:
    s = results["suite"]
    parts = ", ".join(
        f"{v['name']} ({v['provider']}/{v['model']}, top_k {v['top_k']}, support {v.get('support_policy', 'flag')})"
        for v in results["variants"]
    )
    return f"{s['name']}: {s['cases']} cases, {len(results['variants'])} variant(s): {parts}; {results['created']}"


def metrics_markdown(results: dict[str, Any]) -> str:
    variants = results["variants"]
    lines = ["| metric | " + " | ".join(v["name"] for v in variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for d in METRICS:
        values = [v["metrics"].get(d.key) for v in variants]
        if all(x is None for x in values):
            continue
        lines.append(f"| {d.label} | " + " | ".join(format_value(d.key, x) for x in values) + " |")
    return "\n".join(lines)


def markdown_summary(results: dict[str, Any], gate_failures: list[str] | None = None) -> str:
    out = [f"## kb eval — {_headline(results)}", "", metrics_markdown(results), ""]
    variants = results["variants"]
    if len({v["prompt"] for v in variants}) > 1 and any(v["provider"] == "extractive" for v in variants):
        out += ["Note: the extractive provider copies sentences and ignores the prompt's text, so prompt "
                "versions only differ with a generative provider (--provider openai or local).", ""]  # fmt: skip
    for cmp in comparisons(results):
        out += [comparison_markdown(cmp), ""]
    for v in results["variants"]:
        failed = [c for c in v["cases"] if not c["passed"]]
        if not failed:
            out.append(f"**{v['name']}**: every case passed.")
            continue
        out.append(f"**{v['name']}**: {len(failed)} of {len(v['cases'])} cases failed:")
        out += [f"- `{c['id']}` {c['question']} — {'; '.join(c['failures'])}" for c in failed[:MAX_LISTED]]
        if len(failed) > MAX_LISTED:
            out.append(f"- … and {len(failed) - MAX_LISTED} more (see the HTML report or the JSON results)")
    out += _unsupported_markdown(variants)
    if gate_failures is not None:
        out += ["", "**Gate: passed.**" if not gate_failures else "**Gate: FAILED**"]
        out += [f"- {f}" for f in gate_failures]
    return "\n".join(out).rstrip() + "\n"


def _unsupported_markdown(variants: list[dict[str, Any]]) -> list[str]:
    """Per variant: how many answer sentences the support check found unsupported, and a few of them."""
    out: list[str] = []
    for v in variants:
        flagged = [(c, u) for c in v["cases"] for u in c.get("unsupported") or []]
        sentences = sum((c.get("support") or {}).get("sentences", 0) for c in v["cases"])
        dropped = sum((c.get("support") or {}).get("dropped", 0) for c in v["cases"])
        if not flagged and not dropped:
            continue
        out += ["", f"**{v['name']}** (support policy {v.get('support_policy', 'flag')}): {len(flagged)} of "
                    f"{sentences} answer sentences unsupported, {dropped} dropped; for example:"]  # fmt: skip
        uncited = [u for _, u in flagged if u["reason"] == "no_citation"]
        backed = sum(1 for u in uncited if u.get("suggested"))
        if uncited:
            out.append(f"- {len(uncited)} carry no marker; a retrieved passage would support {backed} of them")
        for case, u in flagged[:MAX_FLAGGED]:
            hint = f", passage [{u['suggested']}] would support it" if u.get("suggested") else ""
            out.append(f"- `{case['id']}` ({u['reason']}, {u['score']:.2f}{hint}) {u['text']}")
    return out


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ddd;padding:.3rem .55rem;
vertical-align:top;font-size:.9rem}th{background:#f4f4f4;text-align:left}.pass{color:#137333}
.fail{color:#b3261e;font-weight:600}.better{color:#137333}.worse{color:#b3261e}img{max-width:100%}
.answer{font-size:.82rem;color:#444;max-width:34rem}small{color:#666}code{background:#f4f4f4;padding:0 .2rem}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _case_cell(case: dict[str, Any] | None) -> str:
    if case is None:
        return "<td>—</td>"
    mark = '<span class="pass">pass</span>' if case["passed"] else '<span class="fail">fail</span>'
    why = f"<br><small>{_e('; '.join(case['failures']))}</small>" if case["failures"] else ""
    answer = _e(case.get("answer", "")[:400])
    return f'<td>{mark}{why}<div class="answer">{answer}</div></td>'


def _comparison_html(cmp: Comparison) -> str:
    rows = []
    for d in cmp.deltas:
        if d.before is None and d.after is None:
            continue
        change = signed(d.metric, d.change) + ("" if d.verdict == "same" else f" {d.verdict}")
        rows.append(
            f"<tr><td>{_e(d.label)}</td><td>{format_value(d.metric, d.before)}</td>"
            f"<td>{format_value(d.metric, d.after)}</td><td class='{d.verdict}'>{change}</td></tr>"
        )
    parts = [
        f"<h3>{_e(cmp.before)} → {_e(cmp.after)}</h3>",
        "<table><tr><th>metric</th><th>before</th><th>after</th><th>change</th></tr>" + "".join(rows) + "</table>",
    ]
    for title, cases in (("pass → fail", cmp.regressions), ("fail → pass", cmp.fixes)):
        if not cases:
            continue
        parts.append(
            f"<h4>{title} ({len(cases)})</h4><table><tr><th>case</th><th>{_e(cmp.before)}</th>"
            f"<th>{_e(cmp.after)}</th></tr>"
        )
        parts += [
            f"<tr><td><code>{_e(c['id'])}</code><br>{_e(c['question'])}</td>{_case_cell(c['before'])}"
            f"{_case_cell(c['after'])}</tr>"
            for c in cases
        ]
        parts.append("</table>")
    if not cmp.regressions and not cmp.fixes:
        parts.append("<p>No case flipped between pass and fail.</p>")
    return "\n".join(parts)  # fmt: skip


def html_report(results: dict[str, Any], plots: dict[str, bytes], gate_failures: list[str] | None = None) -> str:
    variants = results["variants"]
    img = {k: base64.b64encode(v).decode("ascii") for k, v in plots.items()}
    config = "".join(
        f"<tr><td>{_e(v['name'])}</td><td>{_e(v['prompt'])}</td><td>{_e(v['provider'])}/{_e(v['model'])}</td>"
        f"<td>{v['top_k']}</td><td>{_e(v['retrieval_mode'])}</td>"
        f"<td>{_e(json.dumps(v['set']) if v['set'] else '')}</td>"
        f"<td>{_e(v['judge'] or 'off')}</td></tr>"
        for v in variants
    )
    metric_rows = "".join(
        f"<tr><td>{_e(d.label)}</td>"
        + "".join(f"<td>{format_value(d.key, v['metrics'].get(d.key))}</td>" for v in variants)
        + "</tr>"
        for d in METRICS
        if any(v["metrics"].get(d.key) is not None for v in variants)
    )
    by_variant = [{c["id"]: c for c in v["cases"]} for v in variants]
    case_rows = "".join(
        f"<tr><td><code>{_e(c['id'])}</code><br>{_e(c['question'])}"
        + (f"<br><small>after: {_e(' / '.join(c['turns']))}</small>" if c["turns"] else "")
        + ("<br><small>unanswerable</small>" if c["unanswerable"] else "")
        + "</td>"
        + "".join(_case_cell(cases.get(c["id"])) for cases in by_variant)
        + "</tr>"
        for c in variants[0]["cases"]
    )
    gate = ""
    if gate_failures is not None:
        items = "".join(f"<li>{_e(f)}</li>" for f in gate_failures)
        gate = "<h2>Gate</h2>" + (
            '<p class="pass">passed</p>' if not gate_failures else f'<ul class="fail">{items}</ul>'
        )
    s, w = results["suite"], results.get("workspace", {})
    heads = "".join(f"<th>{_e(v['name'])}</th>" for v in variants)
    diffs = "".join(_comparison_html(c) for c in comparisons(results)) or "<p>One variant: nothing to compare.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kb eval: {_e(s["name"])}</title><style>{_CSS}</style></head>
<body>
<h1>kb eval: {_e(s["name"])}</h1>
<p>{s["cases"]} cases · run {_e(results["run_id"])} · {_e(results["created"])} · {results["seconds"]} s ·
{_e(results["machine"]["host"])} (Python {_e(results["machine"]["python"])}) · collection
<code>{_e(w.get("collection", s["collection"]))}</code> in <code>{_e(w.get("data_dir", ""))}</code> ·
embeddings {_e(results["embedding"]["model"])} ({_e(results["embedding"]["backend"])})</p>
<h2>Variants</h2>
<table><tr><th>variant</th><th>prompt</th><th>provider/model</th><th>top_k</th><th>retrieval</th><th>overrides</th>
<th>judge</th></tr>{config}</table>
{gate}
<h2>Metrics</h2>
<table><tr><th>metric</th>{heads}</tr>{metric_rows}</table>
<img alt="quality metrics per variant" src="data:image/png;base64,{img["metrics"]}">
<img alt="latency distribution" src="data:image/png;base64,{img["latency"]}">
<img alt="cost vs quality" src="data:image/png;base64,{img["cost_quality"]}">
<h2>Differences between variants</h2>
{diffs}
<h2>Cases</h2>
<table><tr><th>case</th>{heads}</tr>{case_rows}</table>
</body></html>
"""


def write_report(results: dict[str, Any], folder: Path, gate_failures: list[str] | None = None) -> Path:
    """``report.html``, ``results.json`` and the plots as PNG files in ``folder``; returns the HTML path."""
    from evals.plots import all_plots  # matplotlib only when a report is asked for

    folder.mkdir(parents=True, exist_ok=True)
    plots = all_plots(results["variants"])
    for name, png in plots.items():
        (folder / f"{name}.png").write_bytes(png)
    (folder / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    page = folder / "report.html"
    page.write_text(html_report(results, plots, gate_failures), encoding="utf-8")
    return page
