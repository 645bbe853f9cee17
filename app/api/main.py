"""create_app(): the FastAPI application with its lifespan.

The lifespan builds the Components once (and loads the embedding model before the
first request, so the first employee does not wait for it).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

import app as app_pkg
from app.api.errors import install_error_handlers
from app.api.routes import chat, system
from app.bootstrap import Components
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, components: Components | None = None) -> FastAPI:
    """Build the app; ``components`` lets a caller share already-loaded parts (tests, workers)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        nonlocal components
        components = components or Components(settings)
        _ = components.rag  # load model, open stores, validate the active prompt
        api.state.components = components
        log.info("kb API ready on data dir %s", settings.data_dir.resolve())
        try:
            yield
        finally:
            components.close()

    api = FastAPI(
        title="kb",
        version=app_pkg.__version__,
        description="Answers employees' questions from the company's documents, with sources.",
        lifespan=lifespan,
    )
    install_error_handlers(api)

    @api.middleware("http")
    async def request_id(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid[:64]
        response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    api.include_router(system.router)
    api.include_router(chat.router)
    return api
