"""One file of a shared-queue job, as a worker ingests it (the task behind ingest/shared_jobs.py).

A file being ingested holds a **lease** in its row (worker + ``lease_until``), renewed by a thread
while the document is in flight. The queue's own liveness signal (procrastinate's worker heartbeat)
stops while a worker shuts down gracefully, so the queue may hand the task to a second worker while
the first is still finishing it; the lease tells the second to wait (``FileBusy``: retried later)
instead of ingesting the document again, and the first worker's final update is fenced on still
owning the file. A start that finds the file ``running`` under an expired lease means its worker
died mid-document: that is what counts towards ``max_attempts`` (a file that kills the parser's
process every time), not errors the worker caught and recorded.

Errors of the shared engines (Chroma server, database unreachable) are not the file's fault: the
file goes back to ``queued`` with the error shown, and the task is retried later (for as long as
the outage lasts). Any other exception fails the file with its message.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import InterfaceError, OperationalError

from app.db.engine import transactional
from app.db.schema import ingest_job_files as files_t
from app.db.schema import ingest_jobs as jobs_t
from app.errors import KbError
from vectorstore.store import StoreUnavailable

log = logging.getLogger(__name__)

FINAL = ("added", "updated", "unchanged", "skipped", "failed", "cancelled")
ENGINE_ERRORS = (StoreUnavailable, OperationalError, InterfaceError, httpx.TransportError)

# (folder holding the one file under its name, collection) -> the pipeline's report (IngestReport.as_dict)
IngestOne = Callable[[Path, str], dict[str, Any]]


class FileBusy(Exception):
    """Another live worker holds the file's lease: try this task again later."""


def outcome_of(report: dict[str, Any]) -> tuple[str, str | None, int]:
    """(status, error, chunks) of a one-file ingestion report."""
    if report["failed"]:
        return "failed", report["failed"][0]["error"], 0
    if report["skipped"]:
        return "skipped", report["skipped"][0].get("reason"), 0
    for status in ("added", "updated", "unchanged"):
        if report[status]:
            return status, None, int(report["chunks_written"])
    return "skipped", "no document in the file", 0


def _where(job_id: str, name: str) -> Any:
    return (files_t.c.job_id == job_id) & (files_t.c.name == name)


def _start(engine: Engine, job_id: str, name: str, worker: str, max_attempts: int, lease_s: float) -> Any:
    """Take the file (one transaction, the file row locked first): its row, or a final status to return."""
    now = time.time()
    with transactional(engine).begin() as conn:
        row = conn.execute(
            select(files_t, jobs_t.c.collection, jobs_t.c.cancel_requested)
            .join(jobs_t, jobs_t.c.id == files_t.c.job_id)
            .where(_where(job_id, name))
            .with_for_update(of=files_t)
        ).first()
        if row is None:
            log.warning("task for %s of job %s: no such file (the job was deleted)", name, job_id)
            return "missing"
        if row.status in FINAL:
            return str(row.status)  # delivered again after it finished: nothing to do
        if row.status == "running" and row.worker != worker and (row.lease_until or 0) > now:
            raise FileBusy(f"{name} is being ingested by {row.worker}")
        crashes = int(row.crashes) + (row.status == "running")  # it was taken, and no outcome was recorded
        values: dict[str, Any] = {"attempts": int(row.attempts) + 1, "crashes": crashes, "worker": worker}
        if row.cancel_requested:
            status, error = "cancelled", "the job was cancelled"
        elif crashes >= max_attempts:
            status = "failed"
            error = (
                f"gave up after {crashes} attempts: the worker ingesting it stopped each time "
                "(killed, out of memory, or the file crashes the parser)"
            )
        else:
            status, error = "running", None
            values["lease_until"] = now + lease_s
        mark(conn, job_id, name, status, error, **values)
        if status != "running":
            settle(conn, job_id)
            return status
        return row


