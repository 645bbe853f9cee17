"""The shared SQL database: usage ledger, audit log, API keys and conversations.

These four stores are what API replicas must agree on (a key created on one replica works
on the next request to another; usage totals count every replica's calls), so they live
in one SQL database reached through one SQLAlchemy engine per process: SQLite in the data
dir by default (``kb.sqlite3``, one host), PostgreSQL for replicas on several hosts
(``KB_DATABASE__URL``). Per-data-dir state (caches, manifest, BM25 index, ingestion jobs)
stays in its own SQLite files; docs/operations.md says why.

``open_database(settings)`` is what entry points call: it builds the engine and brings the
schema up to date (or checks it is, with ``migrate_on_start`` off). The stores take the
engine; given a plain path instead they open a private SQLite database there, migrated the
same way (tests, benchmarks and tools that want one store on its own file).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from app.db.engine import make_engine, sqlite_url, unreachable
from app.db.migrate import ensure_current, upgrade
from app.errors import SchemaOutdatedError

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["SchemaOutdatedError", "engine_for", "open_database"]


def open_database(settings: Settings, *, migrate: bool | None = None) -> Engine:
    """The process's engine, with the schema at head; ``migrate`` overrides ``migrate_on_start``."""
    db = settings.database
    engine = make_engine(settings.database_url, pool_size=db.pool_size, connect_timeout_s=db.connect_timeout_s)
    try:
        if db.migrate_on_start if migrate is None else migrate:
            upgrade(engine, settings.data_dir)
        else:
            ensure_current(engine)
    except OperationalError as exc:
        engine.dispose()
        raise unreachable(engine.url, exc) from exc
    except BaseException:
        engine.dispose()
        raise
    return engine


def engine_for(target: Engine | str | Path) -> tuple[Engine, bool]:
    """The engine a store uses, and whether the store owns it (a path: a private, migrated SQLite file)."""
    if isinstance(target, Engine):
        return target, False
    engine = make_engine(sqlite_url(target))
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine, True
