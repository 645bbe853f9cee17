"""The shared ingestion queue (KB_QUEUE__BACKEND=postgres): procrastinate on the shared PostgreSQL database.

Why procrastinate (over Celery, RQ, arq): PostgreSQL already holds the truth that workers share
(manifest, BM25 chunks, jobs), so the queue commits in the same database, in the same transaction
as the upload it runs (nothing accepted is ever half-queued, and there is no second broker whose
persistence has to be configured right: a Redis without AOF forgets its queue on restart). A
worker that dies is noticed by its missing heartbeat (``stalled_after_s``), not by a visibility
timeout that either re-runs long documents while they still run or waits an hour; its task goes
back to the queue for another worker. Job state is plain SQL, readable from every host.

``kb worker`` runs :func:`run_worker`: one process per core, the embedding model loaded once, two
documents in flight by default (``KB_QUEUE__CONCURRENCY``): one embeds while the other waits on the
Chroma server or the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from app.errors import ConfigurationError, WorkerStoppedError
from ingest.jobs import JobQueue
from ingest.shared_jobs import QUEUE, TASK_NAME, SharedJobs
from ingest.shared_tasks import ENGINE_ERRORS, FileBusy
from vectorstore.writers import pid_alive

if TYPE_CHECKING:
    from app.bootstrap import Components
    from app.settings import Settings

log = logging.getLogger(__name__)

# The ingestion job queue a server or worker runs: in-process threads (embedded default) or the shared
# task queue on PostgreSQL (several hosts). Both take the same calls from the admin API.
Jobs = JobQueue | SharedJobs


def conninfo(database_url: str) -> str:
    """The libpq URL of the shared database (procrastinate speaks psycopg directly)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ConfigurationError(
            "the shared ingestion queue (KB_QUEUE__BACKEND=postgres, kb worker) needs PostgreSQL: set "
            "KB_DATABASE__URL=postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"
        )
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def queue_app(settings: Settings) -> Any:
    """A procrastinate App on the shared database (not opened: deferring through our own connection needs no pool)."""
    try:
        import procrastinate
    except ModuleNotFoundError as exc:
        raise ConfigurationError("the shared ingestion queue needs procrastinate: pip install 'kb[postgres]'") from exc
    # A connection not had within this time fails the call: a worker that cannot reach the database stops
    # (its supervisor restarts it) instead of waiting on psycopg's default 30 s per attempt.
    wait_s = max(5.0, settings.database.connect_timeout_s * 2)
    connector = procrastinate.PsycopgConnector(conninfo=conninfo(settings.database_url), timeout=wait_s)
    return procrastinate.App(connector=connector)


def shared_jobs(components: Components, app: Any | None = None) -> SharedJobs:
    settings = components.settings
    return SharedJobs(
        components.db,
        app if app is not None else queue_app(settings),
        settings.data_dir / "staging",
        max_attempts=settings.queue.max_attempts,
        lease_s=settings.queue.stalled_after_s,
    )


def open_jobs(components: Components, *, serve: bool) -> Jobs:
    """The ingestion jobs of this deployment: the shared queue, or the API process's own (``serve``: run them)."""
    settings = components.settings
    if settings.queue.backend == "postgres":
        return shared_jobs(components)
    # recover only in the server: it owns the jobs it runs; `kb jobs` only reads and flags them
    return JobQueue(settings.data_dir, components.ingest_folder if serve else None, recover=serve)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _rescue_stalled(app: Any, stalled_after_s: float) -> None:
    """Put back in the queue the documents of workers that stopped sending heartbeats (killed, host lost)."""
    while True:
        await asyncio.sleep(max(1.0, stalled_after_s / 3))
        try:
            stalled = await app.job_manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=stalled_after_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # the database may be briefly away: try again on the next round
            log.warning("could not check for stalled ingestion tasks", exc_info=True)
            continue
        for job in stalled:
            try:
                await app.job_manager.retry_job(job)
                log.warning("the worker of task %s (%s) stopped: queued it again", job.id, job.task_kwargs)
            except asyncio.CancelledError:
                raise
            except Exception:  # another worker's rescue was first
                log.debug("task %s was already rescued", job.id, exc_info=True)


