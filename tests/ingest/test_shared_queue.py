"""The shared ingestion queue's bookkeeping on a real PostgreSQL (ingest/shared_jobs.py): what a file that
kills its worker every time does to its job, and that a task delivered twice does nothing the second time.

The worker's death is real: each attempt runs in a process that is SIGKILLed in the middle of the
document (as a parser crash or the OOM killer would). tests/operations/test_multi_host.py runs the whole thing
with `kb worker` processes, the procrastinate queue and its stalled-worker rescue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from app.db import open_database
from app.queue import queue_app
from app.settings import Settings
from ingest.shared_jobs import SharedJobs
from ingest.shared_tasks import FileBusy
from tests.servers import UnixProxy

CRASH = """
import os, signal, sys
from pathlib import Path
from app.db import open_database
from app.queue import queue_app
from app.settings import Settings
from ingest.shared_jobs import SharedJobs

settings = Settings(_env_file=None, data_dir=Path(sys.argv[1]), database={"url": sys.argv[2]})
jobs = SharedJobs(open_database(settings), queue_app(settings), Path(sys.argv[1]) / "staging", max_attempts=2,
                  lease_s=1.0)

def parser_crash(folder, collection):  # the process dies in the middle of the document
    os.kill(os.getpid(), signal.SIGKILL)