class _Lease:
    """Renews the file's lease while its document is ingested (a thread, every third of the lease)."""

    def __init__(self, engine: Engine, job_id: str, name: str, worker: str, lease_s: float):
        self._args = (engine, job_id, name, worker, lease_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{name}", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        engine, job_id, name, worker, lease_s = self._args
        while not self._stop.wait(lease_s / 3):
            try:
                with engine.begin() as conn:
                    conn.execute(
                        files_t.update()
                        .where(_where(job_id, name), files_t.c.worker == worker, files_t.c.status == "running")
                        .values(lease_until=time.time() + lease_s)
                    )
            except Exception:  # the database may be briefly away; the lease lasts three renewals
                log.warning("could not renew the lease on %s of job %s", name, job_id, exc_info=True)


def run_file(
    engine: Engine, job_id: str, name: str, worker: str, ingest_one: IngestOne, scratch: Path,
    *, max_attempts: int = 3, lease_s: float = 30.0,
) -> str:  # fmt: skip
    """Ingest one file of a job; returns its final status (FileBusy / engine errors: try again later)."""
    row = _start(engine, job_id, name, worker, max_attempts, lease_s)
    if isinstance(row, str):
        return row
    folder = Path(tempfile.mkdtemp(prefix=f"job-{job_id[:8]}-", dir=scratch))
    try:
        path = (folder / name).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise ValueError(f"file name {name!r} leaves its folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(row.data or b"")
        with _Lease(engine, job_id, name, worker, lease_s):
            # the folder, not the file: the document's source is its name with subfolders ("hr/leave.md")
            status, error, chunks = outcome_of(ingest_one(folder, row.collection))
    except ENGINE_ERRORS as exc:  # not the file's fault: back in the queue, shown, tried again later
        with transactional(engine).begin() as conn:
            conn.execute(
                files_t.update()
                .where(_where(job_id, name), files_t.c.worker == worker)
                .values(status="queued", error=f"waiting to retry: {type(exc).__name__}: {exc}"[:500], lease_until=None)
            )
        raise
    except KbError as exc:  # the pipeline reports bad files itself: this is the whole run refusing
        status, error, chunks = "failed", str(exc)[:500], 0
    except Exception as exc:  # a bug: the file fails with its message rather than being retried for ever
        log.exception("ingesting %s of job %s failed", name, job_id)
        status, error, chunks = "failed", f"{type(exc).__name__}: {exc}"[:500], 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    with transactional(engine).begin() as conn:
        if not mark(conn, job_id, name, status, error, fence=worker, chunks=chunks):
            log.warning("job %s: %s was taken over by another worker; its outcome stands", job_id, name)
            return status
        settle(conn, job_id)
    log.info("job %s: %s %s%s", job_id, name, status, f" ({error})" if error else "")
    return status


def mark(
    conn: Connection, job_id: str, name: str, status: str, error: str | None, *, fence: str | None = None,
    **values: Any,
) -> bool:  # fmt: skip
    """Set a file's status; with ``fence``, only while that worker still holds it running. False: it did not."""
    now = time.time()
    values.update(status=status, error=error)
    if status == "running":
        values["started_at"] = now
        conn.execute(
            jobs_t.update()
            .where(jobs_t.c.id == job_id, jobs_t.c.status == "queued")
            .values(status="running", started_at=now)
        )
    else:
        values.update(finished_at=now, data=None, lease_until=None)  # the bytes are not needed any more
    where = _where(job_id, name)
    if fence is not None:
        where = where & (files_t.c.worker == fence) & (files_t.c.status == "running")
    return bool(conn.execute(files_t.update().where(where).values(**values)).rowcount)


def settle(conn: Connection, job_id: str) -> None:
    """Finish the job once none of its files is left to do (under the job row's lock: last one wins once)."""
    job = conn.execute(select(jobs_t).where(jobs_t.c.id == job_id).with_for_update()).first()
    if job is None or job.status in ("succeeded", "failed", "cancelled"):
        return
    counts: dict[str, int] = dict(
        conn.execute(
            select(files_t.c.status, func.count()).where(files_t.c.job_id == job_id).group_by(files_t.c.status)
        ).all()
    )
    if any(s not in FINAL for s in counts):
        return
    ingested = sum(counts.get(s, 0) for s in ("added", "updated", "unchanged"))
    nothing_ingested = bool(counts.get("failed")) and not ingested
    status = "cancelled" if job.cancel_requested else ("failed" if nothing_ingested else "succeeded")
    conn.execute(jobs_t.update().where(jobs_t.c.id == job_id).values(status=status, finished_at=time.time()))
    log.info("ingestion job %s finished: %s (%s)", job_id, status, counts)
