"""kb serve: the HTTP API (chat, search, the OpenAI-compatible face, admin) and the web page, under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import cli, console, fail, setup
from app.errors import KbError


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default KB_API__HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default KB_API__PORT).")] = None,
) -> None:
    """Serve the chat API (OpenAPI docs at /docs)."""
    import uvicorn

    from app.api.main import create_app, server_options
    from app.malloc_arenas import limit_malloc_arenas

    settings = setup()
    limit_malloc_arenas(settings.api.malloc_arenas)  # before the request threads exist
    host = host or settings.api.host
    port = port or settings.api.port
    settings = settings.model_copy(update={"api": settings.api.model_copy(update={"host": host, "port": port})})
    base = f"http://{host}:{port}"
    key_hint = f'-H "Authorization: Bearer $(cat {settings.admin_key_file})" '
    if not settings.auth.enabled:
        key_hint = ""
    console.print(
        f"\nkb is starting on {base} (chat page: {base}/ · API docs: {base}/docs).\n"
        + (
            f"The first admin API key is written to {settings.admin_key_file} on first start; create employee "
            "keys with: kb keys create --name alice --collections handbook\n"
            if settings.auth.enabled
            else "Authentication is OFF (local development only).\n"
        )
        + f"Ask it, for example:\n  curl -s {base}/chat {key_hint}-H 'content-type: application/json' "
        '-d \'{"question": "How many days of annual leave do I get?", "collection": "handbook"}\'\n'
        '  .venv/bin/kb ask "How many days of annual leave do I get?" --collection handbook\n'
    )
    try:
        app = create_app(settings)
    except KbError as exc:
        raise fail(exc) from exc
    uvicorn.run(app, host=host, port=port, **server_options(settings))
