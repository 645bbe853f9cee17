"""kb audit: the answered requests recorded in the audit log, newest last.

Reads the audit table of the shared database (no model, no vector store), so it is instant
and safe to run next to a serving process (SQLite in WAL mode: readers never block the writer).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from app.audit import AuditLog
from app.cli.common import cli, console, database, out, setup
from app.db.legacy import LEGACY_FILES
from app.errors import KbError
from app.settings import Settings
from app.since import since_timestamp

_QUESTION_CHARS = 60


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _question(row: dict[str, Any]) -> str:
    text = row["question"]
    if text is None:
        return f"sha256:{row['question_sha256'][:12]}"
    text = " ".join(text.split())
    return text if len(text) <= _QUESTION_CHARS else text[: _QUESTION_CHARS - 1] + "…"


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table("#", "time (UTC)", "request", "key", "collections", "question", "prompt", "model", "grounded",
                  "cached", "chunks", "tokens", "cost USD", "ms")  # fmt: skip
    for r in rows:
        cost = "" if r["cost_usd"] is None else f"{r['cost_usd']:.6f}"
        table.add_row(
            str(r["id"]),  # the row's own id: a client may send the same X-Request-ID twice
            _when(r["ts"]),
            r["request_id"][:12],
            Text(r["key_name"] or ""),  # user-supplied text: never read as rich markup
            Text(", ".join(r["collections"])),
            Text(_question(r)),
            f"{r['tool'] or ''} {r['prompt']}".strip(),  # an MCP call names its tool (mcp.search has no prompt)
            f"{r['provider']}/{r['model']}" if r["provider"] else "",
            "yes" if r["grounded"] else "no",
            "yes" if r["cached"] else "no",
            f"{len(r['cited'])}/{len(r['retrieved'])}",
            f"{r['prompt_tokens']}+{r['completion_tokens']}",
            cost,
            f"{r['latency_ms']:.0f}",
        )
    return table


def _nothing_recorded(settings: Settings) -> bool:
    """A fresh SQLite install with no database and no legacy log yet: say so rather than create files."""
    if settings.database.url is not None or settings.default_database_file.exists():
        return False
    legacy = [n for n, tables in LEGACY_FILES.items() if any(t.name == "audit" for t in tables)]
    return not any((settings.data_dir / n).exists() for n in legacy)


@cli.command()
def audit(
    since: Annotated[
        str, typer.Option("--since", help="A window back from now (30m, 1h, 1d, 7d) or an ISO date/time (UTC).")
    ] = "1d",
    key: Annotated[str | None, typer.Option("--key", help="Only requests made with this API key name.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the newest N rows.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line, every recorded field.")] = False,
) -> None:
    """Answered requests: who asked, which prompt version, provider and model, chunks used, cost, latency."""
    try:
        since_ts = since_timestamp(since)
    except KbError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
        raise typer.Exit(2) from exc
    settings = setup()
    if _nothing_recorded(settings):
        state = "on" if settings.audit.enabled else "off (KB_AUDIT__ENABLED=false)"
        console.print(f"no audit log yet in {settings.data_dir}; auditing is {state}")
        return
    with database(settings) as engine:
        rows = AuditLog(engine).rows(since_ts=since_ts, key_name=key, limit=limit)
    if as_json:
        for row in rows:
            out.print(json.dumps(row, ensure_ascii=False), markup=False, highlight=False, emoji=False)
        return
    out.print(_table(rows))
    console.print(f"{len(rows)} requests since {_when(since_ts)} UTC" + (f" for key {key!r}" if key else ""))
