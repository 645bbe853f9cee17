"""Readiness checks: can this process serve a question right now?

Liveness (``/healthz``) only says the process runs; a load balancer needs to know whether
the things a request touches answer: the vector store, the response cache, the shared SQL
database (keys, ledger, audit log, conversations) and the manifest. Each check is a cheap
read (a heartbeat, a PING, ``SELECT 1``, one query on a fresh read-only SQLite connection)
so ``/readyz`` costs milliseconds and locks no file; the one write is a probe file in the
data dir, because a store that answers reads but cannot be written (a full disk, a read-only
mount) must not look ready. A check returns a short detail or raises; ``run_checks`` times
them and never raises.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from app.db.engine import sqlite_file, transactional

if TYPE_CHECKING:
    from app.bootstrap import Components

log = logging.getLogger(__name__)

Check = Callable[[], str]


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str  # for the log only: it may name hosts and paths, and /readyz needs no auth
    ms: float
    error: str | None = None  # the exception's type name, safe to show

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "ok" if self.ok else "failing", "ms": round(self.ms, 2)}
        if self.error:
            out["error"] = self.error
        return out


def sqlite_check(path: Path) -> Check:
    """A store's file is readable as a database (a store opened lazily may not exist yet)."""

    def check() -> str:
        if not path.exists():
            if os.access(path.parent, os.W_OK):
                return "not created yet; directory writable"
            raise OSError(f"{path.name} does not exist and {path.parent} is not writable")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
        return "sqlite ok"

    return check


def vector_store_check(components: Components) -> Check:
    def check() -> str:
        store = components.store
        store.heartbeat()
        return f"chroma {components.settings.vectorstore.mode} ({store.location})"

    return check


def writable_check(components: Components) -> Check:
    """The data dir (manifest, BM25 index, jobs, embedded Chroma) takes a write, and the vector store's last
    write did not fail (which is all a Chroma server tells us without writing to it)."""

    def check() -> str:
        folders = [components.settings.data_dir]
        if components.settings.vectorstore.mode == "embedded":
            folders.append(components.settings.chroma_dir)
        for folder in folders:
            if folder.exists():
                probe = folder / f".kb-write-probe-{os.getpid()}"
                try:
                    probe.write_bytes(b"ok")
                finally:
                    probe.unlink(missing_ok=True)
        error = components.store.write_error
        if error:
            raise OSError(error)
        return "writable"

    return check


def cache_check(components: Components) -> Check:
    def check() -> str:
        cache = components.cache
        if cache is None:
            return "disabled"
        ping = getattr(cache, "ping", None)  # redis: PING; sqlite: the file check below
        if ping is not None:
            ping()
            return "redis ok"
        return sqlite_check(components.settings.cache_db)()

    return check


def database_check(components: Components) -> Check:
    """The shared SQL database answers: ``SELECT 1`` through the pool, bounded by ``statement_timeout``.

    With SQLite, ``SELECT 1`` would never touch the file, so the check reads the file on a
    fresh read-only connection instead: a corrupt or vanished ``kb.sqlite3`` fails it.
    """

    def check() -> str:
        engine = components.db
        path = sqlite_file(engine)
        if path is not None:
            return sqlite_check(path)()
        with transactional(engine).connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SET LOCAL statement_timeout = 2000"))
            conn.execute(text("SELECT 1")).scalar_one()
            conn.rollback()
        return f"{engine.dialect.name} ok"

    return check


def checks_for(components: Components) -> dict[str, Check]:
    """Every dependency a request may touch, by the name /readyz reports."""
    return {
        "vector_store": vector_store_check(components),
        "writable": writable_check(components),
        "cache": cache_check(components),
        "database": database_check(components),  # the manifest and the BM25 chunks live there too
    }


def run_checks(checks: dict[str, Check]) -> list[CheckResult]:
    results = []
    for name, check in checks.items():
        started = time.perf_counter()
        error = None
        try:
            detail, ok = check(), True
        except Exception as exc:  # a readiness probe reports failures, it never raises
            error = type(exc).__name__
            detail, ok = f"{error}: {exc}"[:300], False
            log.warning("readiness check %s failing: %s", name, detail)
        results.append(CheckResult(name, ok, detail, (time.perf_counter() - started) * 1000, error))
    return results
