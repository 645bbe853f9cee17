"""Bookkeeping rows written off the request path, in batches: one transaction per batch.

A repeated question is answered from the answer cache in a fraction of a millisecond, but
its bookkeeping (a conversation and its first turn, an audit row, a ledger row) cost four
transactions on the request thread: most of a cache hit's time. Rows that describe spend
(a model call) are still written before the response is sent; rows about a cache hit
(cost 0) are handed to this writer, which commits whatever has queued up every
``linger_s`` in one transaction, each statement as one ``executemany``.

What that gives up, and how it is bounded:

- A row reaches the database up to ``linger_s`` (20 ms by default) after the response.
  Readers in this process flush first (``flush_pending``): the audit and usage reports, a
  follow-up's conversation lookup. Another process (``kb audit`` beside the server, a
  second replica) may see a row that much later; a conversation lookup that misses waits
  that long once before answering 404.
- A graceful stop (SIGTERM, ``Components.close``) and interpreter exit flush. A hard kill
  (SIGKILL, power cut) can lose the last ``linger_s`` of cache-hit rows; SQLite's
  ``synchronous=NORMAL`` already accepts losing the last commits on a power cut.

``KB_DATABASE__DEFER_WRITES_MS=0`` turns this off: every row is written on the request
thread again.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import Executable

from app.db.engine import safe_url, transactional

log = logging.getLogger(__name__)

Row = tuple[Executable, Mapping[str, Any]]
_LIVE: weakref.WeakSet[DeferredWriter] = weakref.WeakSet()


class DeferredWriter:
    """A daemon thread committing queued rows in batches; ``submit`` never blocks on the database."""

    def __init__(self, engine: Engine, *, linger_s: float = 0.02, max_batch: int = 1000):
        self.engine = engine
        self.url = str(engine.url)
        self.linger_s = linger_s
        self.max_batch = max_batch
        self._tx = transactional(engine)
        self._pending: list[Row] = []
        self._submitted = 0  # rows handed in so far
        self._written = 0  # rows committed (or given up on) so far
        self._cond = threading.Condition()
        self._closed = False
        self._urgent = False  # a reader is waiting: do not linger
        self._thread = threading.Thread(target=self._run, name="kb-db-writer", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def submit(self, rows: Sequence[Row]) -> None:
        """Queue rows that belong together (they are committed in the same transaction, in this order)."""
        with self._cond:
            if not self._closed:
                self._pending.extend(rows)
                self._submitted += len(rows)
                self._cond.notify_all()
                return
        log.debug("deferred writer closed: writing %d rows at once", len(rows))  # a request finishing at shutdown
        self._write(list(rows))

    @property
    def pending(self) -> int:
        return self._submitted - self._written

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every row submitted so far is committed; False if that took over ``timeout_s``."""
        with self._cond:
            target = self._submitted
            self._urgent = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._written >= target, timeout_s)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        _LIVE.discard(self)
        if self.pending:
            log.error("deferred writer for %s stopped with %d rows unwritten", safe_url(self.engine.url), self.pending)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return  # closed, and everything is written
                # Let more rows gather for one transaction; a flush or close cuts the wait short.
                self._cond.wait_for(lambda: self._urgent or self._closed, self.linger_s)
                self._urgent = False
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                self._write(batch)
            except Exception:  # a bug must not stop the thread: every later flush would wait in vain
                log.exception("deferred writer: %d rows not written", len(batch))
            with self._cond:
                self._written += len(batch)
                self._cond.notify_all()

    def _write(self, batch: list[Row]) -> None:
        """One transaction, one executemany per statement (in order of first appearance, so a
        conversation's row precedes its turns'); if it fails, row by row, so one bad row costs only itself."""
        groups: dict[Executable, list[Mapping[str, Any]]] = {}
        for statement, params in batch:
            groups.setdefault(statement, []).append(params)
        try:
            with self._tx.begin() as conn:
                for statement, rows in groups.items():
                    conn.execute(statement, list(rows))
            return
        except SQLAlchemyError as exc:
            log.warning("deferred batch of %d rows failed (%s); writing them one by one", len(batch), exc)
        for statement, params in batch:
            try:
                with self._tx.begin() as conn:
                    conn.execute(statement, dict(params))
            except SQLAlchemyError as exc:
                log.error("deferred row not written to %s: %s", safe_url(self.engine.url), exc)


def flush_pending(engine: Engine) -> None:
    """Before reading rows this process may still hold: flush every live writer on ``engine``'s database."""
    url = str(engine.url)
    for writer in list(_LIVE):
        if writer.url == url and writer.pending:
            writer.flush()


@atexit.register
def _flush_at_exit() -> None:
    for writer in list(_LIVE):
        writer.close()
