"""One SQLAlchemy engine per process, tuned per backend.

SQLite (the default, one host): every new connection gets WAL, ``synchronous=NORMAL`` and a
30 s busy timeout, set in a ``connect`` listener so pooled connections never miss them. WAL
lets readers run beside the writer; NORMAL makes a commit skip the fsync (~0.1 ms instead of
several ms per ledger row, paid on every model call and cache hit) at the price of possibly
losing the last rows before a power cut, never of corrupting the file. The busy timeout
makes concurrent writers (threads, ``kb`` commands next to the server) wait instead of
failing. Foreign keys are switched on so SQLite enforces what PostgreSQL enforces.

PostgreSQL (replicas on several hosts): psycopg 3 (``postgresql+psycopg://``; a bare
``postgresql://`` or ``postgres://`` URL is read as that), a bounded pool per process and a
connect timeout, so a database that does not answer fails a request or a readiness probe
in seconds instead of hanging it. Its connections autocommit by default: the hot statements
(a ledger row per model call, a key lookup per request) are single statements, and an
explicit BEGIN/COMMIT would triple their round trips; switching the isolation level per
checkout instead costs more Python than it saves. Work that needs several statements to
be atomic asks for ``transactional(engine)``.

So a store writes ``with engine.begin() as conn: conn.execute(one_statement)`` (SQLite:
the driver's implicit transaction, committed; PostgreSQL: autocommitted) and uses
``transactional(engine).begin()`` for more than one statement.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from app.errors import ConfigurationError
from vectorstore.sqlite_db import sqlite_pragmas

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path)}"


def normalize_url(url: str | URL) -> URL:
    """``postgres://`` and ``postgresql://`` mean psycopg 3, the driver kb ships (the ``postgres`` extra)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL with its password masked, for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def unreachable(url: str | URL, exc: OperationalError) -> ConfigurationError:
    """The one-line error for a database that cannot be reached (the password masked)."""
    return ConfigurationError(
        f"cannot reach the database {safe_url(url)}: {str(exc.orig).strip()}. Check KB_DATABASE__URL "
        "and that the server runs"
    )


def sqlite_file(target: Engine | str | URL) -> Path | None:
    """The database file of a SQLite engine or URL (None for PostgreSQL or an in-memory database)."""
    url = target.url if isinstance(target, Engine) else make_url(target)
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    return Path(database) if database and database != ":memory:" and not database.startswith("file:") else None


def retry_on_disconnect(operation: Callable[[], T], what: str) -> T:
    """Run ``operation``; if its pooled connection turns out dead, run it once more on a fresh one.

    After a database restart (or an idle connection cut by a proxy) every pooled connection
    is dead, and the first statement on one fails even though the server is back; the pool
    then discards that whole generation of connections. For the statements on the request
    path (a key lookup, a ledger row) one retry turns that into a few ms instead of a failed
    request. Only for single idempotent-enough statements: a row whose commit reached the
    server just before the connection died would be written twice.
    """
    try:
        return operation()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning("%s: the database connection was lost (%s); retrying once", what, type(exc.orig).__name__)
        return operation()


def transactional(engine: Engine) -> Engine:
    """``engine`` whose ``begin()`` is a real multi-statement transaction on every backend."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="READ COMMITTED")
    return engine


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    sqlite_pragmas(dbapi_conn, busy_timeout_s=SQLITE_BUSY_TIMEOUT_MS / 1000)
    dbapi_conn.execute("PRAGMA foreign_keys=ON")


def make_engine(url: str | URL, *, pool_size: int = 5, connect_timeout_s: float = 5.0) -> Engine:
    """An engine for ``url``; raises ConfigurationError for an unusable URL or a missing driver."""
    try:
        parsed = normalize_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError for a malformed URL
        raise ConfigurationError(f"cannot read the database URL (KB_DATABASE__URL): {exc}") from exc
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            engine = _sqlite_engine(parsed)
        elif backend == "postgresql":
            engine = create_engine(
                parsed,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_timeout=max(connect_timeout_s, 10.0),
                pool_recycle=3600,  # outlive no idle-connection killer (pgbouncer, firewalls) by much
                connect_args={"connect_timeout": max(1, math.ceil(connect_timeout_s)), "application_name": "kb"},
                isolation_level="AUTOCOMMIT",  # see the module docstring; transactional() for atomic groups
            )
        else:
            raise ConfigurationError(
                f"unsupported database {safe_url(parsed)}: use sqlite:///PATH or postgresql+psycopg://..."
            )
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"the database URL {safe_url(parsed)} needs the {exc.name} driver: pip install 'kb[postgres]'"
        ) from exc
    log.debug("database engine for %s", safe_url(parsed))
    return engine


def _sqlite_engine(url: URL) -> Engine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine
