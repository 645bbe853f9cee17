"""POST /chat: answer a question from the collections the caller may read, with citations.

With ``stream: true`` the answer arrives as Server-Sent Events. Everything that can be
refused (key, collection access, validation, unknown conversation) is checked before
the stream starts, so those failures keep their HTTP status; a failure after that
(the provider) becomes an ``error`` event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app import tracing
from app.api.deps import CurrentPrincipal, audit_row, components, resolve_collections
from app.api.errors import error_body
from app.api.responses import model_response
from app.api.schemas import ChatBody, ChatResponse, error_responses
from app.auth import Principal
from app.errors import KbError
from app.rag.answer import Answer
from app.rag.conversation import Turn
from app.rag.options import AnswerEvent, AskOptions

log = logging.getLogger(__name__)
router = APIRouter(tags=["chat"])

_ERRORS = error_responses(401, 403, 404, 413, 422, 429, 502, 503, 504)
_SSE_DOC = {
    "description": "The answer; with `stream: true`, Server-Sent Events: `token` events with "
    '`{"delta": "..."}`, then one `done` event whose data is the ChatResponse JSON, or an `error` event '
    'with `{"error": {"code", "message", "request_id"}}`.',
    "content": {
        "text/event-stream": {
            "example": 'event: token\ndata: {"delta": "Full-time "}\n\n'
            'event: done\ndata: {"answer": "Full-time employees get 27 days [1].", "...": "..."}\n\n'
        }
    },
}


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _remember(request: Request, who: Principal, conversation_id: str | None, question: str, answer: Answer) -> None:
    """Store the turn (in a new conversation when ``conversation_id`` is None) and audit the answer.

    A cache hit's rows (cost 0) go to the deferred writer: committed just after the response."""
    with tracing.span("kb.bookkeeping", {"kb.deferred": answer.cached}):
        store = components(request).conversations
        turn = Turn(question, answer.answer, answer.standalone_question)
        if conversation_id is None:
            conversation_id = store.start(who.key_id, first=(turn, answer.request_id), defer=answer.cached)
        else:
            store.append(conversation_id, who.key_id, turn, answer.request_id)
        answer.conversation_id = conversation_id
        audit_row(request, who, question, answer)


@router.post(
    "/chat",
    response_model=ChatResponse,
    responses={200: _SSE_DOC, **_ERRORS},  # type: ignore[dict-item]
)
async def chat(body: ChatBody, request: Request, who: CurrentPrincipal) -> Any:
    """Answer from the named collections (default: all the key may read); every [n] in the answer is a citation."""
    parts = components(request)
    if body.cache and not body.stream and not body.conversation_id and body.requested() and parts.writer is not None:
        # A repeated question is answered right here on the event loop (memory and the local manifest
        # only; its rows go to the deferred writer): no thread-pool round trip, which is a third of a hit.
        names = resolve_collections(who, body.requested(), parts)
        answer = parts.rag.cached_answer(body.question, names, _options(body, request, who, []))
        if answer is not None:
            _remember(request, who, None, body.question, answer)
            return model_response(ChatResponse.model_validate(answer.as_dict()))
    return await run_in_threadpool(_chat, body, request, who)


def _options(body: ChatBody, request: Request, who: Principal, history: list[Turn]) -> AskOptions:
    return AskOptions(
        top_k=body.top_k,
        prompt=body.prompt,
        request_id=request.state.request_id,
        use_cache=body.cache,
        history=history,
        principal=who.name,
        support_policy=body.support_policy,
    )


def _chat(body: ChatBody, request: Request, who: Principal) -> Any:
    """Everything else, on a worker thread: retrieval, the model, the database."""
    parts = components(request)
    names = resolve_collections(who, body.requested(), parts)
    history: list[Turn] = []
    if body.conversation_id:
        history = parts.conversations.history(
            body.conversation_id, who.key_id, last=parts.settings.prompts.history_turns
        )
    options = _options(body, request, who, history)
    if body.stream:
        events = parts.rag.stream_answer(body.question, names, options)  # raises before streaming starts
        conversation_id = body.conversation_id or parts.conversations.start(who.key_id)
        return StreamingResponse(
            _stream(request, who, conversation_id, body.question, events),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    answer = parts.rag.answer(body.question, names, options)
    _remember(request, who, body.conversation_id, body.question, answer)
    return model_response(ChatResponse.model_validate(answer.as_dict()))  # validated here: no second thread hop


def _stream(
    request: Request, who: Principal, conversation_id: str, question: str, events: Iterator[AnswerEvent]
) -> Iterator[str]:
    try:
        for _, value in events:
            if isinstance(value, str):  # ("token", text)
                yield sse("token", {"delta": value})
            else:
                _remember(request, who, conversation_id, question, value)
                yield sse("done", ChatResponse.model_validate(value.as_dict()).model_dump(mode="json"))
    except KbError as exc:
        log.info("stream %s failed with %s: %s", request.state.request_id, exc.code, exc.message)
        yield sse("error", error_body(exc.code, exc.message, request))
    except Exception:
        log.exception("stream %s failed", request.state.request_id)
        yield sse("error", error_body("internal_error", "internal error; the server log has details", request))
