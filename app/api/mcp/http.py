"""/mcp: the MCP server over Streamable HTTP inside the API, behind the API's own authentication.

Each HTTP request is authenticated like any other (``deps.principal``: the bearer API key or an identity
provider's access token, failed attempts throttled per address, the key's rate limit counted); a
request without one is refused with the API's JSON 401 before the SDK sees it. The SDK then runs
statelessly (no session kept between requests, JSON responses), so any replica behind a load
balancer can answer any request: there is no session to lose when a host goes away.

A session cookie is not accepted here: the endpoint takes no ambient credential, which is also why the
SDK's DNS-rebinding guard (Host/Origin allow-lists, for servers trusting their network) is off.

The SDK takes ~1 s to import on this 2-core VM: it is imported and started beside the app's start, on a
worker thread, so `kb serve` is ready as soon as before; an MCP request that arrives first waits for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from fastapi.security import HTTPAuthorizationCredentials
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.api.deps import components, principal
from app.api.mcp.tools import Caller, KbTools
from app.bootstrap import Components
from app.errors import AuthError, McpStartingError

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

log = logging.getLogger(__name__)

PATH = "/mcp"
_START_WAIT_S = 60.0  # how long an early MCP request waits for the SDK to be imported and running


def _http_caller(ctx: Any) -> Caller:
    """The principal and request id this request's authentication and RequestContext put on its scope."""
    request = ctx.request  # the Starlette request that carried this MCP message
    assert request is not None, "an HTTP MCP message always has its request"
    state = request.state
    return Caller(state.principal, state.request_id, getattr(state, "trace_context", None))


def _manager(components: Components) -> StreamableHTTPSessionManager:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from mcp.server.transport_security import TransportSecuritySettings

    from app.api.mcp.server import build_server

    return StreamableHTTPSessionManager(
        app=build_server(KbTools(components), _http_caller),
        json_response=True,
        stateless=True,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        max_request_body_size=components.settings.limits.max_body_kb * 1024,
    )


class McpEndpoint:
    """The ASGI endpoint at /mcp; ``running`` (in the app's lifespan) starts the SDK's session manager."""

    def __init__(self) -> None:
        self._manager: StreamableHTTPSessionManager | None = None
        self._ready: anyio.Event | None = None  # made in the app's event loop (``running``)
        # a plain Starlette route does not name itself in the scope as FastAPI's do: metrics and traces
        # would file every MCP request under "unmatched"
        self.route = Route(PATH, self, methods=["GET", "POST", "DELETE"])

    @asynccontextmanager
    async def running(self, components: Components) -> AsyncIterator[None]:
        self._ready = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(self._serve, components)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
                self._manager = None

    async def _serve(self, components: Components) -> None:
        """Import, build and run the SDK's manager until the app ends. A failure here must not end the app's
        lifespan (the task group would cancel it): it is logged, and /mcp answers 503 meanwhile."""
        try:
            manager = await anyio.to_thread.run_sync(_manager, components)  # the import, off the event loop
            async with manager.run():
                self._manager = manager
                if self._ready is not None:
                    self._ready.set()
                await anyio.sleep_forever()
        except Exception:
            log.exception("the MCP server could not start or stopped; /mcp answers 503")
        finally:
            self._manager = None
            if self._ready is not None:
                self._ready.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.route
        request = Request(scope, receive)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        auth_on = components(request).settings.auth.enabled
        if auth_on and (scheme.lower() != "bearer" or not token.strip()):
            raise AuthError(
                "missing API key: MCP clients send 'Authorization: Bearer <key>' (an admin creates keys with "
                "'kb keys create')",
                code=AuthError.MISSING_API_KEY,
            )
        await principal(request, HTTPAuthorizationCredentials(scheme="Bearer", credentials=token.strip() or "-"))
        if self._manager is None and self._ready is not None:
            with anyio.move_on_after(_START_WAIT_S):
                await self._ready.wait()
        if self._manager is None:
            raise McpStartingError(
                "the MCP server is not running yet (it starts beside the API; if this lasts, the server log says why)"
            )
        await self._manager.handle_request(scope, receive, send)
