"""GET /metrics: Prometheus exposition of the process' metrics (app/metrics.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.metrics import render_latest

router = APIRouter(tags=["system"])


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    body, content_type = render_latest()
    return Response(content=body, media_type=content_type)
