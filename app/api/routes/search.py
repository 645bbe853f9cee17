"""POST /search: ranked chunks from one or more collections, with each retriever's score.

The same retrieval the answers use (hybrid by default), exposed so people and tools can
see what the assistant would read, and so retrieval can be judged on its own.
Access control is a retrieval filter: only collections the caller's key may read are
searched (none named: all of them); naming any other collection is a 403.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import CurrentPrincipal, components, resolve_collections
from app.api.responses import model_response
from app.api.schemas import SearchBody, SearchResponse, error_responses
from app.errors import InvalidRequestError
from app.rag.options import SearchOptions
from app.rag.retrieval import SearchFilters
from app.rag.service import RagService

router = APIRouter(tags=["search"])


_ERRORS = error_responses(401, 403, 404, 413, 422, 429)


@router.post("/search", response_model=SearchResponse, responses=_ERRORS)  # type: ignore[arg-type]
def search(body: SearchBody, request: Request, who: CurrentPrincipal) -> Response:
    """Search the named collections (default: all the key may read); ``mode`` is hybrid, dense or lexical."""
    rag: RagService = components(request).rag
    requested = ([body.collection] if body.collection else []) + list(body.collections or [])
    collections = resolve_collections(who, requested, components(request))
    if body.page_min is not None and body.page_max is not None and body.page_min > body.page_max:
        raise InvalidRequestError(
            "page_min must not be greater than page_max", code=InvalidRequestError.PAGE_RANGE_INVALID
        )
    filters = SearchFilters(tuple(body.sources or ()), body.page_min, body.page_max, body.heading)
    mode = body.mode or rag.retriever.config.mode
    hits = rag.search(body.query, collections, SearchOptions(body.top_k, mode, filters))
    return model_response(SearchResponse.model_validate({"mode": mode, "results": [h.as_dict() for h in hits]}))
