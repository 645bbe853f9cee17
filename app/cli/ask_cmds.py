"""kb ask and kb serve: answering questions."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from app.bootstrap import Components
from app.cli.common import cli, console, fail, out, setup
from app.errors import KbError


@cli.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to answer from.")],
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="Passages to retrieve.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt version, e.g. answer@v1.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Bypass the response cache.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full answer as JSON.")] = False,
) -> None:
    """Answer a question without a server: the same answer as POST /chat."""
    settings = setup()
    components = Components(settings)
    try:
        answer = components.rag.answer(question, collection, top_k=top_k, prompt=prompt, use_cache=not no_cache)
    except KbError as exc:
        raise fail(exc) from exc
    finally:
        components.close()
    if as_json:
        out.print_json(json.dumps(answer.as_dict()))
        return
    out.print(answer.answer)
    for c in answer.citations:
        page = f", page {c.page}" if c.page is not None else ""
        heading = f" — {c.heading}" if c.heading else ""
        out.print(f"  [{c.n}] {c.source}{page}{heading}")
    cost = answer.usage["cost_usd"]
    out.print(
        f"[dim]{answer.prompt} · {answer.provider}/{answer.model} · "
        f"{answer.usage['prompt_tokens']}+{answer.usage['completion_tokens']} tokens · "
        f"${cost if cost is not None else '?'} · cached={answer.cached}[/dim]"
    )


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default KB_API__HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default KB_API__PORT).")] = None,
) -> None:
    """Serve the chat API (OpenAPI docs at /docs)."""
    import uvicorn

    from app.api.main import create_app, server_options

    settings = setup()
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
