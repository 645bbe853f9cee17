"""JSON bodies of sync endpoints, validated and serialized in the endpoint's own worker thread.

FastAPI validates a sync (``def``) endpoint's return value against its ``response_model`` in a
second thread-pool hop after the one that ran the endpoint (``serialize_response`` runs
``field.validate`` through ``run_in_threadpool``). On a busy 2-core machine each hop is a
thread wake-up on each side, which costs more than the validation itself. An endpoint that
builds its pydantic response model (which validates it) and returns ``model_response(model)``
skips that hop: FastAPI passes a Response through untouched. The ``response_model`` declared
on the route still documents the body in the OpenAPI schema.
"""

from __future__ import annotations

from pydantic import BaseModel
from starlette.responses import Response


def model_response(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as ``application/json`` (pydantic's JSON: compact, UTF-8, like FastAPI's own)."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")
