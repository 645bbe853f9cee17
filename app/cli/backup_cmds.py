"""kb backup: a consistent copy of the SQLite stores while the server keeps running."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.backup import backup_data_dir, database_note
from app.cli.common import cli, console, fail, out, setup
from app.errors import KbError


@cli.command()
def backup(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) directory outside the data directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print what was copied as JSON.")] = False,
) -> None:
    """Back up the shared database (SQLite: keys, usage ledger, audit log, conversations), manifest, BM25 index
    and caches.

    Uses SQLite's online backup, so it is safe while `kb serve` runs. The vector store is not
    included: copy Chroma's directory while it is stopped; a PostgreSQL database is backed up
    with pg_dump (see docs/operations.md).
    """
    settings = setup()
    try:
        done = backup_data_dir(settings.data_dir, dest, settings.database_url)
    except KbError as exc:
        raise fail(exc) from exc
    note = database_note(settings.database_url)
    if note is not None:
        console.print(f"[yellow]note[/yellow]: {note}")
    if as_json:
        out.print_json(json.dumps([{"name": d.name, "bytes": d.bytes} for d in done]))
        return
    for d in done:
        out.print(f"{d.name}: {d.bytes:,} bytes")
    out.print(f"backed up {len(done)} item(s) of {settings.data_dir} into {dest} (see {dest / 'backup.json'})")
