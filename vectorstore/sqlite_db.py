"""SQLite, the one way kb uses it: the pragmas every connection gets, and a small locked connection for the
per-data-dir files (the response cache, the embedding cache, the admin API's job queue).

No kb imports, so every package can use it (it lives in vectorstore, the lowest package that holds state).
The shared SQL database (``app.db``) and the ingestion tables (``vectorstore.tables``) go through
SQLAlchemy and give their SQLite connections the same pragmas, from here.

WAL with ``synchronous=NORMAL``: a commit does not wait for an fsync (~0.1 ms against several ms per row on
a busy disk), the file stays consistent when a process is killed, and only an OS crash can lose the last
commits, which a cache recomputes and an ingestion redoes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def use_wal(dbapi_conn: sqlite3.Connection, timeout_s: float = 30.0) -> None:
    """Switch a SQLite connection's database to WAL, waiting for other connections as a write would.

    Switching a new database's journal mode needs its exclusive lock and does not wait on the busy
    timeout: a process opening the file while another creates its tables failed at once with
    "database is locked" (two replicas starting on an empty data dir).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any = None, *, busy_timeout_s: float = 30.0) -> None:
    """Every new SQLite connection: wait on other writers, WAL, and NORMAL sync (the shared database's too)."""
    dbapi_conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    use_wal(dbapi_conn, busy_timeout_s)
    dbapi_conn.execute("PRAGMA synchronous=NORMAL")


class SqliteDb:
    """One connection per file, shared by the process's threads and serialised by a lock; its schema
    (``CREATE TABLE IF NOT EXISTS ...``) applied on open. Rows come back as ``sqlite3.Row``."""

    def __init__(self, path: str | Path, schema: str = ""):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            sqlite_pragmas(self._conn)  # a second process opening a new file at the same moment waits, not fails
        if schema:
            with self.tx() as conn:
                conn.executescript(schema)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, in a transaction committed on leaving (rolled back on an error)."""
        with self._lock, self._conn:
            yield self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()
