"""Health and collection listing."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import CurrentPrincipal
from app.api.schemas import CollectionOut, error_responses
from app.health import checks_for, run_checks

router = APIRouter()


@router.get("/healthz", tags=["system"])
def healthz() -> dict[str, str]:
    """Liveness: the process is up and serving."""
    return {"status": "ok"}


_OK_CHECKS: dict[str, dict[str, object]] = {
    "vector_store": {"status": "ok", "ms": 1.8},
    "cache": {"status": "ok", "ms": 0.4},
    "database": {"status": "ok", "ms": 0.4},
}
_READY_EXAMPLE = {"status": "ready", "checks": _OK_CHECKS}
_NOT_READY_EXAMPLE = {
    "status": "not_ready",
    "failing": ["vector_store"],
    "checks": {**_OK_CHECKS, "vector_store": {"status": "failing", "ms": 2.1, "error": "StoreUnavailable"}},
}


@router.get(
    "/readyz",
    tags=["system"],
    responses={
        200: {"description": "Every dependency answers.", "content": {"application/json": {"example": _READY_EXAMPLE}}},
        503: {
            "description": "A dependency does not answer; `failing` names it (details are in the server log).",
            "content": {"application/json": {"example": _NOT_READY_EXAMPLE}},
        },
    },
)
def readyz(request: Request) -> JSONResponse:
    """Readiness: the vector store, response cache, shared database and manifest answer (no auth; a few ms)."""
    results = run_checks(checks_for(request.app.state.components))
    failing = [r.name for r in results if not r.ok]
    body: dict[str, object] = {"status": "not_ready" if failing else "ready"}
    if failing:
        body["failing"] = failing
    body["checks"] = {r.name: r.as_dict() for r in results}
    return JSONResponse(body, status_code=503 if failing else 200)


@router.get(
    "/collections",
    response_model=list[CollectionOut],
    tags=["collections"],
    responses=error_responses(401, 429),
)
def list_collections(request: Request, who: CurrentPrincipal) -> list[CollectionOut]:
    """The collections this API key may ask, with their chunk counts."""
    store = request.app.state.components.store
    return [CollectionOut(name=c.name, chunks=c.chunks) for c in store.list_collections() if who.can_read(c.name)]
