"""create_app(): the FastAPI application with its lifespan.

The lifespan builds the Components once (and loads the embedding model before the
first request, so the first employee does not wait for it).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

import app as app_pkg
from app import tracing
from app.api import deps
from app.api.body_limit import BodySizeLimit
from app.api.deps import RateLimiter
from app.api.errors import install_error_handlers
from app.api.mcp.http import McpEndpoint
from app.api.openapi import install_openapi
from app.api.request_context import RequestContext
from app.api.routes import admin, chat, feedback, gaps, openai_compat, search, sso, system, usage
from app.api.routes import metrics as metrics_route
from app.api.routes import web as web_route
from app.auth import ensure_first_admin_key
from app.bootstrap import Components
from app.errors import ConfigurationError
from app.queue import open_jobs
from app.settings import Settings, get_settings, is_loopback, private_files

log = logging.getLogger(__name__)


def server_options(settings: Settings) -> dict[str, Any]:
    """How ``kb serve`` runs uvicorn (the tests run it the same way).

    ``log_config=None``: uvicorn's loggers propagate to our handler (KB_LOG_FORMAT, request ids).
    ``timeout_keep_alive``: uvicorn's 5 s default equals httpx's pool expiry, so a pooled connection
    could be reused just as the server closed it (seen as rare ReadErrors under load)."""
    return {
        "log_level": settings.log_level.lower(),
        "log_config": None,
        "timeout_keep_alive": settings.api.keep_alive_s,
    }


def create_app(settings: Settings | None = None, components: Components | None = None) -> FastAPI:
    """Build the app; ``components`` lets a caller share already-loaded parts (tests, workers)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        nonlocal components
        private_files(settings)  # before anything is created under the data dir
        traces_here = not tracing.enabled() and tracing.configure(settings.audit.store_text)  # OTEL_* variables
        components = components or Components(settings)
        _ = components.db  # reach the shared database and migrate it (KB_DATABASE__MIGRATE_ON_START) first
        _ = components.rag  # load model, open stores, validate the active prompt
        components.warm()  # indexes opened now, not by the first query
        api.state.components = components
        if components.oidc is not None:  # a half-configured sign-in fails the start, not the first login
            log.info("single sign-on with %s (client %s)", components.oidc.issuer, settings.oidc.client_id)
        if settings.auth.enabled and settings.auth.first_admin_key:
            ensure_first_admin_key(components.keys, settings.admin_key_file)
        elif not settings.auth.enabled:
            log.warning("authentication is OFF (KB_AUTH__ENABLED=false): every caller is an admin; local use only")
        components.sweep_abandoned()  # chunks that ingestions killed with the last server never made live
        jobs = None
        if admin_enabled:
            jobs = open_jobs(components, serve=True)
            jobs.start()
            api.state.jobs = jobs
        # Everything loaded so far (model, indexes, stores: ~0.5 M objects) lives as long as the process;
        # frozen, a full garbage collection skips it instead of stalling a request for ~300 ms.
        gc.collect()
        gc.freeze()
        log.info("kb API ready on data dir %s (admin API %s)", settings.data_dir.resolve(), admin_state)
        try:
            async with AsyncExitStack() as running:
                if mcp_endpoint is not None:
                    await running.enter_async_context(mcp_endpoint.running(components))
                yield
        finally:
            if jobs is not None:
                jobs.stop()  # lets a running ingestion job finish its current work first
            components.close()
            if traces_here:
                tracing.shutdown()  # sends what is batched

    docs = settings.api.docs == "public"
    api = FastAPI(
        title="kb",
        version=app_pkg.__version__,
        description="Answers employees' questions from the company's documents, with sources.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    install_error_handlers(api)
    install_openapi(api)
    if not settings.auth.enabled and not is_loopback(settings.api.host):
        raise ConfigurationError(
            f"authentication is off but the API would bind to {settings.api.host}: turning auth off is for "
            "local development only; set KB_AUTH__ENABLED=true or bind to 127.0.0.1"
        )
    api.state.rate_limiter = RateLimiter(
        settings.limits.requests_per_minute,
        settings.limits.rate_limit_storage,
        failed_auth_per_minute=settings.limits.failed_auth_per_minute,
    )
    api.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_body_kb * 1024)

    api.add_middleware(RequestContext)  # outermost of ours: ids and metrics cover the body-size refusals too

    admin_enabled = settings.admin.is_enabled(settings.api.host, settings.auth.enabled)
    admin_state = "on, admin keys only" if admin_enabled else "off (set KB_ADMIN__ENABLED=true to serve it)"
    # The hot routes first: FastAPI tries the routers in order (~25 µs each it passes over).
    api.include_router(chat.router)
    api.include_router(openai_compat.router)
    if admin_enabled:
        only_admins = [Depends(deps.admin)]
        api.include_router(admin.router, dependencies=only_admins)
        api.include_router(usage.router, dependencies=only_admins)
        api.include_router(gaps.router, dependencies=only_admins)
    api.include_router(system.router)
    api.include_router(search.router)
    api.include_router(sso.router)
    api.include_router(feedback.router)
    if settings.api.metrics == "admin":
        api.include_router(metrics_route.router, dependencies=[Depends(deps.admin)])
    elif settings.api.metrics == "public":
        api.include_router(metrics_route.router)
    mcp_endpoint = McpEndpoint() if settings.api.mcp else None
    if mcp_endpoint is not None:  # MCP clients (assistants, IDEs): Streamable HTTP, the same keys and access
        api.router.routes.append(mcp_endpoint.route)
    web_route.install(api)  # the chat page at / and its files at /static
    return api
