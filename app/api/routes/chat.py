"""POST /chat: answer a question from one collection, with citations."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.schemas import ChatBody, ChatResponse, ErrorResponse
from app.rag.service import RagService

router = APIRouter(tags=["chat"])

_ERRORS = {code: {"model": ErrorResponse} for code in (404, 413, 422, 502, 503, 504)}


@router.post("/chat", response_model=ChatResponse, responses=_ERRORS)  # type: ignore[arg-type]
def chat(body: ChatBody, request: Request) -> ChatResponse:
    """Answer from the collection's documents; every [n] in the answer is a citation."""
    rag: RagService = request.app.state.components.rag
    answer = rag.answer(
        body.question,
        body.collection,
        top_k=body.top_k,
        prompt=body.prompt,
        request_id=request.state.request_id,
        use_cache=body.cache,
    )
    return ChatResponse.model_validate(answer.as_dict())
