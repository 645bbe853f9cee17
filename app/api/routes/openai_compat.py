"""An OpenAI-compatible face: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Tools employees already use (anything built on the openai SDK, LangChain's
ChatOpenAI, chat front-ends) can point their base URL here with a kb API key.
The *model* picks the collections: ``kb`` answers from every collection the key may
read, ``kb:handbook`` from one, ``kb:hr+eng`` from several. Earlier messages are the
conversation: the last user message is the question, and earlier user/assistant
pairs make it a follow-up. Client system messages are ignored: the answer prompt is
ours and versioned.

Citations come twice: as numbered references appended to the text (so any client
shows them) and in the extension fields ``citations`` and ``kb`` (documented in
the OpenAPI schema) for clients that want structure.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.api.deps import CurrentPrincipal, audit, components, readable_collections, resolve_collections
from app.api.errors import error_body
from app.api.openai_schemas import ChatCompletion, ChatCompletionBody, ModelList
from app.api.responses import model_response
from app.api.schemas import error_responses
from app.auth import Principal
from app.errors import InvalidRequestError, KbError
from app.rag.answer import Answer
from app.rag.conversation import Turn
from app.rag.options import AnswerEvent, AskOptions

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai-compatible"])
MODEL_PREFIX = "kb"
_REFERENCES = "\n\nReferences:\n"


def _collections_for(model: str, who: Principal, request: Request) -> list[str]:
    parts = components(request)
    if model == MODEL_PREFIX:
        return resolve_collections(who, [], parts)
    if not model.startswith(MODEL_PREFIX + ":") or len(model) <= len(MODEL_PREFIX) + 1:
        raise InvalidRequestError(
            f"model {model!r} is not one of ours: use 'kb' (all your collections), 'kb:NAME' or 'kb:A+B' "
            "(GET /v1/models lists them)",
            code=InvalidRequestError.MODEL_NOT_FOUND,
            http_status=404,
        )
    wanted = model[len(MODEL_PREFIX) + 1 :]
    names = [wanted] if who.can_read(wanted) and "+" in wanted else wanted.split("+")
    return resolve_collections(who, names, parts)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _question_and_history(body: ChatCompletionBody) -> tuple[str, list[Turn]]:
    messages = [(m.role, _text(m.content)) for m in body.messages if m.role in ("user", "assistant")]
    if not messages or messages[-1][0] != "user" or not messages[-1][1].strip():
        raise InvalidRequestError(
            "the last message must be a non-empty user message", code=InvalidRequestError.QUESTION_MISSING
        )
    history: list[Turn] = []
    pending: str | None = None
    for role, text in messages[:-1]:
        if role == "user":
            pending = text
        elif pending is not None:
            history.append(Turn(pending, text.split(_REFERENCES, 1)[0]))
            pending = None
    return messages[-1][1], history


def references(answer: Answer) -> str:
    lines = []
    for c in answer.citations:
        where = c.source + (f", page {c.page}" if c.page is not None else "") + (f" — {c.heading}" if c.heading else "")
        lines.append(f"[{c.n}] {where}")
    return _REFERENCES + "\n".join(lines) if lines else ""


def _extensions(answer: Answer) -> dict[str, Any]:
    return {
        "citations": [c.as_dict() for c in answer.citations],
        "kb": {
            "prompt": answer.prompt, "grounded": answer.grounded, "cached": answer.cached,
            "request_id": answer.request_id, "collections": answer.collections, "provider": answer.provider,
            "model": answer.model, "standalone_question": answer.standalone_question,
            "cost_usd": answer.usage.get("cost_usd"), "latency_ms": answer.latency_ms,
            "sentences": [s.as_dict() for s in answer.sentences], "support": answer.support,
        },
    }  # fmt: skip


def _usage(answer: Answer) -> dict[str, int]:
    p, c = int(answer.usage["prompt_tokens"]), int(answer.usage["completion_tokens"])
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


@router.get("/models", response_model=ModelList, responses=error_responses(401, 429))
def list_models(request: Request, who: CurrentPrincipal) -> dict[str, Any]:
    """The models this key can use: ``kb`` (all its collections) and ``kb:NAME`` per collection."""
    names = readable_collections(who, components(request))
    ids = [MODEL_PREFIX] + [f"{MODEL_PREFIX}:{n}" for n in names]
    return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "kb"} for i in ids]}


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses=error_responses(401, 403, 404, 413, 422, 429, 502, 503, 504),
)  # type: ignore[arg-type]
def chat_completions(body: ChatCompletionBody, request: Request, who: CurrentPrincipal) -> Any:
    """Answer the last user message from the model's collections, as the OpenAI Chat Completions API does."""
    names = _collections_for(body.model, who, request)
    question, history = _question_and_history(body)
    rag = components(request).rag
    rid = request.state.request_id
    options = AskOptions(request_id=rid, history=history, principal=who.name)
    created = int(time.time())
    if body.stream:
        events = rag.stream_answer(question, names, options)
        stream = _stream(request, who, question, body.model, created, events)
        return StreamingResponse(stream, media_type="text/event-stream")
    answer = rag.answer(question, names, options)
    audit(request, who, question, answer)
    completion = {
        "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": created, "model": body.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.answer + references(answer)},
                     "finish_reason": "stop"}],
        "usage": _usage(answer), **_extensions(answer),
    }  # fmt: skip
    return model_response(ChatCompletion.model_validate(completion))  # validated here: no second thread hop


def _chunk(rid: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    payload = {
        "id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra,
    }  # fmt: skip
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _stream(
    request: Request, who: Principal, question: str, model: str, created: int, events: Iterator[AnswerEvent]
) -> Iterator[str]:
    rid = request.state.request_id
    yield _chunk(rid, model, created, {"role": "assistant", "content": ""})
    try:
        for _, value in events:
            if isinstance(value, str):  # ("token", text)
                yield _chunk(rid, model, created, {"content": value})
                continue
            audit(request, who, question, value)
            refs = references(value)
            if refs:
                yield _chunk(rid, model, created, {"content": refs})
            yield _chunk(rid, model, created, {}, "stop", usage=_usage(value), **_extensions(value))
    except KbError as exc:
        log.info("stream %s failed with %s: %s", rid, exc.code, exc.message)
        yield f"data: {json.dumps(error_body(exc.code, exc.message, request))}\n\n"
    except Exception:
        log.exception("stream %s failed", rid)
        yield f"data: {json.dumps(error_body('internal_error', 'internal error', request))}\n\n"
    yield "data: [DONE]\n\n"
