"""POST /feedback: an employee's verdict on an answer they received (app/feedback.py).

The web page sends it from the buttons under each answer; API and /v1 clients send the ``request_id``
kb returned with the answer (the OpenAI-compatible responses carry it as ``id`` and in the
``x-request-id`` header). Counted in /metrics by verdict and prompt version.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import CurrentPrincipal, components
from app.api.responses import model_response
from app.api.schemas import FeedbackBody, FeedbackOut, error_responses
from app.metrics import FEEDBACK

router = APIRouter(tags=["feedback"])


@router.post(
    "/feedback",
    response_model=FeedbackOut,
    status_code=201,
    responses=error_responses(401, 403, 404, 413, 422, 429),  # type: ignore[arg-type]
    summary="Thumbs up or down on an answer, with an optional comment and corrected answer",
)
async def give_feedback(body: FeedbackBody, request: Request, who: CurrentPrincipal) -> Response:
    """Only the credential that received the answer (or an admin) may judge it; a second verdict replaces the first."""
    store = components(request).feedback
    record = await run_in_threadpool(
        lambda: store.give(
            who, body.request_id, body.verdict, body.comment, body.correction, out_of_scope=body.out_of_scope
        )
    )
    FEEDBACK.labels(record.verdict, record.prompt).inc()
    out = FeedbackOut(
        id=record.id, request_id=record.request_id, verdict=record.verdict, prompt=record.prompt,
        replaced=record.replaced,
    )  # fmt: skip
    return model_response(out, status_code=201)
