"""/mcp: the MCP server over Streamable HTTP inside the API, behind the API's own authentication.

Each HTTP request is authenticated like any other (``deps.principal``: the bearer API key or an identity
provider's access token, failed attempts throttled per address, the key's rate limit counted); a
request without one is refused with the API's JSON 401 before the SDK sees it. The SDK then runs
statelessly (no session kept between requests, JSON responses), so any replica behind a load
balancer can answer any request: there is no session to lose when a host goes away.

A session cookie is not accepted here: the endpoint takes no ambient credential, which is also why the
SDK's DNS-rebinding guard (Host/Origin allow-lists, for servers trusting their network) is off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi.security import HTTPAuthorizationCredentials
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from app.api.deps import components, principal
from app.api.mcp.server import build_server
from app.api.mcp.tools import Caller, KbTools
from app.bootstrap import Components
from app.errors import AuthError

PATH = "/mcp"


def _http_caller(ctx: ServerRequestContext[Any]) -> Caller:
    """The principal and request id this request's authentication and RequestContext put on its scope."""
    request = ctx.request  # the Starlette request that carried this MCP message
    assert request is not None, "an HTTP MCP message always has its request"
    return Caller(request.state.principal, request.state.request_id)


class McpEndpoint:
    """The ASGI endpoint at /mcp; ``running`` (in the app's lifespan) starts the SDK's session manager."""

    def __init__(self) -> None:
        self._manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self, components: Components) -> AsyncIterator[None]:
        server = build_server(KbTools(components), _http_caller)
        self._manager = StreamableHTTPSessionManager(
            app=server,
            json_response=True,
            stateless=True,
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=components.settings.limits.max_body_kb * 1024,
        )
        async with self._manager.run():
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        if self._manager is None:  # only between the app's start and its lifespan (or after its end)
            raise RuntimeError("the MCP endpoint is not running yet")
        await self._manager.handle_request(scope, receive, send)
