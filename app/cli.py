"""The ``kb`` command line: ingest, ask, serve, collections, usage.

Each command reads Settings once and builds only what it needs. Errors are printed
as one line saying what to do, with a non-zero exit code (1: the command failed,
2: it was used wrongly).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from app.bootstrap import Components
from app.errors import KbError
from app.settings import Settings, get_settings

cli = typer.Typer(
    help="kb: answers questions from your company's documents, with sources. "
    "Configure with KB_* environment variables or a .env file (see .env.example).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
collections_cli = typer.Typer(help="List and delete collections.", no_args_is_help=True)
cli.add_typer(collections_cli, name="collections")
console = Console(stderr=True, soft_wrap=True)  # commands must stay copy-pasteable
out = Console(soft_wrap=True)


def _setup() -> Settings:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "chromadb", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return settings


def _fail(exc: KbError) -> typer.Exit:
    console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
    return typer.Exit(1)


@cli.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked recursively).")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to ingest into.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest PDF, Markdown, HTML and text files into a collection (re-running skips unchanged files)."""
    settings = _setup()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        console.print(f"[red]error[/red]: no such file or folder: {', '.join(missing)}")
        raise typer.Exit(2)
    components = Components(settings)
    try:
        report = components.ingest_pipeline.ingest(
            paths, collection, on_file=lambda source, outcome: console.print(f"  {outcome:>9}  {source}")
        )
    except KbError as exc:
        raise _fail(exc) from exc
    finally:
        components.close()
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        out.print(
            f"{collection}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
            f"{len(report.skipped)} skipped, {len(report.failed)} failed; "
            f"{report.chunks_embedded} chunks embedded in {report.seconds:.1f}s"
        )
        for failure in report.failed:
            out.print(f"[red]failed[/red] {failure['source']}: {failure['error']}")
    raise typer.Exit(1 if report.failed else 0)


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
    settings = _setup()
    components = Components(settings)
    try:
        answer = components.rag.answer(question, collection, top_k=top_k, prompt=prompt, use_cache=not no_cache)
    except KbError as exc:
        raise _fail(exc) from exc
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

    from app.api.main import create_app

    settings = _setup()
    host = host or settings.api.host
    port = port or settings.api.port
    base = f"http://{host}:{port}"
    console.print(
        f"\nkb is starting on {base} (API docs: {base}/docs). Ask it, for example:\n"
        f"  curl -s {base}/chat -H 'content-type: application/json' "
        '-d \'{"question": "How many days of annual leave do I get?", "collection": "handbook"}\'\n'
        '  .venv/bin/kb ask "How many days of annual leave do I get?" --collection handbook\n'
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower())


@collections_cli.command("list")
def collections_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List collections and their chunk counts."""
    components = Components(_setup())
    rows: list[dict[str, Any]] = [{"name": c.name, "chunks": c.chunks} for c in components.store.list_collections()]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("collection", "chunks")
    for row in rows:
        table.add_row(str(row["name"]), str(row["chunks"]))
    out.print(table)


@collections_cli.command("delete")
def collections_delete(name: Annotated[str, typer.Argument(help="Collection to delete.")]) -> None:
    """Delete a collection and all its chunks."""
    from vectorstore.store import CollectionMissing

    components = Components(_setup())
    try:
        components.store.delete_collection(name)
    except CollectionMissing:
        console.print(f"[red]error[/red]: collection {name!r} does not exist (see: kb collections list)")
        raise typer.Exit(1) from None
    out.print(f"deleted collection {name!r}")


@cli.command()
def usage(
    since_hours: Annotated[float, typer.Option("--since-hours", help="Window to sum over.")] = 24 * 7,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Calls, tokens and cost per provider/model from the usage ledger."""
    components = Components(_setup())
    rows = components.ledger.rows(since_ts=time.time() - since_hours * 3600)
    totals: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"calls": 0, "cached": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    )
    for row in rows:
        t = totals[(row["provider"], row["model"])]
        t["calls"] += 1
        t["cached"] += row["cached"]
        t["errors"] += row["status"] != "ok"
        t["prompt_tokens"] += row["prompt_tokens"]
        t["completion_tokens"] += row["completion_tokens"]
        t["cost_usd"] += row["cost_usd"] or 0.0
    result = [{"provider": p, "model": m, **t} for (p, m), t in sorted(totals.items())]
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table("provider", "model", "calls", "cached", "errors", "prompt tok", "completion tok", "cost USD")
    for r in result:
        table.add_row(
            r["provider"],
            r["model"],
            *(str(r[k]) for k in ("calls", "cached", "errors", "prompt_tokens", "completion_tokens")),
            f"{r['cost_usd']:.6f}",
        )
    out.print(table)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
