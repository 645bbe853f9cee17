"""Ingestion jobs on the shared queue: uploads in PostgreSQL, one task per document, workers on any host.

With ``KB_QUEUE__BACKEND=postgres`` an upload leaves the API host at once: its files' bytes, the
job row and one procrastinate task per file are committed in **one** PostgreSQL transaction
before the API answers 202 (the task rows are written through the same connection), so an
accepted upload is never half-queued and never depends on a host's disk. ``kb worker``
processes on any host take the tasks, a document each, so several workers share one
large upload; the job's status is the sum of its files' rows, readable from every host.

A file's task (ingest/shared_tasks.py) is idempotent and bounded: a task delivered again for a
file already finished does nothing; a file whose worker died ``max_attempts`` times (a file that kills
the parser's process, say) is failed with that reason instead of being retried for ever. Two workers
never write the same document at once: procrastinate's ``lock`` (collection + name), the file's lease
and the manifest's per-document claim (vectorstore/writers.py) each see to it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select

from app.db.engine import transactional
from app.db.schema import ingest_job_files as files_t
from app.db.schema import ingest_jobs as jobs_t
from app.errors import ConfigurationError, InvalidRequestError
from ingest.jobs import Job
from ingest.shared_tasks import FINAL, IngestOne, run_file, settle

log = logging.getLogger(__name__)

TASK_NAME = "kb.ingest_file"
QUEUE = "ingest"


class SharedJobs:
    """The admin API's and ``kb jobs``' view of the shared queue (same methods as ingest.jobs.JobQueue)."""

    def __init__(
        self, engine: Engine, queue_app: Any, staging_dir: Path, *, max_attempts: int = 3, lease_s: float = 30.0
    ):
        if engine.dialect.name != "postgresql":
            raise ConfigurationError(
                "KB_QUEUE__BACKEND=postgres needs the shared database on PostgreSQL: set KB_DATABASE__URL="
                "postgresql+psycopg://... (or KB_QUEUE__BACKEND=local for one host)"
            )
        self._engine = engine
        self._app = queue_app  # a procrastinate.App (app/queue.py)
        self._staging = staging_dir
        self.max_attempts = max_attempts
        self.lease_s = lease_s  # a file being ingested is renewed this often x3; unrenewed, its worker is gone

    # --- the API side: accept, show, cancel --------------------------------------------------

    def start(self) -> None:  # the workers run the jobs; nothing to start in the API process
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def new_job_dir(self) -> tuple[str, Path]:
        """A job id and a private staging folder for the upload (removed once the files are in the database)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        return uuid.uuid4().hex, Path(tempfile.mkdtemp(prefix="upload-", dir=self._staging))

    def discard(self, job_id: str, folder: Path | None = None) -> None:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def submit(self, job_id: str, collection: str, names: list[str], folder: Path | None = None) -> Job:
        """Commit the job, its files' bytes and one task per file in one transaction; then drop the staging copy."""
        assert folder is not None, "the shared queue reads the upload from its staging folder"
        if not names:
            self.discard(job_id, folder)
            raise InvalidRequestError(
                "no files to ingest (hidden files and folders are skipped)", code=InvalidRequestError.NO_FILES
            )
        try:
            with transactional(self._engine).begin() as conn:
                conn.execute(
                    jobs_t.insert().values(id=job_id, collection=collection, status="queued", created_at=time.time())
                )
                for name in names:
                    data = (folder / name).read_bytes()
                    conn.execute(
                        files_t.insert().values(job_id=job_id, name=name, size=len(data), data=data, status="queued")
                    )
                raw = conn.connection.driver_connection  # procrastinate writes its task rows in our transaction
                for name in names:
                    self._app.configure_task(TASK_NAME, queue=QUEUE, lock=f"{collection}/{name}", connection=raw).defer(
                        job_id=job_id, name=name
                    )
        finally:
            self.discard(job_id, folder)
        log.info("queued ingestion job %s: %d files into %r", job_id, len(names), collection)
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(jobs_t).where(jobs_t.c.id == job_id)).first()
            return self._job(conn, row._mapping) if row else None

    def list(self, limit: int = 50) -> list[Job]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(jobs_t).order_by(jobs_t.c.created_at.desc()).limit(limit)).all()
            return [self._job(conn, r._mapping) for r in rows]

    def cancel(self, job_id: str) -> Job | None:
        """Files not started are cancelled at once; documents being ingested finish (one document each)."""
        with transactional(self._engine).begin() as conn:  # files, then the job: run_file's lock order
            conn.execute(
                files_t.update()
                .where(files_t.c.job_id == job_id, files_t.c.status == "queued")
                .values(status="cancelled", error="cancelled before it started", data=None, finished_at=time.time())
            )
            found = conn.execute(
                jobs_t.update().where(jobs_t.c.id == job_id).values(cancel_requested=1).returning(jobs_t.c.id)
            ).first()
            if found is None:
                return None
            settle(conn, job_id)
        return self.get(job_id)

    @staticmethod
    def _job(conn: Connection, row: Any) -> Job:
        files = [
            dict(r._mapping)
            for r in conn.execute(
                select(
                    files_t.c.name, files_t.c.status, files_t.c.error, files_t.c.chunks, files_t.c.worker,
                    files_t.c.attempts, files_t.c.size,
                )
                .where(files_t.c.job_id == row["id"])
                .order_by(files_t.c.name)
            )
        ]  # fmt: skip
        done = [f for f in files if f["status"] in FINAL]
        summary = None
        if row["status"] in ("succeeded", "failed", "cancelled"):
            summary = {
                "collection": row["collection"],
                **{k: sum(1 for f in files if f["status"] == k) for k in ("added", "updated", "unchanged")},
                "deleted": 0,
                "skipped": [
                    {"source": f["name"], "reason": f["error"] or ""} for f in files if f["status"] == "skipped"
                ],
                "failed": [{"source": f["name"], "error": f["error"] or ""} for f in files if f["status"] == "failed"],
                "chunks_written": sum(f["chunks"] for f in files if f["status"] in ("added", "updated")),
                "seconds": round((row["finished_at"] or 0) - (row["started_at"] or row["created_at"]), 3),
            }
        return Job(
            row["id"], row["collection"], [f["name"] for f in files], row["status"], summary, row["error"],
            row["created_at"], row["started_at"], row["finished_at"],
            {"files_total": len(files), "files_done": len(done), "chunks": sum(f["chunks"] for f in done)},
            max((f["attempts"] for f in files), default=0), bool(row["cancel_requested"]),
            workers=sorted({f["worker"] for f in files if f["worker"]}),
            results=[{"source": f["name"], "status": f["status"], "error": f["error"], "worker": f["worker"],
                      "attempts": f["attempts"]} for f in files],
        )  # fmt: skip

    # --- the worker side: one file (ingest/shared_tasks.py) -------------------------------------------

    def run_file(self, job_id: str, name: str, worker: str, ingest_one: IngestOne, scratch: Path) -> str:
        """Ingest one file of a job (a task); returns the file's final status."""
        return run_file(self._engine, job_id, name, worker, ingest_one, scratch,
                        max_attempts=self.max_attempts, lease_s=self.lease_s)  # fmt: skip
