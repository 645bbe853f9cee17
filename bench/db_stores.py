"""Per-call cost of the two shared-database writes and reads on the request path.

Run from the repository root: ``.venv/bin/python bench/db_stores.py [--calls 3000] [--url URL]``.

The usage ledger writes one row per model call and per cache hit; the key store looks a key
up on every request. Both are single autocommitted statements through the process's
SQLAlchemy engine (``app.db``). This prints p50/p95 in microseconds for a ledger insert and
a key lookup on SQLite (a temporary ``kb.sqlite3``, WAL, synchronous=NORMAL) and, with
``--url``, on that database too (e.g. the PostgreSQL of ``scripts/test-postgres.sh``; the
tables must be empty or disposable: rows are added). For comparison it times the same two
statements on the pre-SQL design: one raw ``sqlite3`` connection behind a lock.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.auth import KeyStore  # noqa: E402
from app.db import migrate  # noqa: E402
from app.db.engine import make_engine, safe_url, sqlite_url  # noqa: E402
from app.llm.costs import UsageLedger, UsageRow  # noqa: E402

ROW = dict(
    request_id="bench", provider="openai", model="gpt-4o-mini", prompt="answer@v2", prompt_tokens=812,
    completion_tokens=64, cost_usd=0.00016, latency_ms=812.5, cached=0, streamed=0, status="ok", error=None,
    collection="handbook", key="bench-key",
)  # fmt: skip


def micros(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    for _ in range(min(200, calls)):  # warm: pool filled, statements compiled and cached
        fn()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    return statistics.median(times), times[int(0.95 * len(times)) - 1]


def bench_url(label: str, url: str, calls: int) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine)
    ledger, keys = UsageLedger(engine), KeyStore(engine)
    token = keys.create("bench", "employee", ["handbook"]).token
    insert = micros(lambda: ledger.record(UsageRow(ts=time.time(), **ROW)), calls)
    lookup = micros(lambda: keys.authenticate(token), calls)
    print(f"{label:<28} ledger insert p50 {insert[0]:7.1f} µs  p95 {insert[1]:7.1f} µs   "
          f"key lookup p50 {lookup[0]:7.1f} µs  p95 {lookup[1]:7.1f} µs")  # fmt: skip
    engine.dispose()


def bench_raw_sqlite(path: Path, calls: int) -> None:
    """The design before the shared database: one sqlite3 connection per store, serialised by a lock."""
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    lock = threading.Lock()
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE usage (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL, request_id TEXT, provider TEXT, "
                 "model TEXT, prompt TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, "
                 "latency_ms REAL, cached INTEGER, streamed INTEGER, status TEXT, error TEXT, collection TEXT, "
                 '"key" TEXT)')  # fmt: skip
    conn.execute("CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT, role TEXT, collections TEXT, "
                 "token_sha256 TEXT UNIQUE, prefix TEXT, created_at REAL, revoked_at REAL)")  # fmt: skip
    digest = hashlib.sha256(b"kb_bench").hexdigest()
    conn.execute("INSERT INTO api_keys VALUES ('k1', 'bench', 'employee', '[\"handbook\"]', ?, 'kb_benc', 0, NULL)",
                 (digest,))  # fmt: skip
    conn.commit()
    columns = ", ".join(f'"{c}"' for c in ("ts", *ROW))
    marks = ", ".join("?" for _ in range(len(ROW) + 1))

    def record() -> None:
        with lock, conn:
            conn.execute(f"INSERT INTO usage ({columns}) VALUES ({marks})", (time.time(), *ROW.values()))

    def lookup() -> None:
        with lock, conn:
            conn.execute(
                "SELECT id, name, role, collections, prefix, created_at, revoked_at FROM api_keys "
                "WHERE token_sha256 = ?", (hashlib.sha256(b"kb_bench").hexdigest(),),
            ).fetchone()  # fmt: skip

    insert, read = micros(record, calls), micros(lookup, calls)
    print(f"{'raw sqlite3 (before)':<28} ledger insert p50 {insert[0]:7.1f} µs  p95 {insert[1]:7.1f} µs   "
          f"key lookup p50 {read[0]:7.1f} µs  p95 {read[1]:7.1f} µs")  # fmt: skip
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--url", action="append", default=[], help="another database to measure (repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_raw_sqlite(Path(tmp) / "raw.sqlite3", args.calls)
        bench_url("SQLAlchemy, SQLite", sqlite_url(Path(tmp) / "kb.sqlite3"), args.calls)
    for url in args.url:
        bench_url(f"SQLAlchemy, {make_engine(url).dialect.name}", url, args.calls)
        print(f"  ({safe_url(url)})")


if __name__ == "__main__":
    main()
