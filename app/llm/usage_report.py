"""Summaries of the usage ledger, shared by ``kb usage`` and ``GET /admin/usage``.

One function groups ledger rows and adds a totals row, so the CLI and the API can
never disagree about what was spent. Costs are summed unrounded and rounded once
at the end (to 1e-8 USD), so the total equals price × tokens to the cent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from app.errors import InvalidRequestError
from app.llm.costs import UsageRow

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")

# by → (the fields naming a group, how to compute them from a row)
GROUPINGS: dict[str, tuple[tuple[str, ...], Callable[[UsageRow], tuple[Any, ...]]]] = {
    "model": (("provider", "model"), lambda r: (r["provider"], r["model"])),
    "provider": (("provider",), lambda r: (r["provider"],)),
    "day": (("day",), lambda r: (time.strftime("%Y-%m-%d", time.gmtime(r["ts"])),)),
    "prompt": (("prompt",), lambda r: (r["prompt"] or None,)),
    "collection": (("collection",), lambda r: (r.get("collection"),)),
    "key": (("key",), lambda r: (r.get("key"),)),
}


def parse_since(text: str) -> float:
    """'30m', '12h', '7d', '2w' → seconds."""
    match = _SINCE.match(text)
    if not match:
        raise InvalidRequestError(
            f"cannot read since={text!r}: use a number and a unit s, m, h, d or w, like 30m, 12h or 7d",
            code=InvalidRequestError.INVALID_SINCE,
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def _empty() -> dict[str, Any]:
    return {"calls": 0, "cached": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}


def _add(acc: dict[str, Any], row: UsageRow) -> None:
    acc["calls"] += 1
    acc["cached"] += int(row["cached"])
    acc["errors"] += row["status"] != "ok"
    acc["prompt_tokens"] += row["prompt_tokens"]
    acc["completion_tokens"] += row["completion_tokens"]
    acc["cost_usd"] += row["cost_usd"] or 0.0


def summarize(rows: Iterable[UsageRow], by: str = "model") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Groups sorted by their key, and the totals over all rows."""
    if by not in GROUPINGS:
        raise InvalidRequestError(
            f"cannot group by {by!r}; use one of {', '.join(GROUPINGS)}", code=InvalidRequestError.INVALID_BY
        )
    fields, key_of = GROUPINGS[by]
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    total = _empty()
    for row in rows:
        _add(groups.setdefault(key_of(row), _empty()), row)
        _add(total, row)
    result = []
    for key in sorted(groups, key=lambda k: tuple("" if v is None else str(v) for v in k)):
        acc = groups[key]
        acc["cost_usd"] = round(acc["cost_usd"], 8)
        result.append({**dict(zip(fields, key, strict=True)), **acc})
    total["cost_usd"] = round(total["cost_usd"], 8)
    return result, total
