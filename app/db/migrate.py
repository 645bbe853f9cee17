"""Schema migrations: Alembic, configured in code, safe when replicas start together.

The revisions ship inside the package (``app/db/migrations``), so an installed kb needs no
alembic.ini and no source checkout: ``upgrade(engine)`` is ``alembic upgrade head`` against
the engine. It runs on start (``KB_DATABASE__MIGRATE_ON_START``, the default) and as
``kb db upgrade``.

Two replicas starting at once must not both create the tables. On PostgreSQL the upgrade
runs while holding a session-level ``pg_advisory_lock`` on the connection Alembic uses (DDL
is transactional there, so the second replica, once it gets the lock, finds the schema at
head and does nothing). SQLite's DDL is not one transaction under Alembic, so its upgrade
holds an exclusive ``flock`` on a lock file beside the database; SQLite is one host anyway.
Each start first reads the current revision without any lock: at head, nothing else runs.

A schema change is a new file in ``migrations/versions`` (``revision`` the next number,
``down_revision`` the previous head; ``script.py.mako`` is the template) plus the matching
change to ``app.db.schema``; ``tests/db/test_db.py`` fails while the two disagree. Revisions only
add (tables, nullable columns, indexes), so replicas of the previous release keep working
beside migrated ones during a rolling upgrade.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from app.db.engine import safe_url, sqlite_file, transactional
from app.errors import SchemaOutdatedError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest revision in migrations/versions. A start on an up-to-date database compares
# against this and never loads Alembic (~125 ms of imports on every `kb` command and start);
# tests/db/test_db.py checks it is the scripts' head, so a new revision must update it.
HEAD = "0011"
# pg_advisory_lock key: any constant bigint; other applications sharing the server pick others.
_PG_LOCK_KEY = 0x6B62_0DB0_0001  # "kb", database, migrations


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    doc: str
    is_head: bool


def _quiet_alembic() -> None:
    """Alembic logs at INFO on import (a line per plugin) and per run; ours says what is migrated."""
    alembic_log = logging.getLogger("alembic")
    if alembic_log.level == logging.NOTSET:
        alembic_log.setLevel(logging.WARNING)


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    _quiet_alembic()
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


def _config(connection: Connection) -> Config:
    _quiet_alembic()
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database (read directly: cheap, and quiet in logs)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return versions[0] if versions else None


def history() -> list[Revision]:
    """Every shipped revision, newest first."""
    head = head_revision()
    return [
        Revision(s.revision, s.down_revision if isinstance(s.down_revision, str) else None,  # type: ignore[arg-type]
                 (s.doc or "").strip(), s.revision == head)
        for s in _scripts().walk_revisions()
    ]  # fmt: skip


def _check_known(current: str | None) -> None:
    if current is not None and current not in {r.revision for r in history()}:
        raise SchemaOutdatedError(
            f"the database schema is at revision {current}, which this kb version does not know "
            f"(newest here: {head_revision()}): it was migrated by a newer kb; run that version"
        )


def ensure_current(engine: Engine) -> str:
    """Raise SchemaOutdatedError unless the schema is at head (used when migrate_on_start is off)."""
    current = current_revision(engine)
    if current == HEAD:
        return HEAD
    head = head_revision()
    _check_known(current)
    if current != head:
        raise SchemaOutdatedError(
            f"the database schema ({safe_url(engine.url)}) is at {current or 'no revision (empty database)'}, "
            f"this kb needs {head}: run 'kb db upgrade' (or set KB_DATABASE__MIGRATE_ON_START=true)"
        )
    return head


@contextmanager
def migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection held under the cross-process migration lock of this database."""
    path = sqlite_file(engine)
    if path is not None:
        lock_path = path.with_name(path.name + ".migrate-lock")
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, even on a crash
            try:
                with transactional(engine).connect() as conn:
                    yield conn
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    with transactional(engine).connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            conn.commit()  # the lock belongs to the session, not to this transaction
            try:
                yield conn
            finally:
                if conn.in_transaction():
                    conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
                conn.commit()
        else:
            yield conn


def upgrade_locked(conn: Connection) -> str | None:
    """``alembic upgrade head`` on a connection that holds the migration lock; returns the revision before."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    before = MigrationContext.configure(conn).get_current_revision()
    if conn.in_transaction():
        conn.commit()
    _check_known(before)
    if before != head_revision():
        log.info("migrating the database schema from %s to %s", before or "an empty database", head_revision())
        command.upgrade(_config(conn), "head")
        if conn.in_transaction():
            conn.commit()
    return before


def upgrade(engine: Engine, data_dir: Path | None = None) -> str:
    """Bring the schema to head and import ``data_dir``'s legacy SQLite files (``app.db.legacy``).

    A no-op when the schema is at head and no legacy file is left; safe for concurrent
    callers (replicas starting together). Returns the head revision.
    """
    from app.db import legacy

    current = current_revision(engine)
    own_file = sqlite_file(engine)
    if current == HEAD and not (data_dir and legacy.pending(data_dir, own_file)):
        return HEAD
    _check_known(current)
    head = head_revision()
    with migration_lock(engine) as conn:
        upgrade_locked(conn)
        if data_dir is not None:
            legacy.import_legacy(conn, data_dir, own_file)
    return head
