"""kb gaps: the questions the documents do not answer, grouped into topics (app/gaps.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from app.cli.common import cli, console, fail, out, setup
from app.errors import InvalidRequestError, KbError


@cli.command("gaps")
def gaps(
    since: Annotated[str, typer.Option(help="From this window (30d, 24h) or date (2026-11-01) on.")] = "30d",
    collection: Annotated[
        list[str] | None, typer.Option("--collection", "-c", help="Only questions asked of this collection (repeat).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON on stdout.")] = False,
    html_file: Annotated[Path | None, typer.Option("--html", help="Write an HTML report with a chart here.")] = None,
    distance: Annotated[
        float, typer.Option(min=0.05, max=1.5, help="Questions closer than this (cosine distance) share a topic.")
    ] = 0.6,
    top: Annotated[int, typer.Option(help="Topics shown in the table.")] = 20,
    out_of_scope: Annotated[
        list[int] | None,
        typer.Option(
            "--out-of-scope",
            help="Mark topic N of this report (its # in the table) as not for kb to answer: its questions become "
            "refusal cases in 'kb eval cases --from-feedback' (repeat for several).",
        ),
    ] = None,
) -> None:
    """Refused, weakly supported and marked-down questions of a period, grouped into topics, largest first:
    size, trend, three representative questions and the nearest documents that exist."""
    from app.bootstrap import Components
    from app.gaps import gap_report
    from app.since import since_timestamp

    settings = setup()
    components = Components(settings)
    try:
        report = gap_report(
            components.db, components.embedder, components.store,
            since_ts=since_timestamp(since), collections=collection or None, distance=distance,
        )  # fmt: skip
    except KbError as exc:
        raise fail(exc) from exc
    finally:
        components.close()
    for number in out_of_scope or []:
        if not 1 <= number <= len(report.topics):
            raise fail(InvalidRequestError(f"no topic {number}: this report has {len(report.topics)}"))
        marked = _mark_out_of_scope(settings, report.topics[number - 1].request_ids)
        console.print(f"topic {number} ({report.topics[number - 1].label}): {marked} questions marked out of scope")
    if html_file is not None:
        from app.gaps_html import render

        html_file.parent.mkdir(parents=True, exist_ok=True)
        html_file.write_text(render(report), encoding="utf-8")
        console.print(f"report: {html_file}")
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
        return
    if report.hidden:
        console.print(
            f"{report.hidden} questions cannot be shown: their text was not stored (KB_AUDIT__STORE_TEXT=false)"
        )
    if not report.topics:
        out.print(f"no refused, weakly supported or marked-down questions since {since}")
        return
    table = Table("#", "topic", "size", "trend", "why", "representative questions", "nearest documents")
    for number, t in enumerate(report.topics[:top], start=1):
        docs = "\n".join(f"{d['source']}" + (f" p.{d['page']}" if d.get("page") else "") for d in t.documents)
        why = ", ".join(f"{k} {v}" for k, v in sorted(t.reasons.items()))
        table.add_row(str(number), t.label, str(t.size), t.trend, why, "\n".join(t.examples), docs or "none")
    out.print(table)
    console.print(f"{report.questions} questions in {len(report.topics)} topics since {since}")


def _mark_out_of_scope(settings: Any, request_ids: list[str]) -> int:
    """An operator's verdict (admin) on each question of a topic: not for kb to answer."""
    from app.auth import Principal
    from app.cli.common import database
    from app.feedback import FeedbackStore

    operator = Principal("kb gaps (operator)", "admin", None, "cli:gaps")
    with database(settings) as engine:
        store = FeedbackStore(engine)
        for rid in request_ids:
            store.give(operator, rid, "down", "marked out of scope with kb gaps", out_of_scope=True)
    return len(request_ids)
