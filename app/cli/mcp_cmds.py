"""kb mcp: kb as an MCP server over stdio, for desktop assistants and IDEs that start it as a command."""

from __future__ import annotations

import contextlib
import os
import sys

from app.bootstrap import Components
from app.cli.common import cli, console, fail, setup
from app.errors import AuthError, KbError

KEY_VARIABLE = "KB_API_KEY"


def _ready(components: Components) -> None:
    _ = components.rag  # loads the model and validates the active prompt
    components.warm()


@cli.command("mcp")
def mcp_stdio() -> None:
    """Serve the MCP tools (search, ask, list_collections) and documents (kb:// resources) over stdio.

    The key comes from the environment, KB_API_KEY (from 'kb keys create'): the assistant sees only the
    collections that key may read, and every call is audited and its cost recorded like /chat's.

    In an assistant's MCP configuration, for example: {"command": "/path/to/kb/.venv/bin/kb", "args":
    ["mcp"], "env": {"KB_API_KEY": "kb_...", "KB_DATA_DIR": "/path/to/kb/data"}}

    For a kb server on another host, point the assistant at its Streamable HTTP endpoint instead:
    https://<host>/mcp with the header Authorization: Bearer <key>.
    """
    import anyio
    from mcp.server.stdio import stdio_server

    from app.api.mcp.server import build_server, stdio_caller
    from app.api.mcp.tools import KbTools
    from app.auth import ANONYMOUS_ADMIN

    settings = setup()  # logs go to stderr: stdout is the protocol's
    components = Components(settings)
    try:
        token = os.environ.get(KEY_VARIABLE, "").strip()
        if not settings.auth.enabled:
            who = ANONYMOUS_ADMIN
        elif not token:
            raise AuthError(
                f"set {KEY_VARIABLE} to an API key (an admin creates one with 'kb keys create'); the MCP "
                "client passes it in the server's env",
                code=AuthError.MISSING_API_KEY,
            )
        else:
            found = components.keys.authenticate(token)
            if found is None:
                raise AuthError(f"{KEY_VARIABLE} is not a valid API key (unknown or revoked)",
                                code=AuthError.INVALID_API_KEY)  # fmt: skip
            who = found
        server = build_server(KbTools(components), stdio_caller(who))

        with contextlib.redirect_stdout(sys.stderr):  # stdout is the protocol's: nothing else may write there
            _ready(components)  # model, prompt, indexes before the first call; a failure exits 1 saying why

        async def serve() -> None:
            async with stdio_server() as (read, write):  # fd 1 now goes to stderr: stray prints miss the wire
                await server.run(read, write, server.create_initialization_options())

        console.print(f"kb MCP server on stdio for key {who.name!r} (collections: {who.scope_label()})")
        anyio.run(serve)
    except KbError as exc:
        raise fail(exc) from exc
    finally:
        components.close()
