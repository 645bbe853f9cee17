"""Online backup of the data directory's SQLite stores (and pending uploads) while kb serves.

Copying a live SQLite file in WAL mode with ``cp`` can capture a torn state (the main
file and its ``-wal`` from different moments). SQLite's online backup API copies a
consistent snapshot page by page while writers continue, so the shared database
(``kb.sqlite3``: ledger, audit log, keys, conversations) and the per-data-dir stores can be
backed up without stopping the API. Each copy is checked with ``PRAGMA quick_check`` before
it counts. When the shared database is PostgreSQL (``KB_DATABASE__URL``) it is not copied
here: ``pg_dump`` is the tool for that, and the summary says so. The vector store is not
copied either: embedded Chroma must be copied while stopped, and a Chroma server's volume
likewise (docs/operations.md); the admin key file is left out on purpose (a plain secret;
the keys table keeps only hashes).
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

import app as app_pkg
from app.db.engine import safe_url, sqlite_file
from app.errors import BackupError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackedUp:
    name: str
    bytes: int
    seconds: float


def _backup_sqlite(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)  # never writes the original
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst, pages=1024)  # in steps, so a long copy does not hold the read lock throughout
        status = dst.execute("PRAGMA quick_check").fetchone()[0]
        if status != "ok":
            raise BackupError(f"the copy of {source.name} failed its integrity check: {status}")
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {source.name}: {exc}") from exc
    finally:
        dst.close()
        src.close()


def database_note(database_url: str | None) -> str | None:
    """What the operator must do about a shared database this backup does not copy (None: nothing)."""
    if database_url is None or make_url(database_url).get_backend_name() == "sqlite":
        return None
    return (
        f"the shared database {safe_url(database_url)} (keys, usage ledger, audit log, conversations) is not "
        "in this backup: back it up with pg_dump (docs/operations.md, Backup and restore)"
    )


def backup_data_dir(data_dir: Path, dest: Path, database_url: str | None = None) -> list[BackedUp]:
    """Copy every ``*.sqlite3`` of ``data_dir`` (and ``uploads/``) into ``dest``, which must be new or empty.

    ``database_url`` is the shared database: a SQLite file outside ``data_dir`` is copied too
    (as ``kb.sqlite3`` would be inside it); PostgreSQL is named in ``not_included`` instead.
    """
    if not data_dir.is_dir():
        raise BackupError(f"data directory {data_dir} does not exist (KB_DATA_DIR)")
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: back up into a new directory")
    if dest.resolve().is_relative_to(data_dir.resolve()):
        raise BackupError(f"{dest} is inside the data directory: back up somewhere else")
    dest.mkdir(parents=True, exist_ok=True)
    done = []
    sources = sorted(data_dir.glob("*.sqlite3"))
    shared = sqlite_file(database_url) if database_url else None
    if shared is not None and shared.exists() and shared.resolve() not in {p.resolve() for p in sources}:
        if any(p.name == shared.name for p in sources):
            raise BackupError(f"the database {shared} has the name of a data dir file: rename one of them")
        sources.append(shared)
    for source in sources:
        started = time.perf_counter()
        target = dest / source.name
        _backup_sqlite(source, target)
        done.append(BackedUp(source.name, target.stat().st_size, time.perf_counter() - started))
        log.info("backed up %s (%d bytes)", source.name, target.stat().st_size)
    uploads = data_dir / "uploads"
    if uploads.is_dir() and any(uploads.iterdir()):  # accepted admin uploads whose jobs have not finished
        shutil.copytree(uploads, dest / "uploads")
        size = sum(p.stat().st_size for p in (dest / "uploads").rglob("*") if p.is_file())
        done.append(BackedUp("uploads/", size, 0.0))
    not_included = ["chroma (copy it while stopped)", "admin-key.txt (a secret)"]
    note = database_note(database_url)
    if note is not None:  # `kb backup` prints it too
        not_included.append(note)
    summary = {
        "kb_version": app_pkg.__version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data_dir": str(data_dir.resolve()),
        "files": [asdict(d) for d in done],
        "not_included": not_included,
    }
    (dest / "backup.json").write_text(json.dumps(summary, indent=2) + "\n")
    return done
