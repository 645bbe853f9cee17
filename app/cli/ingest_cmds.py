"""kb ingest, kb collections and kb documents: getting documents in and managing them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from app.bootstrap import Components
from app.cli.common import cli, console, fail, out, setup
from app.cli.progress import LogProgress, RichProgress
from app.errors import KbError
from ingest.repair import repair

collections_cli = typer.Typer(help="List, check and delete collections.", no_args_is_help=True)
documents_cli = typer.Typer(help="List and delete the documents of a collection.", no_args_is_help=True)
cli.add_typer(collections_cli, name="collections")
cli.add_typer(documents_cli, name="documents")


@cli.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked recursively).")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to ingest into.")],
    prune: Annotated[
        bool, typer.Option(help="Remove documents of the collection whose files are no longer under PATHS.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue",
            help="Hand the files to the job queue instead of ingesting here: the API server (local queue) or "
            "'kb worker' processes on any host (KB_QUEUE__BACKEND=postgres) ingest them; see 'kb jobs'.",
        ),
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="With --queue: wait for the job and print its result.")] = False,
) -> None:
    """Ingest PDF, DOCX, Markdown, HTML and text files into a collection.

    Re-running is safe and cheap: unchanged files are skipped, changed files replace
    their old chunks, nothing is duplicated. Exit code 0: all files ingested;
    1: some failed (listed with reasons); 2: wrong usage.
    """
    settings = setup()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        console.print(f"[red]error[/red]: no such file or folder: {', '.join(missing)}")
        raise typer.Exit(2)
    if queue:
        if prune:
            console.print("[red]error[/red]: --prune needs the whole folder in one run; it cannot go through --queue")
            raise typer.Exit(2)
        from app.cli.worker_cmds import enqueue

        enqueue(paths, collection, wait=wait)
        return
    components = Components(settings)
    progress: RichProgress | LogProgress = RichProgress(console) if sys.stderr.isatty() else LogProgress()
    try:
        report = components.ingest_pipeline.ingest(paths, collection, prune=prune, progress=progress)
    except KbError as exc:
        raise fail(exc) from exc
    finally:
        progress.stop()
        components.close()
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        out.print(
            f"{report.collection}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
            f"{report.deleted} deleted, {len(report.skipped)} skipped, {len(report.failed)} failed; "
            f"{report.chunks_embedded} chunks embedded in {report.seconds:.1f}s"
        )
        for skipped in report.skipped:
            out.print(f"[yellow]skipped[/yellow] {skipped['source']}: {skipped['reason']}")
        for failure in report.failed:
            out.print(f"[red]failed[/red] {failure['source']}: {failure['error']}")
    raise typer.Exit(1 if report.failed else 0)


def _print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    out.print(table)


@collections_cli.command("list")
def collections_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List collections with their document and chunk counts."""
    components = Components(setup())
    _print_rows(components.admin.collections(), ["name", "documents", "chunks"], as_json)


@collections_cli.command("repair")
def collections_repair(
    names: Annotated[list[str] | None, typer.Argument(help="Collections to repair (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Sweep chunks no live document version vouches for, and list documents missing chunks.

    Crashed or killed ingestions leave chunks that never went live; searches skip them, but
    they take space and slow searches down. Safe to run while ingestions and the server are
    running. Exit code 1 when a live document is missing chunks: re-run `kb ingest` on its
    files to rewrite them (an unchanged file whose chunks are missing is written again).
    """
    components = Components(setup())
    try:
        known = [c["name"] for c in components.admin.collections()]
        unknown = [n for n in names or [] if n not in known]
        if unknown:
            console.print(f"[red]error[/red]: no collection {', '.join(map(repr, unknown))} (see: kb collections list)")
            raise typer.Exit(2)
        reports = [
            repair(components.store, components.manifest, components.lexical, name).as_dict() for name in names or known
        ]
    except KbError as exc:
        raise fail(exc) from exc
    finally:
        components.close()
    if as_json:
        out.print_json(json.dumps(reports))
    for r in [] if as_json else reports:
        swept = r["abandoned_chunks_swept"] + r["orphan_chunks_swept"]
        out.print(f"{r['collection']}: swept {swept} chunks of versions that never went live")
        for doc in r["incomplete"]:
            out.print(
                f"[red]incomplete[/red] {doc['source']}: {doc['missing']} of {doc['chunks']} chunks missing "
                "(re-run kb ingest on its file)"
            )
    raise typer.Exit(1 if any(r["incomplete"] for r in reports) else 0)


@collections_cli.command("delete")
def collections_delete(name: Annotated[str, typer.Argument(help="Collection to delete.")]) -> None:
    """Delete a collection with all its documents and chunks."""
    components = Components(setup())
    try:
        components.admin.delete_collection(name)
    except KbError as exc:
        raise fail(exc) from exc
    out.print(f"deleted collection {name!r}")


@documents_cli.command("list")
def documents_list(
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to list.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List a collection's documents: source, chunks, size and when they were last ingested."""
    components = Components(setup())
    try:
        rows = components.admin.documents(collection)
    except KbError as exc:
        raise fail(exc) from exc
    _print_rows(rows, ["source", "chunks", "size_bytes", "updated_at"], as_json)


@documents_cli.command("delete")
def documents_delete(
    source: Annotated[str, typer.Argument(help="Source path as shown by `kb documents list`.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection of the document.")],
) -> None:
    """Delete one document and its chunks from a collection."""
    components = Components(setup())
    try:
        components.admin.delete_document(collection, source)
    except KbError as exc:
        raise fail(exc) from exc
    out.print(f"deleted {source!r} from {collection!r}")
