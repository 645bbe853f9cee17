"""kb db: the shared SQL database's schema (Alembic revisions shipped with kb).

``kb db upgrade`` is what the API and the store-using commands do on start by default
(``KB_DATABASE__MIGRATE_ON_START=true``); run it by hand when that is off, as a release
step before rolling out new replicas. It also imports the SQLite files of earlier versions
(keys, ledger, audit log, conversations) from the data dir, once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from app.cli.common import cli, console, fail, out, setup
from app.db import migrate
from app.db.engine import make_engine, safe_url, sqlite_file, unreachable
from app.errors import KbError
from app.settings import Settings

log = logging.getLogger(__name__)

db_cli = typer.Typer(help="The shared SQL database: schema revision, upgrades.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


@contextmanager
def _engine(settings: Settings) -> Iterator[Engine]:
    """The configured database's engine; a bad URL or an unreachable server exits 1 with one line."""
    try:
        engine = make_engine(settings.database_url, connect_timeout_s=settings.database.connect_timeout_s)
        try:
            yield engine
        except OperationalError as exc:
            raise unreachable(engine.url, exc) from exc
        finally:
            engine.dispose()
    except KbError as exc:
        raise fail(exc) from exc


@db_cli.command("upgrade")
def upgrade() -> None:
    """Migrate the schema to this kb version's head and import legacy SQLite files (safe to repeat)."""
    settings = setup()
    with _engine(settings) as engine:
        before = migrate.current_revision(engine)
        head = migrate.upgrade(engine, settings.data_dir)
    where = safe_url(settings.database_url)
    if before == head:
        out.print(f"{where}: already at {head} (head)")
    else:
        out.print(f"{where}: upgraded from {before or 'an empty database'} to {head} (head)")


@db_cli.command("current")
def current() -> None:
    """Print the database's schema revision (and whether it is this kb version's head)."""
    settings = setup()
    with _engine(settings) as engine:
        path = sqlite_file(engine)
        revision = None if path is not None and not path.exists() else migrate.current_revision(engine)
    head = migrate.head_revision()
    if revision is None:
        out.print("none")
        console.print(f"{safe_url(settings.database_url)} has no kb schema yet: run kb db upgrade")
    elif revision == head:
        out.print(f"{revision} (head)")
    else:
        out.print(revision)
        console.print(f"this kb version needs {head}: run kb db upgrade")


@db_cli.command("history")
def history(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per revision.")] = False,
) -> None:
    """The schema revisions shipped with this kb version, newest first."""
    for rev in migrate.history():
        if as_json:
            out.print(json.dumps(rev.__dict__), markup=False, highlight=False)
        else:
            marker = " (head)" if rev.is_head else ""
            out.print(f"{rev.down_revision or '<base>'} -> {rev.revision}{marker}: {rev.doc}", markup=False)
