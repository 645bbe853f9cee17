"""The ingestion state's tables (manifest, writers, BM25 chunks) and how to write them safely.

They live in the shared SQL database beside keys and the ledger (``kb.sqlite3`` by default,
PostgreSQL for several hosts): which version of each document is live is read on every query,
so every host must read the same rows. The names and columns are those the per-data-dir files
``manifest.sqlite3`` and ``lexical.sqlite3`` had, which is what lets the upgrade import them
as they are (``app.db.legacy``). ``app.db`` creates them with its Alembic revisions; given a
plain path instead (tests, tools), ``open_engine`` creates them in a private SQLite file.

Writes that read before they write (a claim, a switch) run in ``write_tx``: on SQLite
``BEGIN IMMEDIATE``, so two processes queue for the write lock instead of one failing with
"database is locked" when it upgrades a read lock; on PostgreSQL a READ COMMITTED
transaction whose reads lock the rows they decide on (``FOR UPDATE``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite

from vectorstore.sqlite_db import sqlite_pragmas

metadata = MetaData()
_RowId = BigInteger().with_variant(Integer(), "sqlite")

documents = Table(  # the live version of each document
    "documents",
    metadata,
    Column("collection", Text, primary_key=True),
    Column("source", Text, primary_key=True),
    Column("document_id", Text, nullable=False),
    Column("doc_hash", Text, nullable=False),
    Column("chunk_ids", Text, nullable=False),  # JSON list
    Column("size_bytes", BigInteger, nullable=False),
    Column("title", Text),
    Column("updated_at", Double, nullable=False),
    Column("clean", Integer, nullable=False, server_default="0"),  # 0 until the previous version is swept
    Index("documents_id", "collection", "document_id", "doc_hash"),  # covering: the live-version lookup per search
    Index("documents_hash", "collection", "doc_hash"),  # is a writer's version live? (Manifest.dead_hashes)
)

writers = Table(  # one writer per document (vectorstore/writers.py)
    "writers",
    metadata,
    Column("collection", Text, primary_key=True),
    Column("source", Text, primary_key=True),
    Column("document_id", Text, nullable=False),
    Column("doc_hash", Text, nullable=False),  # the version being written (not live until switched)
    Column("owner", Text, nullable=False),
    Column("expires_at", Double, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", _RowId, primary_key=True, autoincrement=True),
    Column("collection", Text, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("finished_at", Double),
    Column("status", Text, nullable=False),
    Column("summary", Text),
    sqlite_autoincrement=True,
)

manifest_stamps = Table(  # moves with every change of a collection's documents or writers
    "manifest_stamps",
    metadata,
    Column("collection", Text, primary_key=True),
    Column("stamp", BigInteger, nullable=False),
)

chunks = Table(  # the BM25 side: stemmed tokens per chunk, with the text and metadata hits return
    "chunks",
    metadata,
    Column("collection", Text, primary_key=True),
    Column("chunk_id", Text, primary_key=True),
    Column("document_id", Text, nullable=False),
    Column("tokens", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("metadata", Text, nullable=False),  # JSON object
    Column("section_vector", LargeBinary),  # on a section's first chunk: its chunks' mean vector (float16)
    # the collection's version this row was written at: rows newer than a BM25 snapshot are searched beside it
    Column("written", BigInteger, nullable=False, server_default="0"),
    Index("chunks_doc", "collection", "document_id"),
    Index("chunks_written", "collection", "written"),
)

versions = Table(  # bumped with every write of a collection's chunks: readers rebuild their matrix
    "versions",
    metadata,
    Column("collection", Text, primary_key=True),
    Column("version", BigInteger, nullable=False),
)

MANIFEST_TABLES = (documents, writers, runs, manifest_stamps)
LEXICAL_TABLES = (chunks, versions)
BATCH = 900  # ids per IN (...) list: under SQLite's and PostgreSQL's parameter limits


def open_engine(target: Engine | str | Path, tables: Sequence[Table]) -> tuple[Engine, bool]:
    """The engine to use, and whether the caller owns it (a path: a private SQLite file, tables created)."""
    if isinstance(target, Engine):
        return target, False
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{Path(target)}", connect_args={"timeout": 30})
    event.listen(engine, "connect", sqlite_pragmas)
    metadata.create_all(engine, tables=list(tables))
    return engine, True


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """One write transaction that may read first (see the module docstring)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        return
    with engine.execution_options(isolation_level="READ COMMITTED").begin() as conn:
        yield conn


def upsert(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
    """INSERT, or UPDATE every non-key column of the row with the same primary key."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=updates), rows)


def lock_or_insert(conn: Connection, table: Table, row: Mapping[str, Any], column: str) -> None:
    """Create the row unless one with its primary key exists, and hold that row's lock either way.

    ``ON CONFLICT DO NOTHING`` would leave an existing row unlocked, so a concurrent transaction could
    delete it before this one reads it; a no-op ``DO UPDATE`` (``column`` set to itself) locks it."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    keys = [c.name for c in table.primary_key.columns]
    conn.execute(insert(table).on_conflict_do_update(index_elements=keys, set_={column: table.c[column]}), row)


def bump(conn: Connection, table: Table, counter: str, collection: str) -> None:
    """Add one to ``table.counter`` of ``collection`` (creating the row at 1)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table).values(collection=collection, **{counter: 1})
    column = table.c[counter]
    conn.execute(stmt.on_conflict_do_update(index_elements=["collection"], set_={counter: column + 1}))
