"""kb ingest and kb collections: getting documents in and managing collections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from app.bootstrap import Components
from app.cli.common import cli, console, fail, out, setup
from app.errors import KbError

collections_cli = typer.Typer(help="List and delete collections.", no_args_is_help=True)
cli.add_typer(collections_cli, name="collections")


@cli.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked recursively).")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to ingest into.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest PDF, Markdown, HTML and text files into a collection (re-running skips unchanged files)."""
    settings = setup()
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
        raise fail(exc) from exc
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


@collections_cli.command("list")
def collections_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List collections and their chunk counts."""
    components = Components(setup())
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

    components = Components(setup())
    try:
        components.store.delete_collection(name)
    except CollectionMissing:
        console.print(f"[red]error[/red]: collection {name!r} does not exist (see: kb collections list)")
        raise typer.Exit(1) from None
    out.print(f"deleted collection {name!r}")
