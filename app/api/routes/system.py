"""Health and collection listing."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.schemas import CollectionOut

router = APIRouter()


@router.get("/healthz", tags=["system"])
def healthz() -> dict[str, str]:
    """Liveness: the process is up and serving."""
    return {"status": "ok"}


@router.get("/collections", response_model=list[CollectionOut], tags=["collections"])
def list_collections(request: Request) -> list[CollectionOut]:
    """Collections that can be asked, with their chunk counts."""
    store = request.app.state.components.store
    return [CollectionOut(name=c.name, chunks=c.chunks) for c in store.list_collections()]
