"""kb usage: what the model calls cost, grouped by day, model, provider, prompt, collection or key.

The figures come from the usage ledger (one row per model call attempt and per cache
hit) through ``app.llm.usage_report``, the same summary ``GET /admin/usage`` serves.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from app.bootstrap import Components
from app.cli.common import cli, console, out, setup
from app.errors import KbError
from app.llm.usage_report import GROUPINGS, parse_since, summarize


@cli.command()
def usage(
    since: Annotated[str, typer.Option("--since", help="Window to sum over: 30m, 12h, 7d, 2w.")] = "7d",
    by: Annotated[str, typer.Option("--by", help=f"Group by: {'|'.join(GROUPINGS)}.")] = "model",
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON list of groups; the last element is the totals row (total: true).")
    ] = False,
) -> None:
    """Calls, cache hits, errors, tokens and cost from the usage ledger, with a totals row."""
    try:
        window_s = parse_since(since)
        settings = setup()
        components = Components(settings)
        groups, total = summarize(components.ledger.rows(since_ts=time.time() - window_s), by)
    except KbError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
        raise typer.Exit(2) from exc
    fields = GROUPINGS[by][0]
    if as_json:
        rows = [{**g, "total": False} for g in groups] + [{**dict.fromkeys(fields), **total, "total": True}]
        out.print_json(json.dumps(rows))
        return
    table = Table(*fields, "calls", "cached", "errors", "prompt tok", "completion tok", "cost USD")
    numbers = ("calls", "cached", "errors", "prompt_tokens", "completion_tokens")
    for g in groups:
        table.add_row(*(str(g[f]) for f in fields), *(str(g[k]) for k in numbers), f"{g['cost_usd']:.6f}")
    table.add_section()
    table.add_row("total", *([""] * (len(fields) - 1)), *(str(total[k]) for k in numbers), f"{total['cost_usd']:.6f}")
    out.print(table)
