"""kb usage: what the model calls cost."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Annotated, Any

import typer
from rich.table import Table

from app.bootstrap import Components
from app.cli.common import cli, out, setup


@cli.command()
def usage(
    since_hours: Annotated[float, typer.Option("--since-hours", help="Window to sum over.")] = 24 * 7,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Calls, tokens and cost per provider/model from the usage ledger."""
    components = Components(setup())
    rows = components.ledger.rows(since_ts=time.time() - since_hours * 3600)
    totals: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"calls": 0, "cached": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    )
    for row in rows:
        t = totals[(row["provider"], row["model"])]
        t["calls"] += 1
        t["cached"] += row["cached"]
        t["errors"] += row["status"] != "ok"
        t["prompt_tokens"] += row["prompt_tokens"]
        t["completion_tokens"] += row["completion_tokens"]
        t["cost_usd"] += row["cost_usd"] or 0.0
    result = [{"provider": p, "model": m, **t} for (p, m), t in sorted(totals.items())]
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table("provider", "model", "calls", "cached", "errors", "prompt tok", "completion tok", "cost USD")
    for r in result:
        table.add_row(
            r["provider"],
            r["model"],
            *(str(r[k]) for k in ("calls", "cached", "errors", "prompt_tokens", "completion_tokens")),
            f"{r['cost_usd']:.6f}",
        )
    out.print(table)
