"""GET /admin/gaps: the knowledge-gap report (app/gaps.py) for a period and collections, as JSON."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from app.api.deps import components
from app.api.schemas import error_responses
from app.gaps import gap_report
from app.since import since_timestamp

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get(
    "/gaps",
    summary="Questions the documents do not answer, grouped into topics (admins)",
    responses=error_responses(401, 403, 422),
)
async def gaps(
    request: Request,
    since: Annotated[str, Query(description="A window (30d, 24h) or a date (2026-11-01).")] = "30d",
    collection: Annotated[list[str] | None, Query(description="Only questions asked of these collections.")] = None,
    distance: Annotated[float, Query(ge=0.05, le=1.5, description="Cosine distance within a topic.")] = 0.6,
) -> dict[str, Any]:
    """Refused, weakly supported and marked-down questions of the period, clustered; ``hidden`` counts the
    questions whose text was not stored (KB_AUDIT__STORE_TEXT=false)."""
    parts = components(request)
    since_ts = since_timestamp(since)
    report = await run_in_threadpool(
        gap_report, parts.db, parts.embedder, parts.store, since_ts=since_ts, collections=collection, distance=distance
    )
    return report.as_dict()
