"""Import the per-store SQLite files of earlier kb versions into the shared database, once.

Before the shared database, the data dir held ``keys.sqlite3``, ``usage.sqlite3``,
``audit.sqlite3`` and ``conversations.sqlite3``. An upgrade must not lose them: the keys
above all (without them every admin is locked out), then the spending history, the audit
trail and open conversations. So, under the migration lock, for each such file whose
target tables are all still empty, its rows are copied in one transaction (a crash leaves
the database as it was and the file in place, and the next start tries again), the count
is logged, and the file is renamed ``<name>.imported`` so it is never imported twice and
stays on disk as a copy until the operator deletes it.

The same path moves an installation from the default SQLite database to PostgreSQL: with
``KB_DATABASE__URL`` set, a ``kb.sqlite3`` left in the data dir is imported the same way
(all five tables) and renamed.

A file with rows for tables that already have rows in the database is left alone with a warning: that
happens when a second replica with its own data dir joins a database another one filled,
and merging two sets of keys silently would be worse than asking the operator.

Columns are matched by name, so files from any earlier release import (a first-release
ledger has no ``collection``/``key``: those stay NULL). Autoincrement ids of the ledger and
audit log are not copied: rows are inserted in id order and numbered by the database, so
its sequence never collides with the imported rows.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, literal, select

from app.db import schema
from vectorstore import tables as tables_v

log = logging.getLogger(__name__)

_MANIFEST = tuple(schema.metadata.tables[name] for name in ("documents", "writers", "runs", "manifest_stamps"))
_LEXICAL = tuple(schema.metadata.tables[name] for name in ("chunks", "versions"))
# file name in the data dir → its tables, in insert order (turns reference conversations)
LEGACY_FILES: dict[str, tuple[Table, ...]] = {
    "keys.sqlite3": (schema.api_keys,),
    "usage.sqlite3": (schema.usage,),
    "audit.sqlite3": (schema.audit,),
    "conversations.sqlite3": (schema.conversations, schema.turns),
    # the ingestion state, per data dir until revision 0002 (vectorstore/tables.py)
    "manifest.sqlite3": _MANIFEST,
    "lexical.sqlite3": _LEXICAL,
    # the default SQLite database, when KB_DATABASE__URL now names another (moving to PostgreSQL)
    "kb.sqlite3": (
        schema.api_keys,
        schema.usage,
        schema.audit,
        schema.conversations,
        schema.turns,
        *_MANIFEST,
        *_LEXICAL,
    ),
}
_RENUMBERED = {"usage", "audit", "runs"}  # their integer ids are assigned by the new database
_BATCH = 1000


def pending(data_dir: Path, exclude: Path | None = None) -> list[Path]:
    """Legacy files present in ``data_dir`` (never ``exclude``, the database file itself)."""
    found = [data_dir / name for name in LEGACY_FILES if (data_dir / name).is_file()]
    if exclude is not None:
        found = [p for p in found if p.resolve() != exclude.resolve()]
    return found


def _legacy_columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in src.execute(f'PRAGMA table_info("{table}")')]


def _has_rows(src: sqlite3.Connection, table: str) -> bool:
    if not _legacy_columns(src, table):
        return False
    return src.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone() is not None


def _copy(src: sqlite3.Connection, conn: Connection, table: Table) -> int:
    present = _legacy_columns(src, table.name)
    columns = [c for c in present if c in table.c and not (c == "id" and table.name in _RENUMBERED)]
    if not columns:
        return 0
    sql = "SELECT " + ", ".join(f'"{c}"' for c in columns) + f' FROM "{table.name}"'
    if table.name == "turns":  # SQLite did not enforce the foreign key; PostgreSQL does
        sql += " WHERE conversation_id IN (SELECT id FROM conversations)"
    if "id" in present:
        sql += " ORDER BY id"
    cursor = src.execute(sql)
    copied = 0
    while batch := cursor.fetchmany(_BATCH):
        rows: list[dict[str, Any]] = [dict(zip(columns, row, strict=True)) for row in batch]
        conn.execute(table.insert(), rows)
        copied += len(rows)
    return copied


def _rename(path: Path) -> Path:
    target = path.with_name(path.name + ".imported")
    if target.exists():
        target = path.with_name(f"{path.name}.imported-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("-wal", "-shm"):  # left only if another process still had the file open
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    path.rename(target)
    return target


def import_file(conn: Connection, path: Path) -> dict[str, int] | None:
    """Copy one legacy file in one transaction and rename it; None when its tables are not empty."""
    tables = LEGACY_FILES[path.name]
    src = sqlite3.connect(str(path), timeout=30)
    try:
        with conn.begin():
            filled = [t.name for t in tables if _has_rows(src, t.name) and conn.execute(
                select(literal(1)).select_from(t).limit(1)
            ).first()]  # fmt: skip
            if filled:
                log.warning(
                    "legacy file %s not imported: the database's %s table(s) already have rows. It stays in "
                    "place; import it by hand if its rows are not already there (docs/operations.md, Upgrades)",
                    path, ", ".join(filled),
                )  # fmt: skip
                return None
            counts = {t.name: _copy(src, conn, t) for t in tables}
            if counts.get("documents"):  # processes already running cached these collections as empty
                for collection in conn.execute(select(tables_v.documents.c.collection).distinct()).scalars():
                    tables_v.bump(conn, tables_v.manifest_stamps, "stamp", collection)
    finally:
        src.close()
    renamed = _rename(path)
    log.info(
        "imported %s into the shared database: %s; the file is now %s",
        path.name, ", ".join(f"{n} {t} rows" for t, n in counts.items()), renamed.name,
    )  # fmt: skip
    return counts


def import_legacy(conn: Connection, data_dir: Path, exclude: Path | None = None) -> dict[str, int]:
    """Import every pending legacy file of ``data_dir`` (caller holds the migration lock); rows per table."""
    if conn.in_transaction():
        conn.commit()
    imported: dict[str, int] = {}
    for path in pending(data_dir, exclude):
        counts = import_file(conn, path)
        imported.update(counts or {})
    return imported
