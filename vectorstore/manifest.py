"""The ingestion manifest: what each collection holds, and the switch that makes updates atomic.

Chroma has no transactions, so a changed document is replaced in three steps:
upsert its new chunks (invisible: the manifest still names the old version),
switch the manifest row to the new version (one SQL transaction: the moment
readers see the new text), then delete the old chunks. Readers keep only hits whose
``doc_hash`` is the manifest's live version, so they never see both versions or
neither. A crash at any step leaves chunks the manifest does not vouch for; the
next run of the same command upserts the same deterministic ids, switches, and
deletes every chunk of the document that is not in the live set, converging to
the store a clean run produces.

The tables live in the shared SQL database (vectorstore/tables.py), so every host reads the
same live versions; a stamp per collection, moved by every change, lets each process keep
what it derived from them (counts, versions being written) until the next change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, func, select

from vectorstore.tables import (
    BATCH,
    MANIFEST_TABLES,
    bump,
    documents,
    lock_or_insert,
    manifest_stamps,
    open_engine,
    runs,
    upsert,
    write_tx,
    writers,
)
from vectorstore.writers import Claim, LeaseLost, owner_alive


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
    """The manifest on the shared database (an Engine) or, given a path, on a private SQLite file."""

    def __init__(self, target: Engine | str | Path):
        self._engine, self._owns_engine = open_engine(target, MANIFEST_TABLES)
        self._versions: dict[str, tuple[int, int]] = {}  # collection → (stamp, documents)
        self._dead: dict[str, tuple[int, tuple[str, ...]]] = {}  # collection → (stamp, dead_hashes())

    @staticmethod
    def _record(row: RowMapping) -> DocumentRecord:
        return DocumentRecord(
            row["collection"], row["source"], row["document_id"], row["doc_hash"],
            tuple(json.loads(row["chunk_ids"])), int(row["size_bytes"]), row["title"], float(row["updated_at"]),
            bool(row["clean"]),
        )  # fmt: skip

    def _stamps(self, conn: Connection, collections: list[str]) -> dict[str, int]:
        rows = conn.execute(
            select(manifest_stamps.c.collection, manifest_stamps.c.stamp).where(
                manifest_stamps.c.collection.in_(collections)
            )
        )
        found = {r[0]: int(r[1]) for r in rows}
        return {c: found.get(c, 0) for c in collections}

    def version(self, collections: list[str]) -> list[tuple[str, int, float]]:
        """(collection, documents, stamp): changes with every ingest, update or delete in it.

        The stamp is a counter the database moves in the same transaction as the change, so it
        never repeats (timestamps from several hosts' clocks could, and the answer cache keys on
        this). Asked on every question, so the counts are kept until the stamp moves (one indexed read).
        """
        with self._engine.connect() as conn:
            stamps = self._stamps(conn, collections)
            stale = [c for c in collections if self._versions.get(c, (-1, 0))[0] != stamps[c]]
            if stale:
                d = documents.c
                rows = conn.execute(
                    select(d.collection, func.count()).where(d.collection.in_(stale)).group_by(d.collection)
                )
                found = {r[0]: int(r[1]) for r in rows}
                for c in stale:
                    self._versions[c] = (stamps[c], found.get(c, 0))
        return [(c, self._versions[c][1], float(self._versions[c][0])) for c in sorted(collections)]

    def get(self, collection: str, source: str) -> DocumentRecord | None:
        d = documents.c
        with self._engine.connect() as conn:
            row = conn.execute(select(documents).where(d.collection == collection, d.source == source)).first()
        return self._record(row._mapping) if row else None

    def documents(self, collection: str) -> list[DocumentRecord]:
        d = documents.c
        with self._engine.connect() as conn:
            rows = conn.execute(select(documents).where(d.collection == collection).order_by(d.source))
            return [self._record(r._mapping) for r in rows]

    def collections(self) -> dict[str, tuple[int, int]]:
        """collection → (documents, chunks)."""
        result: dict[str, tuple[int, int]] = {}
        with self._engine.connect() as conn:
            for collection, chunk_ids in conn.execute(select(documents.c.collection, documents.c.chunk_ids)):
                docs, count = result.get(collection, (0, 0))
                result[collection] = (docs + 1, count + len(json.loads(chunk_ids)))
        return result

    @staticmethod
    def _writer(conn: Connection, collection: str, source: str) -> RowMapping | None:
        w = writers.c
        row = conn.execute(
            select(writers).where(w.collection == collection, w.source == source).with_for_update()
        ).first()
        return row._mapping if row else None

    def switch(self, record: DocumentRecord, owner: str | None = None) -> None:
        """Make ``record`` the live version of its document (the atomic step of an update).

        With ``owner``, only while that writer still holds the document's claim (LeaseLost otherwise):
        a writer whose claim expired must not overwrite the version of the writer that took over.
        """
        with write_tx(self._engine) as conn:
            if owner is not None:
                row = self._writer(conn, record.collection, record.source)
                if row is None or row["owner"] != owner:
                    raise LeaseLost(f"the claim on {record.source!r} was lost to {row['owner'] if row else 'nobody'}")
            values: dict[str, Any] = dict(
                collection=record.collection, source=record.source, document_id=record.document_id,
                doc_hash=record.doc_hash, chunk_ids=json.dumps(list(record.chunk_ids)), size_bytes=record.size_bytes,
                title=record.title, updated_at=record.updated_at, clean=0,
            )  # fmt: skip
            upsert(conn, documents, values)
            bump(conn, manifest_stamps, "stamp", record.collection)

    def _set_clean(self, conn: Connection, collection: str, source: str) -> None:
        d = documents.c
        conn.execute(documents.update().where(d.collection == collection, d.source == source).values(clean=1))

    def mark_clean(self, collection: str, source: str) -> None:
        """The previous version's chunks are gone: nothing left to sweep for this document."""
        with write_tx(self._engine) as conn:
            self._set_clean(conn, collection, source)

    # --- writers: one per document (vectorstore/writers.py) -------------------------------------------

    def claim(self, collection: str, source: str, document_id: str, doc_hash: str, owner: str, ttl_s: float) -> Claim:
        """Take the document for writing ``doc_hash`` unless another live writer holds it."""
        now = time.time()
        mine: dict[str, Any] = dict(
            collection=collection, source=source, document_id=document_id, doc_hash=doc_hash, owner=owner,
            expires_at=now + ttl_s,
        )  # fmt: skip
        d = documents.c
        with write_tx(self._engine) as conn:
            # create-or-lock: two first claimers cannot both see "no row" (the loser waits on the insert)
            lock_or_insert(conn, writers, {**mine, "owner": "", "expires_at": 0.0}, "owner")
            row = self._writer(conn, collection, source)
            assert row is not None
            if row["owner"] not in ("", owner) and owner_alive(row["owner"], row["expires_at"], now):
                return Claim(held=False)
            live_hash = conn.execute(
                select(d.doc_hash).where(d.collection == collection, d.source == source)
            ).scalar_one_or_none()
            abandoned = None
            if row["owner"] not in ("", owner) and row["doc_hash"] != live_hash:
                abandoned = row["doc_hash"]
            upsert(conn, writers, mine)
            bump(conn, manifest_stamps, "stamp", collection)
        return Claim(held=True, live_hash=live_hash, abandoned_hash=abandoned)

    def renew(self, owner: str, ttl_s: float) -> int:
        w = writers.c
        with write_tx(self._engine) as conn:
            # abandoned claims (expires_at 0) stay abandoned: they name chunks to sweep
            result = conn.execute(
                writers.update().where(w.owner == owner, w.expires_at > 0).values(expires_at=time.time() + ttl_s)
            )
            return int(result.rowcount)

    def release(self, collection: str, source: str, owner: str, *, clean: bool = False) -> None:
        """Give the document back; ``clean``: its previous version's chunks are gone too."""
        w = writers.c
        with write_tx(self._engine) as conn:
            if clean:
                self._set_clean(conn, collection, source)
            conn.execute(writers.delete().where(w.collection == collection, w.source == source, w.owner == owner))
            bump(conn, manifest_stamps, "stamp", collection)

    def abandon(self, collection: str, source: str, owner: str) -> None:
        """Give up a claim after a failure: expired, it names the chunks the next sweep removes."""
        w = writers.c
        with write_tx(self._engine) as conn:
            conn.execute(
                writers.update()
                .where(w.collection == collection, w.source == source, w.owner == owner)
                .values(expires_at=0.0)
            )

    def abandon_owner(self, owner: str) -> int:
        """Give up every claim a writer still holds (it failed or was cancelled mid-run)."""
        with write_tx(self._engine) as conn:
            return int(conn.execute(writers.update().where(writers.c.owner == owner).values(expires_at=0.0)).rowcount)

    def writers(self, collection: str | None = None) -> list[WriterRow]:
        w = writers.c
        query = select(writers).where(w.owner != "").order_by(w.collection, w.source)
        if collection is not None:
            query = query.where(w.collection == collection)
        with self._engine.connect() as conn:
            return [
                WriterRow(r.collection, r.source, r.document_id, r.doc_hash, r.owner, float(r.expires_at))
                for r in conn.execute(query)
            ]

    def abandoned(self, collection: str | None = None) -> list[WriterRow]:
        """Claims whose writer is gone (crashed, killed): their versions never went live."""
        now = time.time()
        return [w for w in self.writers(collection) if not owner_alive(w.owner, w.expires_at, now)]

    def dead_hashes(self, collection: str) -> tuple[str, ...]:
        """Versions with chunks in the store that readers must not see: being written, or abandoned.

        Retrieval excludes them inside Chroma's and BM25's own filters, so thousands of chunks of a
        half-written document cannot crowd live ones out. Usually empty (no filter at all).
        """
        w, d = writers.c, documents.c
        with self._engine.connect() as conn:
            stamp = self._stamps(conn, [collection])[collection]
            cached = self._dead.get(collection)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            # the same bytes may be live under another name: its chunks must stay visible. NOT EXISTS, one
            # index lookup per writer (documents_hash), not NOT IN (SELECT ...), which SQLite answers by copying
            # every live version into a temporary B-tree first: seconds per search at a million chunks
            live = select(d.doc_hash).where(d.collection == w.collection, d.doc_hash == w.doc_hash)
            rows = conn.execute(
                select(w.doc_hash)
                .distinct()
                .where(w.collection == collection, w.owner != "", ~live.exists())
                .order_by(w.doc_hash)
            )
            dead = tuple(r[0] for r in rows)
        self._dead[collection] = (stamp, dead)
        return dead

    def remove(self, collection: str, source: str) -> None:
        d = documents.c
        with write_tx(self._engine) as conn:
            conn.execute(documents.delete().where(d.collection == collection, d.source == source))
            bump(conn, manifest_stamps, "stamp", collection)

    def remove_collection(self, collection: str) -> None:
        with write_tx(self._engine) as conn:
            conn.execute(documents.delete().where(documents.c.collection == collection))
            bump(conn, manifest_stamps, "stamp", collection)

    def live_hashes(self, collection: str, document_ids: Iterable[str]) -> dict[str, str]:
        """document_id → live doc_hash, for filtering retrieved chunks to live versions."""
        ids = sorted(set(document_ids))
        d = documents.c
        found: dict[str, str] = {}
        with self._engine.connect() as conn:
            for start in range(0, len(ids), BATCH):
                rows = conn.execute(
                    select(d.document_id, d.doc_hash).where(
                        d.collection == collection, d.document_id.in_(ids[start : start + BATCH])
                    )
                )
                found.update({r[0]: r[1] for r in rows})
        return found

    def start_run(self, collection: str) -> int:
        with write_tx(self._engine) as conn:
            result = conn.execute(runs.insert().values(collection=collection, started_at=time.time(), status="running"))
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def finish_run(self, run_id: int, status: str, summary: dict[str, object]) -> None:
        with write_tx(self._engine) as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(finished_at=time.time(), status=status, summary=json.dumps(summary))
            )

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()
