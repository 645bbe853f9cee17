"""POST /search: ranked chunks from one or more collections, with each retriever's score.

The same retrieval the answers use (hybrid by default), exposed so people and tools can
see what the assistant would read, and so retrieval can be judged on its own.
Access control is not there yet: once principals exist, their allowed collections must
narrow ``collections`` here (a retrieval filter, not a post-filter).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.schemas import ErrorResponse, SearchBody, SearchResponse
from app.errors import InvalidRequestError
from app.rag.retrieval import SearchFilters
from app.rag.service import RagService

router = APIRouter(tags=["search"])

_ERRORS = {code: {"model": ErrorResponse} for code in (404, 413, 422)}


@router.post("/search", response_model=SearchResponse, responses=_ERRORS)  # type: ignore[arg-type]
def search(body: SearchBody, request: Request) -> SearchResponse:
    """Search the named collections; ``mode`` is hybrid (default), dense or lexical."""
    rag: RagService = request.app.state.components.rag
    collections = ([body.collection] if body.collection else []) + list(body.collections or [])
    if body.page_min is not None and body.page_max is not None and body.page_min > body.page_max:
        raise InvalidRequestError("page_min must not be greater than page_max", code="page_range_invalid")
    filters = SearchFilters(tuple(body.sources or ()), body.page_min, body.page_max, body.heading)
    mode = body.mode or rag.retriever.config.mode
    hits = rag.search(body.query, collections, top_k=body.top_k, mode=mode, filters=filters)
    return SearchResponse.model_validate({"mode": mode, "results": [h.as_dict() for h in hits]})
