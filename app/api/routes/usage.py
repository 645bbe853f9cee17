"""GET /admin/usage: the usage ledger summarised, as ``kb usage --json`` shows it.

Admin keys only, like the rest of the admin surface (mounted with the ``admin`` dependency).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request

from app.api.schemas import error_responses
from app.llm.usage_report import GROUPINGS, parse_since, summarize

router = APIRouter(tags=["admin"])


@router.get("/admin/usage", responses=error_responses(401, 403, 422, 429))
def usage(
    request: Request,
    since: str = Query("7d", description="Window: a number and s, m, h, d or w (30m, 12h, 7d)."),
    by: str = Query("model", description=f"Group by one of: {', '.join(GROUPINGS)}."),
) -> dict[str, Any]:
    """Calls, cache hits, errors, tokens and cost per group, and the totals."""
    window_s = parse_since(since)
    ledger = request.app.state.components.ledger
    groups, total = summarize(ledger.rows(since_ts=time.time() - window_s), by)
    return {"since": since, "by": by, "groups": groups, "total": total}