jobs.run_file(sys.argv[3], "poison.md", "crashing-worker", parser_crash, Path(sys.argv[1]))
"""


@pytest.fixture
def shared(tmp_path: Path, postgres_url: str) -> tuple[Settings, Engine, SharedJobs]:
    settings = Settings(_env_file=None, data_dir=tmp_path, database={"url": postgres_url})  # type: ignore[call-arg]
    engine = open_database(settings)
    yield settings, engine, SharedJobs(engine, queue_app(settings), tmp_path / "staging", max_attempts=2, lease_s=1.0)
    engine.dispose()


@pytest.fixture
def pg_proxy(tmp_path: Path, postgres_url: str) -> Iterator[tuple[UnixProxy, str]]:
    """The test database behind a proxy this test can cut (an outage) and restore; yields it and its URL."""
    url = make_url(postgres_url)
    proxy = UnixProxy(Path(url.query["host"]) / ".s.PGSQL.5432", tmp_path / "pg" / ".s.PGSQL.5432")
    proxy.listen.parent.mkdir()
    proxy.restore()
    yield proxy, url.update_query_dict({"host": str(proxy.listen.parent)}).render_as_string(hide_password=False)
    proxy.cut()


def _submit(jobs: SharedJobs, files: dict[str, str]) -> str:
    job_id, folder = jobs.new_job_dir()
    for name, text in files.items():
        (folder / name).write_text(text)
    jobs.submit(job_id, "hr", list(files), folder)
    assert not folder.exists()  # the staging copy is gone: the bytes are in the database now
    return job_id


def _report(added: int = 0, unchanged: int = 0, chunks: int = 0) -> dict[str, Any]:
    return {"added": added, "updated": 0, "unchanged": unchanged, "skipped": [], "failed": [], "chunks_written": chunks}


def test_a_file_that_kills_its_worker_every_time_fails_after_bounded_attempts(
    shared: tuple[Settings, Engine, SharedJobs], tmp_path: Path, postgres_url: str
) -> None:
    _, _, jobs = shared
    job_id = _submit(jobs, {"leave.md": "# Leave\n\n27 days.", "poison.md": "# Poison\n\nkills the parser"})
    for attempt in (1, 2):
        crashed = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path), postgres_url, job_id], timeout=120)
        assert crashed.returncode == -signal.SIGKILL
        poison = {r["source"]: r for r in jobs.get(job_id).results}["poison.md"]  # type: ignore[union-attr]
        assert (poison["status"], poison["attempts"], poison["worker"]) == ("running", attempt, "crashing-worker")

    def must_not_run(folder: Path, collection: str) -> dict[str, Any]:
        raise AssertionError("a file past its attempts must not be parsed again")

    # Until its lease runs out, the file may still be in the hands of a live worker (one finishing during
    # a graceful stop): another worker must wait, not ingest it a second time.
    with pytest.raises(FileBusy, match="crashing-worker"):
        jobs.run_file(job_id, "poison.md", "w2", must_not_run, tmp_path)
    time.sleep(1.1)  # the lease (1 s here) of the killed worker runs out
    assert jobs.run_file(job_id, "poison.md", "w2", must_not_run, tmp_path) == "failed"
    seen: list[tuple[Path, list[str]]] = []

    def ingest(folder: Path, collection: str) -> dict[str, Any]:
        seen.append((folder, [p.name for p in folder.iterdir()]))
        return _report(added=1, chunks=3)

    assert jobs.run_file(job_id, "leave.md", "w2", ingest, tmp_path) == "added"  # the queue goes on
    ((folder, names),) = seen
    assert names == ["leave.md"] and not folder.exists()  # a folder of its own, removed after
    job = jobs.get(job_id)
    assert job is not None and job.status == "succeeded", job
    assert job.summary is not None and job.summary["added"] == 1 and job.summary["chunks_written"] == 3
    (failed,) = job.summary["failed"]
    assert failed["source"] == "poison.md" and "gave up after 2 attempts" in failed["error"]
    # Delivered again (a retried task after all): nothing runs, nothing changes.
    assert jobs.run_file(job_id, "leave.md", "w3", must_not_run, tmp_path) == "added"
    assert jobs.get(job_id) == job


def test_cancel_stops_the_files_not_started(shared: tuple[Settings, Engine, SharedJobs], tmp_path: Path) -> None:
    _, _, jobs = shared
    job_id = _submit(jobs, {"a.md": "# A\n\ntext", "b.md": "# B\n\ntext"})
    assert jobs.run_file(job_id, "a.md", "w1", lambda f, c: _report(added=1), tmp_path) == "added"
    cancelled = jobs.cancel(job_id)
    assert cancelled is not None and cancelled.status == "cancelled" and cancelled.cancel_requested
    assert {r["source"]: r["status"] for r in cancelled.results} == {"a.md": "added", "b.md": "cancelled"}
    assert jobs.run_file(job_id, "b.md", "w1", lambda f, c: _report(added=1), tmp_path) == "cancelled"
    assert jobs.cancel("no-such-job") is None and jobs.get("no-such-job") is None


def test_the_shared_queue_refuses_sqlite(tmp_path: Path) -> None:
    from app.errors import ConfigurationError

    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    engine = open_database(settings)
    try:
        with pytest.raises(ConfigurationError, match="needs the shared database on PostgreSQL"):
            SharedJobs(engine, None, tmp_path)
    finally:
        engine.dispose()
    assert os.environ.get("KB_QUEUE__BACKEND") is None


def test_postgres_down_refuses_uploads_with_503_and_keeps_what_it_accepted(
    tmp_path: Path, pg_proxy: tuple[Any, str], embedder: Any
) -> None:
    """While the database is away an upload gets a 503 naming it; an upload accepted before runs once it is back."""
    from sqlalchemy import text

    from app.bootstrap import Components
    from app.queue import run_worker
    from tests.chroma_server import chroma_server
    from tests.servers import api_client

    proxy, via_proxy = pg_proxy
    with chroma_server(tmp_path) as chroma:
        settings = Settings(
            _env_file=None, data_dir=tmp_path / "api", queue={"backend": "postgres"},
            database={"url": via_proxy, "connect_timeout_s": 2},
            vectorstore={"mode": "http", "host": chroma.host, "port": chroma.port},
        )  # type: ignore[call-arg]  # fmt: skip
        components = Components(settings, embedder=embedder)
        try:
            with api_client(components) as client:
                leave = [("files", ("leave.md", b"# Leave\n\nEmployees get 27 days of annual leave.\n"))]
                accepted = client.post("/admin/collections/hr/documents", files=leave)
                assert accepted.status_code == 202, accepted.text
                proxy.cut()
                refused = client.post("/admin/collections/hr/documents", files=leave)
                assert refused.status_code == 503, refused.text
                error = refused.json()["error"]
                assert error["code"] == "database_unavailable" and "database" in error["message"]
                assert list((tmp_path / "api" / "staging").iterdir()) == []  # no half-kept upload on disk
                proxy.restore()
                job = client.get(f"/admin/jobs/{accepted.json()['id']}").json()
                assert job["status"] == "queued", job  # kept through the outage, waiting for a worker
                with components.db.connect() as conn:
                    tasks = conn.execute(text("SELECT status FROM procrastinate_jobs")).scalars().all()
                assert tasks == ["todo"]  # only the accepted upload's task: the refused one left nothing
                run_worker(components, name="w1", burst=True)  # a worker comes by once the database is back
                job = client.get(f"/admin/jobs/{job['id']}").json()
                assert job["status"] == "succeeded" and job["workers"] == ["w1"], job
                hits = client.post("/search", json={"query": "annual leave days", "collection": "hr"}).json()
                assert hits["results"][0]["source"] == "leave.md"
        finally:
            components.close()


def test_an_engine_outage_sends_the_file_back_to_the_queue_without_counting_it(
    shared: tuple[Settings, Engine, SharedJobs], tmp_path: Path
) -> None:
    """The Chroma server away for a while is not the file's fault: it waits, shown, and is not given up on."""
    from vectorstore.store import StoreUnavailable

    _, _, jobs = shared  # max_attempts=2: two counted failures would fail the file

    def chroma_away(folder: Path, collection: str) -> dict[str, Any]:
        raise StoreUnavailable("the vector store at http://chroma:8000 does not answer")

    job_id = _submit(jobs, {"leave.md": "# Leave\n\n27 days."})
    for _ in range(3):
        with pytest.raises(StoreUnavailable):  # raised for the queue to try the task again later
            jobs.run_file(job_id, "leave.md", "w1", chroma_away, tmp_path)
        (waiting,) = jobs.get(job_id).results  # type: ignore[union-attr]
        assert waiting["status"] == "queued" and "does not answer" in waiting["error"], waiting
    assert jobs.run_file(job_id, "leave.md", "w1", lambda f, c: _report(added=1, chunks=2), tmp_path) == "added"
    job = jobs.get(job_id)
    assert job is not None and job.status == "succeeded" and job.results[0]["error"] is None, job


