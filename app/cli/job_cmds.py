"""kb jobs: the admin API's ingestion jobs (uploads), seen and cancelled from the command line."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer
from rich.table import Column, Table

from app.bootstrap import Components
from app.cli.common import cli, console, out, setup
from app.queue import open_jobs
from ingest.jobs import Job, JobQueue
from ingest.shared_jobs import SharedJobs

jobs_cli = typer.Typer(help="List, show and cancel the admin API's ingestion jobs.", no_args_is_help=True)
cli.add_typer(jobs_cli, name="jobs")


def _queue() -> JobQueue | SharedJobs:
    return open_jobs(Components(setup()), serve=False)


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds") if ts else "-"


def _progress(job: Job) -> str:
    p = job.progress or {}
    return f"{p.get('files_done', 0)}/{p.get('files_total', '?')} files, {p.get('chunks', 0)} chunks" if p else "-"


@jobs_cli.command("list")
def jobs_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The 50 newest jobs: status, progress, collection."""
    jobs = _queue().list()
    if as_json:
        out.print_json(json.dumps([j.as_dict() for j in jobs]))
        return
    table = Table(
        Column("id", no_wrap=True, min_width=32),  # the whole id: `kb jobs cancel` needs it
        "collection",
        Column("status", no_wrap=True),
        "progress",
        "created",
    )
    for j in jobs:
        table.add_row(j.id, j.collection, j.status, _progress(j), _when(j.created_at))
    out.print(table)


@jobs_cli.command("show")
def jobs_show(job_id: Annotated[str, typer.Argument(help="Job id, as `kb jobs list` shows it.")]) -> None:
    """One job in full (JSON): files, status, progress, summary or error."""
    job = _queue().get(job_id)
    if job is None:
        console.print(f"[red]error[/red]: no ingestion job {job_id!r} (see: kb jobs list)")
        raise typer.Exit(1)
    out.print_json(json.dumps(job.as_dict()))


@jobs_cli.command("cancel")
def jobs_cancel(job_id: Annotated[str, typer.Argument(help="Job id, as `kb jobs list` shows it.")]) -> None:
    """Cancel a job: a queued one at once, a running one at its next progress report (within a second or so;
    on the shared queue, the documents being ingested finish and the others are cancelled).

    Documents a running job has already written stay; ingest again or delete them.
    """
    queue = _queue()
    job = queue.cancel(job_id)
    if job is None:
        console.print(f"[red]error[/red]: no ingestion job {job_id!r} (see: kb jobs list)")
        raise typer.Exit(1)
    if job.status == "cancelled":
        out.print(f"cancelled job {job_id}")
    elif job.status == "running" and isinstance(queue, SharedJobs):
        out.print(f"cancelled the files of job {job_id} not started; those being ingested finish (kb jobs show)")
    elif job.status == "running":
        out.print(f"asked job {job_id} to stop; the server stops it within a second or so (see: kb jobs show)")
    else:
        out.print(f"job {job_id} has already ended: {job.status}")
