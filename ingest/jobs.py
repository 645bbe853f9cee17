"""Background ingestion jobs for the admin API, durable across restarts.

An upload is written to ``<data>/uploads/<job id>/`` and its job row committed
before the API answers 202, so an accepted job survives a crash or restart: on
start, jobs left ``running`` are queued again (ingestion is idempotent, so redoing
part of one is harmless), but not for ever: a job interrupted ``MAX_ATTEMPTS`` times
(one that kills the server, say) fails instead of re-running at every start. One
worker thread runs jobs in order, off the request path, so chat keeps answering
while documents are ingested. A running job reports its progress in its row, and
checks there whether someone (``DELETE /admin/jobs/{id}``, ``kb jobs cancel``, from
any process) asked to cancel it.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vectorstore.sqlite_db import SqliteDb

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    files TEXT NOT NULL,
    status TEXT NOT NULL,          -- queued | running | succeeded | failed | cancelled
    summary TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
"""
# Columns added after the first release: added to an existing file on open.
_ADDED_COLUMNS = {
    "progress": "TEXT",
    "attempts": "INTEGER NOT NULL DEFAULT 0",
    "cancel_requested": "INTEGER NOT NULL DEFAULT 0",
}
MAX_ATTEMPTS = 3
_PROGRESS_EVERY_S = 0.5


class JobCancelled(Exception):
    """Raised inside a running ingestion when its job was asked to stop."""


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
    progress: dict[str, Any] | None = None
    attempts: int = 0
    cancel_requested: bool = False
    workers: list[str] = field(default_factory=list)  # shared queue: the workers that ingested its files
    results: list[dict[str, Any]] = field(default_factory=list)  # shared queue: each file's status and error

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


IngestFn = Callable[..., dict[str, Any]]  # (folder, collection, progress=JobProgress) -> summary


class JobProgress:
    """The pipeline's Progress for a job: counts into the job row (at most every 0.5 s), and the cancel check."""

    def __init__(self, queue: JobQueue, job_id: str):
        self._queue, self._job_id = queue, job_id
        self.files_total = self.files_done = self.chunks_written = 0
        self._last = float("-inf")  # the first report goes out at once, however long the machine has been up

    def start(self, total_files: int) -> None:
        self.files_total = total_files
        self._report(force=True)

    def file_done(self, source: str, outcome: str, chunks: int) -> None:
        self.files_done += 1
        self._report()

    def embedded(self, chunks: int) -> None:
        self.chunks_written += chunks
        self._report()

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < _PROGRESS_EVERY_S:
            return
        self._last = now
        if self._queue.report_progress(self._job_id, self.counts()):
            raise JobCancelled(self._job_id)

    def counts(self) -> dict[str, int]:
        return {"files_total": self.files_total, "files_done": self.files_done, "chunks": self.chunks_written}


class JobQueue:
    def __init__(self, data_dir: Path, ingest: IngestFn | None, *, recover: bool = True):
        """``recover``: re-queue jobs a dead server left running (only the server does; ``kb jobs`` does not)."""
        self.uploads = data_dir / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self._db = SqliteDb(data_dir / "jobs.sqlite3", _SCHEMA)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ingest = ingest
        with self._db.tx() as conn:
            have = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
            for column, decl in _ADDED_COLUMNS.items():
                if column not in have:
                    conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} {decl}")
        if recover:
            self._recover()
        self._thread = threading.Thread(target=self._run, name="kb-ingest-worker", daemon=True)

    def _recover(self) -> None:
        with self._db.tx() as conn:
            given_up = conn.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? "
                "WHERE status = 'running' AND attempts >= ?",
                (
                    time.time(),
                    f"interrupted {MAX_ATTEMPTS} times (the server stopped while ingesting it); not retried again: "
                    "check the server log for what stopped it, then upload the files again",
                    MAX_ATTEMPTS,
                ),
            ).rowcount
            requeued = conn.execute("UPDATE jobs SET status = 'queued' WHERE status = 'running'").rowcount
        if requeued:
            log.warning("re-queued %d ingestion job(s) interrupted by a restart", requeued)
        if given_up:
            log.error("gave up %d ingestion job(s) interrupted %d times", given_up, MAX_ATTEMPTS)

    def start(self) -> None:
        self._thread.start()
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the job in progress (ingestion batches are not cut), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._db.close()

    def new_job_dir(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex
        folder = self.uploads / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    def submit(self, job_id: str, collection: str, files: list[str], folder: Path | None = None) -> Job:
        """Record the job (its files are already on disk) and wake the worker."""
        with self._db.tx() as conn:
            conn.execute(
                "INSERT INTO jobs (id, collection, files, status, created_at) VALUES (?, ?, ?, 'queued', ?)",
                (job_id, collection, json.dumps(files), time.time()),
            )
        self._wake.set()
        job = self.get(job_id)
        assert job is not None
        return job

    def discard(self, job_id: str, folder: Path | None = None) -> None:
        shutil.rmtree(self.uploads / job_id, ignore_errors=True)

    def get(self, job_id: str) -> Job | None:
        with self._db.tx() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return self._job(row)

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(
            row["id"], row["collection"], json.loads(row["files"]), row["status"],
            json.loads(row["summary"]) if row["summary"] else None, row["error"],
            row["created_at"], row["started_at"], row["finished_at"],
            json.loads(row["progress"]) if row["progress"] else None, row["attempts"], bool(row["cancel_requested"]),
        )  # fmt: skip

    def list(self, limit: int = 50) -> list[Job]:
        with self._db.tx() as conn:
            rows = conn.execute("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [self._job(r) for r in rows]

    def cancel(self, job_id: str) -> Job | None:
        """A queued job is cancelled at once; a running one stops at its next progress report (within seconds)."""
        with self._db.tx() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?, error = 'cancelled before it started' "
                "WHERE id = ? AND status = 'queued'",
                (time.time(), job_id),
            )
            conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (job_id,))
        job = self.get(job_id)
        if job is not None and job.status == "cancelled":
            self.discard(job_id)
        return job

    def report_progress(self, job_id: str, progress: dict[str, Any]) -> bool:
        """Store the job's progress; True when it was asked to cancel."""
        with self._db.tx() as conn:
            conn.execute("UPDATE jobs SET progress = ? WHERE id = ?", (json.dumps(progress), job_id))
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def _next(self) -> tuple[str, str] | None:
        with self._db.tx() as conn:
            row = conn.execute(
                "SELECT id, collection FROM jobs WHERE status = 'queued' ORDER BY created_at LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?",
                (time.time(), row[0]),
            )
            return row[0], row[1]

    def _finish(self, job_id: str, status: str, summary: dict[str, Any] | None, error: str | None) -> None:
        with self._db.tx() as conn:
            conn.execute(
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
                    assert self._ingest is not None, "a JobQueue without an ingest function cannot run jobs"
                    progress = JobProgress(self, job_id)
                    summary = self._ingest(self.uploads / job_id, collection, progress=progress)
                    self.report_progress(job_id, progress.counts())  # the last counts, unthrottled
                except JobCancelled:
                    log.warning("ingestion job %s cancelled", job_id)
                    self._finish(job_id, "cancelled", None, "cancelled while running; documents already written stay")
                    self.discard(job_id)
                    continue
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
