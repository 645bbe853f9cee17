"""Admin API over real HTTP: upload → background job → documents → delete; jobs survive restarts."""

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.api.main import create_app
from app.bootstrap import Components
from ingest.jobs import JobQueue
from tests.conftest import EXAMPLES
from tests.servers import serve_app


@pytest.fixture
def base_url(handbook_components: Components) -> Iterator[str]:
    with serve_app(create_app(handbook_components.settings, components=handbook_components)) as url:
        yield url


def wait_for_job(base_url: str, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{base_url}/admin/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_upload_ingests_in_the_background_and_can_be_deleted(base_url: str) -> None:
    files = [
        ("files", ("badges.md", b"# Badges\n\nLost badges cost 15 EUR to replace at reception.\n", "text/markdown")),
        ("files", ("broken.pdf", b"%PDF-1.4 not really", "application/pdf")),
    ]
    r = httpx.post(f"{base_url}/admin/collections/Facilities & Office/documents", files=files, timeout=30)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running", "succeeded") and r.headers["location"].endswith(job["id"])

    done = wait_for_job(base_url, job["id"])
    assert done["status"] == "succeeded"
    assert done["summary"]["added"] == 1 and done["summary"]["failed"][0]["source"] == "broken.pdf"

    collections = {c["name"]: c for c in httpx.get(f"{base_url}/admin/collections").json()}
    assert collections["Facilities & Office"]["documents"] == 1
    docs = httpx.get(f"{base_url}/admin/collections/Facilities & Office/documents").json()
    assert [d["source"] for d in docs] == ["badges.md"]

    answer = httpx.post(
        f"{base_url}/chat", json={"question": "How much does a lost badge cost?", "collection": "Facilities & Office"},
        timeout=60,
    ).json()  # fmt: skip
    assert "15 EUR" in answer["answer"] and answer["citations"][0]["source"] == "badges.md"

    gone = httpx.delete(f"{base_url}/admin/collections/Facilities & Office/documents/badges.md")
    assert gone.status_code == 200 and gone.json()["chunks_deleted"] >= 1
    again = httpx.delete(f"{base_url}/admin/collections/Facilities & Office/documents/badges.md")
    assert again.status_code == 404 and again.json()["error"]["code"] == "document_not_found"
    assert httpx.delete(f"{base_url}/admin/collections/Facilities & Office").status_code == 200
    missing = httpx.get(f"{base_url}/admin/collections/Facilities & Office/documents")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "collection_not_found"


def test_upload_errors_are_specific(base_url: str, handbook_components: Components) -> None:
    assert httpx.get(f"{base_url}/admin/jobs/nope").json()["error"]["code"] == "job_not_found"
    handbook_components.settings.limits.max_file_mb = 0.001
    big = httpx.post(f"{base_url}/admin/collections/x/documents", files=[("files", ("big.txt", b"a" * 5000))])
    assert big.status_code == 413 and big.json()["error"]["code"] == "file_too_large"
    no_files = httpx.post(f"{base_url}/admin/collections/x/documents")
    assert no_files.status_code == 422
    hidden = httpx.post(f"{base_url}/admin/collections/x/documents", files=[("files", ("../.env", b"KEY=1"))])
    assert hidden.status_code == 422 and hidden.json()["error"]["code"] == "invalid_filename"


def test_admin_api_is_off_when_bound_beyond_loopback(handbook_components: Components) -> None:
    handbook_components.settings.api.host = "0.0.0.0"
    with serve_app(create_app(handbook_components.settings, components=handbook_components)) as url:
        assert httpx.get(f"{url}/admin/collections").status_code == 404
        assert httpx.get(f"{url}/admin/usage").status_code == 404
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_accepted_jobs_survive_a_restart(handbook_components: Components, tmp_path: Path) -> None:
    data_dir = tmp_path / "jobs-data"
    data_dir.mkdir()
    first = JobQueue(data_dir, handbook_components.ingest_folder)  # never started: the process "died"
    job_id, folder = first.new_job_dir()
    shutil.copy(EXAMPLES / "oncall.md", folder / "oncall.md")
    first.submit(job_id, "restarted", ["oncall.md"])
    first._next()  # the worker had picked it up (status running) when the process died
    first.stop()

    second = JobQueue(data_dir, handbook_components.ingest_folder)
    assert second.get(job_id).status == "queued"  # type: ignore[union-attr]
    second.start()
    deadline = time.monotonic() + 60
    while (job := second.get(job_id)) is not None and job.status not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second.stop()
    assert job is not None and job.status == "succeeded" and job.summary["added"] == 1  # type: ignore[index]
    assert handbook_components.store.get_ids("restarted", {"source": "oncall.md"})
