"""create_app(): the FastAPI application with its lifespan.

The lifespan builds the Components once (and loads the embedding model before the
first request, so the first employee does not wait for it).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

import app as app_pkg
from app import metrics
from app.api.errors import install_error_handlers
from app.api.routes import admin, chat, search, system, usage
from app.api.routes import metrics as metrics_route
from app.bootstrap import Components
from app.settings import Settings, get_settings
from ingest.jobs import JobQueue

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
        jobs = None
        if admin_enabled:
            jobs = JobQueue(settings.data_dir, components.ingest_folder)
            jobs.start()
            api.state.jobs = jobs
        log.info("kb API ready on data dir %s (admin API %s)", settings.data_dir.resolve(), admin_state)
        try:
            yield
        finally:
            if jobs is not None:
                jobs.stop()  # lets a running ingestion job finish its current work first
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
        started = time.perf_counter()
        status = 500  # unless a response says otherwise: an exception escaping here becomes a 500
        try:
            response = await call_next(request)
            status = response.status_code
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")  # the template, never the raw path (cardinality)
            metrics.HTTP_REQUESTS.labels(request.method, template, str(status)).inc()
            metrics.HTTP_LATENCY.labels(request.method, template).observe(time.perf_counter() - started)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    admin_enabled = settings.admin.is_enabled(settings.api.host)
    admin_state = "on" if admin_enabled else "off (set KB_ADMIN__ENABLED=true to serve it)"
    if admin_enabled:  # no authentication yet: admin routes (uploads, deletes, usage) only on loopback
        api.include_router(admin.router)
        api.include_router(usage.router)
    api.include_router(system.router)
    api.include_router(chat.router)
    api.include_router(search.router)
    api.include_router(metrics_route.router)
    return api
