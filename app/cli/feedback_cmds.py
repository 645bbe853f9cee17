"""kb feedback: what employees said about answers, and how each prompt version fares with them.

``kb feedback rates`` is the users' side of an A/B split (``KB_PROMPTS__AB``): up and down votes per
prompt version over a period, beside what the eval suites measure. ``kb feedback list`` shows the
verdicts with their comments (question text only where ``KB_AUDIT__STORE_TEXT`` kept it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from app.cli.common import cli, database, fail, out, setup
from app.errors import KbError
from app.feedback import FeedbackStore
from app.since import since_timestamp

feedback_cli = typer.Typer(
    help="Feedback on answers: rates per prompt version, and the verdicts.", no_args_is_help=True
)
cli.add_typer(feedback_cli, name="feedback")

Since = Annotated[str, typer.Option(help="From this window (7d, 24h) or date (2026-11-01) on.")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


@feedback_cli.command("rates")
def rates(since: Since = "30d", as_json: AsJson = False) -> None:
    """Up and down votes per prompt version, with the share of downs."""
    settings = setup()
    try:
        since_ts = since_timestamp(since)
    except KbError as exc:
        raise fail(exc) from exc
    with database(settings) as engine:
        found = FeedbackStore(engine).rates(since_ts)
    if as_json:
        out.print_json(json.dumps(found))
        return
    table = Table("prompt", "up", "down", "total", "down rate")
    for row in found:
        table.add_row(row["prompt"], str(row["up"]), str(row["down"]), str(row["total"]), f"{row['down_rate']:.0%}")
    out.print(table if found else f"no feedback since {since}")


@feedback_cli.command("list")
def list_feedback(
    since: Since = "7d",
    verdict: Annotated[str | None, typer.Option(help="Only 'up' or only 'down'.")] = None,
    as_json: AsJson = False,
) -> None:
    """The verdicts, oldest first, with question, comment and correction."""
    settings = setup()
    try:
        since_ts = since_timestamp(since)
    except KbError as exc:
        raise fail(exc) from exc
    with database(settings) as engine:
        rows = [r for r in FeedbackStore(engine).rows(since_ts) if verdict in (None, r["verdict"])]
    if as_json:
        for row in rows:
            out.print(json.dumps(row), markup=False, highlight=False)
        return
    table = Table("when (UTC)", "verdict", "prompt", "who", "question", "comment / correction")
    for r in rows:
        when = datetime.fromtimestamp(r["ts"], UTC).strftime("%Y-%m-%d %H:%M")
        question = r["question"] or "(not stored: KB_AUDIT__STORE_TEXT=false)"
        note = " / ".join(x for x in (r["comment"], r["correction"]) if x)
        table.add_row(when, r["verdict"], r["prompt"], r["key_name"] or "", question, note)
    out.print(table if rows else f"no feedback since {since}")
