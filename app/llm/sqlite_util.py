"""A thread-safe SQLite connection for the small per-data-dir stores (the response cache).

WAL with ``synchronous=NORMAL``: a commit no longer waits for an fsync (it is the
difference between ~0.1 ms and several ms per ledger row on a busy disk, paid on
every model call and cache hit). The database stays consistent on a crash; at
worst the last few rows before a power loss are lost, acceptable for a cache and
a usage ledger. (The ledger, keys, audit log and conversations moved to the shared SQL
database, ``app.db``, which sets the same pragmas on its connections.)
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SqliteDb:
    """One connection per store, serialised by a lock; WAL so readers don't block the writer."""

    def __init__(self, path: str | Path, schema: str):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self.tx() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(schema)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._conn:
            yield self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()
