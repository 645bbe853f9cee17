"""The ingestion manifest: what each collection holds, and the switch that makes updates atomic.

Chroma has no transactions, so a changed document is replaced in three steps:
upsert its new chunks (invisible: the manifest still names the old version),
switch the manifest row to the new version (one SQLite transaction: the moment
readers see the new text), then delete the old chunks. Readers keep only hits whose
``doc_hash`` is the manifest's live version, so they never see both versions or
neither. A crash at any step leaves chunks the manifest does not vouch for; the
next run of the same command upserts the same deterministic ids, switches, and
deletes every chunk of the document that is not in the live set, converging to
the store a clean run produces.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vectorstore.writers import Claim, LeaseLost, owner_alive

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL,
    source TEXT NOT NULL,
    document_id TEXT NOT NULL,
    doc_hash TEXT NOT NULL,
    chunk_ids TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    title TEXT,
    updated_at REAL NOT NULL,
    clean INTEGER NOT NULL DEFAULT 0,  -- 0 until the previous version's chunks are deleted
    PRIMARY KEY (collection, source)
);
CREATE INDEX IF NOT EXISTS documents_id ON documents (collection, document_id);
CREATE TABLE IF NOT EXISTS writers (  -- one writer per document: see vectorstore/writers.py
    collection TEXT NOT NULL,
    source TEXT NOT NULL,
    document_id TEXT NOT NULL,
    doc_hash TEXT NOT NULL,     -- the version being written (not live until switched)
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (collection, source)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,
    summary TEXT
);
"""


@dataclass(frozen=True)
class WriterRow:
    collection: str
    source: str
    document_id: str
    doc_hash: str
    owner: str
    expires_at: float


@dataclass(frozen=True)
class DocumentRecord:
    collection: str
    source: str
    document_id: str
    doc_hash: str
    chunk_ids: tuple[str, ...]
    size_bytes: int
    title: str | None
    updated_at: float
    clean: bool = False