def _scratch_dir(root: Path) -> Path:
    """This process's folder for the document it ingests; folders of dead workers on this host are removed."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in root.iterdir():
        if folder.name.isdigit() and not pid_alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)  # a copy of a document its killed worker was ingesting
    mine = root / str(os.getpid())
    mine.mkdir(exist_ok=True)
    return mine


def run_worker(components: Components, *, name: str | None = None, burst: bool = False) -> None:
    """Take documents from the shared queue until stopped (SIGTERM/SIGINT finish the current one first).

    ``burst``: stop when the queue is empty (scripts, tests, a batch job).
    """
    import procrastinate

    settings = components.settings
    if settings.vectorstore.mode == "embedded":
        raise ConfigurationError(
            "kb worker writes to the shared vector store: set KB_VECTORSTORE__MODE=http and "
            "KB_VECTORSTORE__HOST/PORT (a 'chroma run' server); embedded Chroma lives inside one process"
        )
    app = queue_app(settings)
    jobs = shared_jobs(components, app)
    me = name or worker_name()
    scratch = _scratch_dir(Path(settings.data_dir) / "worker")
    _ = components.ingest_pipeline  # loads the embedding model once, before the first task
    own = threading.local()  # a pipeline per task thread (`concurrency` documents at once): a run keeps state

    def ingest_one(folder: Path, collection: str) -> dict[str, Any]:
        if not hasattr(own, "pipeline"):
            own.pipeline = components.new_ingest_pipeline()
        return dict(own.pipeline.ingest([folder], collection).as_dict())

    # Raised here: another worker still holds the file, or an engine is away. Try again while that lasts;
    # everything else is the file's own outcome, recorded by run_file (ingest/shared_tasks.py).
    retry = procrastinate.RetryStrategy(wait=10, retry_exceptions={FileBusy, *ENGINE_ERRORS})

    @app.task(name=TASK_NAME, queue=QUEUE, retry=retry)  # type: ignore[untyped-decorator]  # procrastinate's
    def ingest_file(job_id: str, name: str) -> None:
        jobs.run_file(job_id, name, me, ingest_one, scratch)

    q = settings.queue
    asked_to_stop = asyncio.Event()

    async def main() -> None:
        async with app.open_async():
            rescue = asyncio.create_task(_rescue_stalled(app, q.stalled_after_s))
            work = asyncio.create_task(
                app.run_worker_async(
                    queues=[QUEUE], name=me, concurrency=q.concurrency, wait=not burst, delete_jobs="successful",
                    update_heartbeat_interval=q.heartbeat_s, stalled_worker_timeout=q.stalled_after_s,
                    install_signal_handlers=False,
                )
            )  # fmt: skip

            def stop() -> None:  # cancelling procrastinate's worker finishes the documents in flight first
                asked_to_stop.set()
                work.cancel()

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop)
            log.info("kb worker %s taking documents from the %r queue", me, QUEUE)
            try:
                await work
            except asyncio.CancelledError:
                if not asked_to_stop.is_set():
                    raise
            finally:
                rescue.cancel()

    cause: BaseException | None = None
    try:
        asyncio.run(main())
    except Exception as exc:  # the database or the queue failed under the worker
        cause = exc
    if cause is not None or (not burst and not asked_to_stop.is_set()):
        why = f"{type(cause).__name__}: {str(cause).strip()}" if cause else "the queue stopped it"
        raise WorkerStoppedError(
            f"kb worker {me} stopped without being asked ({why}; was the database lost? see the log above). "
            "A supervisor should start it again (docker compose: restart unless-stopped; systemd: Restart=always)"
        ) from cause
    log.info("kb worker %s stopped", me)