def test_kb_worker_stops_cleanly_on_sigterm_and_fails_loudly_when_it_loses_the_database(
    tmp_path: Path, pg_proxy: tuple[Any, str]
) -> None:
    """SIGTERM: a clean stop (exit 0). The database gone (procrastinate stops a worker whose heartbeat
    fails): a non-zero exit naming the cause, so a supervisor restarts it instead of counting it as done."""
    from tests.chroma_server import chroma_server
    from tests.operations.test_replicas import KB

    proxy, via_proxy = pg_proxy
    with chroma_server(tmp_path) as chroma:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
        env.update({
            "HF_HUB_OFFLINE": "1", "KB_DATA_DIR": str(tmp_path / "worker"), "KB_DATABASE__URL": via_proxy,
            "KB_DATABASE__CONNECT_TIMEOUT_S": "1", "KB_QUEUE__BACKEND": "postgres", "KB_QUEUE__HEARTBEAT_S": "0.5",
            "KB_QUEUE__STALLED_AFTER_S": "3", "KB_VECTORSTORE__MODE": "http", "KB_VECTORSTORE__HOST": chroma.host,
            "KB_VECTORSTORE__PORT": str(chroma.port),
        })  # fmt: skip

        def started(log: Path) -> subprocess.Popen[bytes]:
            proc = subprocess.Popen([str(KB), "worker", "--name", "w1"], env=env, stdout=log.open("wb"),
                                    stderr=subprocess.STDOUT)  # fmt: skip
            deadline = time.monotonic() + 120
            while "taking documents" not in log.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.1)
            return proc

        first = started(tmp_path / "first.log")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0, (tmp_path / "first.log").read_text()[-2000:]
        second = started(tmp_path / "second.log")
        try:
            proxy.cut()
            cut = time.monotonic()
            assert second.wait(timeout=120) == 1
            assert time.monotonic() - cut < 40  # psycopg's pool would wait 30 s per call; ours gives up sooner
            assert (
                "error (worker_stopped): kb worker w1 stopped without being asked"
                in (tmp_path / "second.log").read_text()
            )
        finally:
            second.kill()