class Manifest:
    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        # WAL + NORMAL survives a killed process (what crash-safety is about here); only an OS
        # crash could lose the last commits, which the next run then simply redoes.
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self._conn.executescript(_SCHEMA)
        self._versions: dict[str, tuple[int, float]] = {}  # version() results until the file changes
        self._versions_seen: tuple[int, int] = (-1, -1)
        self._dead: dict[str, tuple[str, ...]] = {}  # dead_hashes() results, same lifetime
        self._dead_seen: tuple[int, int] = (-1, -1)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @staticmethod
    def _record(row: sqlite3.Row) -> DocumentRecord:
        return DocumentRecord(
            row["collection"], row["source"], row["document_id"], row["doc_hash"],
            tuple(json.loads(row["chunk_ids"])), row["size_bytes"], row["title"], row["updated_at"],
            bool(row["clean"]),
        )  # fmt: skip

    def version(self, collections: list[str]) -> list[tuple[str, int, float]]:
        """A stamp per collection that changes with every ingest, update or delete in it.

        (documents, last change): adding or changing a document moves the last change,
        deleting one lowers the count. Asked on every question (the answer cache keys on
        it), so results are kept until the file changes: SQLite's ``data_version`` moves
        when another connection (an ingest process) commits, ``total_changes`` when ours does.
        """
        with self._lock:
            seen = (int(self._conn.execute("PRAGMA data_version").fetchone()[0]), self._conn.total_changes)
            if seen != self._versions_seen:
                self._versions, self._versions_seen = {}, seen
            missing = [c for c in collections if c not in self._versions]
            if missing:
                marks = ",".join("?" * len(missing))
                rows = self._conn.execute(
                    f"SELECT collection, COUNT(*), MAX(updated_at) FROM documents WHERE collection IN ({marks}) "
                    "GROUP BY collection",
                    missing,
                ).fetchall()
                found = {r[0]: (int(r[1]), float(r[2] or 0.0)) for r in rows}
                for c in missing:
                    self._versions[c] = found.get(c, (0, 0.0))
            return [(c, *self._versions[c]) for c in sorted(collections)]

    def get(self, collection: str, source: str) -> DocumentRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM documents WHERE collection = ? AND source = ?", (collection, source)
            ).fetchone()
        return self._record(row) if row else None

    def documents(self, collection: str) -> list[DocumentRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM documents WHERE collection = ? ORDER BY source", (collection,)
            ).fetchall()
        return [self._record(r) for r in rows]

    def collections(self) -> dict[str, tuple[int, int]]:
        """collection → (documents, chunks)."""
        with self._lock:
            rows = self._conn.execute("SELECT collection, chunk_ids FROM documents").fetchall()
        result: dict[str, tuple[int, int]] = {}
        for row in rows:
            docs, chunks = result.get(row["collection"], (0, 0))
            result[row["collection"]] = (docs + 1, chunks + len(json.loads(row["chunk_ids"])))
        return result

    def switch(self, record: DocumentRecord, owner: str | None = None) -> None:
        """Make ``record`` the live version of its document (the atomic step of an update).

        With ``owner``, only while that writer still holds the document's claim (LeaseLost otherwise):
        a writer whose claim expired must not overwrite the version of the writer that took over.
        """
        with self._tx() as conn:
            if owner is not None:
                row = conn.execute(
                    "SELECT owner FROM writers WHERE collection = ? AND source = ?", (record.collection, record.source)
                ).fetchone()
                if row is None or row[0] != owner:
                    raise LeaseLost(f"the claim on {record.source!r} was lost to {row[0] if row else 'nobody'}")
            conn.execute(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    record.collection, record.source, record.document_id, record.doc_hash,
                    json.dumps(list(record.chunk_ids)), record.size_bytes, record.title, record.updated_at,
                ),
            )  # fmt: skip

    def mark_clean(self, collection: str, source: str) -> None:
        """The previous version's chunks are gone: nothing left to sweep for this document."""
        with self._tx() as conn:
            conn.execute("UPDATE documents SET clean = 1 WHERE collection = ? AND source = ?", (collection, source))

    # --- writers: one per document (vectorstore/writers.py) -------------------------------------------

    def claim(self, collection: str, source: str, document_id: str, doc_hash: str, owner: str, ttl_s: float) -> Claim:
        """Take the document for writing ``doc_hash`` unless another live writer holds it."""
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT doc_hash, owner, expires_at FROM writers WHERE collection = ? AND source = ?",
                (collection, source),
            ).fetchone()
            if row is not None and row["owner"] != owner and owner_alive(row["owner"], row["expires_at"], now):
                return Claim(held=False)
            live = conn.execute(
                "SELECT doc_hash FROM documents WHERE collection = ? AND source = ?", (collection, source)
            ).fetchone()
            live_hash = live[0] if live else None
            abandoned = None
            if row is not None and row["owner"] != owner and row["doc_hash"] != live_hash:
                abandoned = row["doc_hash"]
            conn.execute(
                "INSERT OR REPLACE INTO writers VALUES (?, ?, ?, ?, ?, ?)",
                (collection, source, document_id, doc_hash, owner, now + ttl_s),
            )
        return Claim(held=True, live_hash=live_hash, abandoned_hash=abandoned)

    def renew(self, owner: str, ttl_s: float) -> int:
        with self._tx() as conn:
            return conn.execute(
                # abandoned claims (expires_at 0) stay abandoned: they name chunks to sweep
                "UPDATE writers SET expires_at = ? WHERE owner = ? AND expires_at > 0",
                (time.time() + ttl_s, owner),
            ).rowcount

    def release(self, collection: str, source: str, owner: str, *, clean: bool = False) -> None:
        """Give the document back; ``clean``: its previous version's chunks are gone too."""
        with self._tx() as conn:
            if clean:
                conn.execute("UPDATE documents SET clean = 1 WHERE collection = ? AND source = ?", (collection, source))
            conn.execute(
                "DELETE FROM writers WHERE collection = ? AND source = ? AND owner = ?", (collection, source, owner)
            )

    def abandon(self, collection: str, source: str, owner: str) -> None:
        """Give up a claim after a failure: expired, it names the chunks the next sweep removes."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE writers SET expires_at = 0 WHERE collection = ? AND source = ? AND owner = ?",
                (collection, source, owner),
            )

    def abandon_owner(self, owner: str) -> int:
        """Give up every claim a writer still holds (it failed or was cancelled mid-run)."""
        with self._tx() as conn:
            return conn.execute("UPDATE writers SET expires_at = 0 WHERE owner = ?", (owner,)).rowcount

    def writers(self, collection: str | None = None) -> list[WriterRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM writers WHERE ? IS NULL OR collection = ? ORDER BY collection, source",
                (collection, collection),
            ).fetchall()
        return [WriterRow(*tuple(r)) for r in rows]

    def abandoned(self, collection: str | None = None) -> list[WriterRow]:
        """Claims whose writer is gone (crashed, killed): their versions never went live."""
        now = time.time()
        return [w for w in self.writers(collection) if not owner_alive(w.owner, w.expires_at, now)]

    def dead_hashes(self, collection: str) -> tuple[str, ...]:
        """Versions with chunks in the store that readers must not see: being written, or abandoned.

        Retrieval excludes them inside Chroma's and BM25's own filters, so thousands of chunks of a
        half-written document cannot fill the candidate lists. Usually empty (no filter at all).
        """
        with self._lock:
            seen = (int(self._conn.execute("PRAGMA data_version").fetchone()[0]), self._conn.total_changes)
            if seen != self._dead_seen:
                self._dead, self._dead_seen = {}, seen
            if collection not in self._dead:
                rows = self._conn.execute(
                    "SELECT DISTINCT w.doc_hash FROM writers w LEFT JOIN documents d "
                    "ON d.collection = w.collection AND d.source = w.source "
                    "WHERE w.collection = ? AND (d.doc_hash IS NULL OR d.doc_hash != w.doc_hash) "
                    # the same bytes may be live under another name: its chunks must stay visible
                    "AND w.doc_hash NOT IN (SELECT doc_hash FROM documents WHERE collection = ?) ORDER BY 1",
                    (collection, collection),
                ).fetchall()
                self._dead[collection] = tuple(r[0] for r in rows)
            return self._dead[collection]

    def remove(self, collection: str, source: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM documents WHERE collection = ? AND source = ?", (collection, source))

    def remove_collection(self, collection: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM documents WHERE collection = ?", (collection,))

    def live_hashes(self, collection: str, document_ids: Iterable[str]) -> dict[str, str]:
        """document_id → live doc_hash, for filtering retrieved chunks to live versions."""
        ids = sorted(set(document_ids))
        if not ids:
            return {}
        marks = ",".join("?" for _ in ids)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT document_id, doc_hash FROM documents WHERE collection = ? AND document_id IN ({marks})",
                (collection, *ids),
            ).fetchall()
        return {r["document_id"]: r["doc_hash"] for r in rows}

    def start_run(self, collection: str) -> int:
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO runs (collection, started_at, status) VALUES (?, ?, 'running')", (collection, time.time())
            )
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, status: str, summary: dict[str, object]) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE runs SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
                (time.time(), status, json.dumps(summary), run_id),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()
