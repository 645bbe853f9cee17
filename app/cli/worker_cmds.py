"""kb worker and kb ingest --queue: ingestion on the shared queue, from any host."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from app.bootstrap import Components
from app.cli.common import cli, console, fail, out, setup
from app.errors import KbError
from app.queue import open_jobs, run_worker
from ingest.files import iter_files
from ingest.jobs import Job


@cli.command()
def worker(
    name: Annotated[str | None, typer.Option(help="This worker's name in job records (default: HOST:PID).")] = None,
    burst: Annotated[bool, typer.Option(help="Stop once the queue is empty instead of waiting for work.")] = False,
) -> None:
    """Ingest documents from the shared queue (KB_QUEUE__BACKEND=postgres) until stopped.

    Run one per core on as many hosts as you like: uploads and `kb ingest --queue` jobs are split per
    document, so workers share a large upload. Needs KB_DATABASE__URL (PostgreSQL) and a Chroma
    server (KB_VECTORSTORE__MODE=http). Each worker has KB_QUEUE__CONCURRENCY (2) documents in flight.
    SIGTERM or Ctrl-C finishes the documents being ingested first; a
    worker killed outright has its document taken over by another worker within
    KB_QUEUE__STALLED_AFTER_S seconds.
    """
    settings = setup()
    if settings.queue.backend != "postgres":
        console.print(
            "[red]error[/red]: kb worker serves the shared queue: set KB_QUEUE__BACKEND=postgres and "
            "KB_DATABASE__URL=postgresql+psycopg://... (with the default local queue the API ingests uploads itself)"
        )
        raise typer.Exit(2)
    components = Components(settings)
    try:
        run_worker(components, name=name, burst=burst)
    except KbError as exc:
        raise fail(exc) from exc
    finally:
        components.close()


def enqueue(paths: list[Path], collection: str, *, wait: bool) -> None:
    """`kb ingest --queue`: hand the files to the deployment's job queue, as an upload would."""
    settings = setup()
    components = Components(settings)
    try:
        jobs = open_jobs(components, serve=False)
        job_id, folder = jobs.new_job_dir()
        names = []
        try:
            for path, source in iter_files(paths):
                target = folder / source
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                names.append(source)
        except BaseException:
            jobs.discard(job_id, folder)
            raise
        if not names:
            jobs.discard(job_id, folder)
            console.print("[red]error[/red]: no files to ingest under those paths (hidden files are skipped)")
            raise typer.Exit(2)
        job = jobs.submit(job_id, collection, names, folder)
        out.print(f"queued job {job.id}: {len(names)} files into {collection!r} (see: kb jobs show {job.id})")
        while wait and job.status in ("queued", "running"):
            time.sleep(1.0)
            job = jobs.get(job_id) or job
            p = job.progress or {}
            console.print(f"{job.status}: {p.get('files_done', 0)}/{p.get('files_total', len(names))} files", end="\r")
    except KbError as exc:
        raise fail(exc) from exc
    finally:
        components.close()
    if wait:
        _report(job)


def _report(job: Job) -> None:
    summary = job.summary or {}
    out.print(
        f"job {job.id} {job.status}: {summary.get('added', 0)} added, {summary.get('updated', 0)} updated, "
        f"{summary.get('unchanged', 0)} unchanged, {len(summary.get('failed', []))} failed"
        + (f" (workers: {', '.join(job.workers)})" if job.workers else "")
    )
    for failure in summary.get("failed", []):
        out.print(f"[red]failed[/red] {failure['source']}: {failure['error']}")
    raise typer.Exit(0 if job.status == "succeeded" and not summary.get("failed") else 1)
