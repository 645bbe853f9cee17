"""Background ingestion jobs for the admin API, durable across restarts.

An upload is written to ``<data>/uploads/<job id>/`` and its job row committed
before the API answers 202, so an accepted job survives a crash or restart: on
start, jobs left ``running`` are queued again (ingestion is idempotent, so redoing
part of one is harmless). One worker thread runs jobs in order, off the request
path, so chat keeps answering while documents are ingested.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    files TEXT NOT NULL,
    status TEXT NOT NULL,          -- queued | running | succeeded | failed
    summary TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
"""


@dataclass(frozen=True)
class Job:
    id: str
    collection: str
    files: list[str]
    status: str
    summary: dict[str, Any] | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


IngestFn = Callable[[Path, str], dict[str, Any]]


class JobQueue:
    def __init__(self, data_dir: Path, ingest: IngestFn):
        self.uploads = data_dir / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(data_dir / "jobs.sqlite3"), check_same_thread=False, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ingest = ingest
        with self._lock, self._conn:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)
            requeued = self._conn.execute("UPDATE jobs SET status = 'queued' WHERE status = 'running'").rowcount
        if requeued:
            log.warning("re-queued %d ingestion job(s) interrupted by a restart", requeued)
        self._thread = threading.Thread(target=self._run, name="kb-ingest-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the job in progress (ingestion batches are not cut), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._lock:
            self._conn.close()

    def new_job_dir(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex
        folder = self.uploads / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    def submit(self, job_id: str, collection: str, files: list[str]) -> Job:
        """Record the job (its files are already on disk) and wake the worker."""
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO jobs (id, collection, files, status, created_at) VALUES (?, ?, ?, 'queued', ?)",
                (job_id, collection, json.dumps(files), time.time()),
            )
        self._wake.set()
        job = self.get(job_id)
        assert job is not None
        return job

    def discard(self, job_id: str) -> None:
        shutil.rmtree(self.uploads / job_id, ignore_errors=True)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return Job(
            row["id"], row["collection"], json.loads(row["files"]), row["status"],
            json.loads(row["summary"]) if row["summary"] else None, row["error"],
            row["created_at"], row["started_at"], row["finished_at"],
        )  # fmt: skip

    def _next(self) -> tuple[str, str] | None:
        with self._lock, self._conn:
            row = self._conn.execute(
                "SELECT id, collection FROM jobs WHERE status = 'queued' ORDER BY created_at LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            self._conn.execute("UPDATE jobs SET status = 'running', started_at = ? WHERE id = ?", (time.time(), row[0]))
            return row[0], row[1]

    def _finish(self, job_id: str, status: str, summary: dict[str, Any] | None, error: str | None) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE jobs SET status = ?, summary = ?, error = ?, finished_at = ? WHERE id = ?",
                (status, json.dumps(summary) if summary else None, error, time.time(), job_id),
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=5)
            self._wake.clear()
            while not self._stop.is_set() and (job := self._next()) is not None:
                job_id, collection = job
                log.info("ingestion job %s into %r started", job_id, collection)
                try:
                    summary = self._ingest(self.uploads / job_id, collection)
                except Exception as exc:  # a job must never kill the worker
                    log.exception("ingestion job %s failed", job_id)
                    self._finish(job_id, "failed", None, str(exc) or type(exc).__name__)
                    self.discard(job_id)
                    continue
                nothing_ingested = not (summary["added"] or summary["updated"] or summary["unchanged"])
                status = "failed" if summary.get("failed") and nothing_ingested else "succeeded"
                self._finish(job_id, status, summary, None)
                self.discard(job_id)  # ingested: the store and manifest hold what is needed now
                log.info("ingestion job %s finished: %s", job_id, status)
