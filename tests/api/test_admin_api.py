"""Admin API over real HTTP: upload → background job → documents → delete; jobs survive restarts."""

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.bootstrap import Components
from ingest.jobs import JobQueue
from tests.conftest import EXAMPLES
from tests.servers import api_client


@pytest.fixture
def client(handbook_components: Components) -> Iterator[httpx.Client]:
    with api_client(handbook_components) as api:
        yield api


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/admin/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_upload_ingests_in_the_background_and_can_be_deleted(client: httpx.Client) -> None:
    files = [
        ("files", ("badges.md", b"# Badges\n\nLost badges cost 15 EUR to replace at reception.\n", "text/markdown")),
        ("files", ("broken.pdf", b"%PDF-1.4 not really", "application/pdf")),
    ]
    r = client.post("/admin/collections/Facilities & Office/documents", files=files, timeout=30)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running", "succeeded") and r.headers["location"].endswith(job["id"])

    done = wait_for_job(client, job["id"])
    assert done["status"] == "succeeded"
    assert done["summary"]["added"] == 1 and done["summary"]["failed"][0]["source"] == "broken.pdf"

    collections = {c["name"]: c for c in client.get("/admin/collections").json()}
    assert collections["Facilities & Office"]["documents"] == 1
    docs = client.get("/admin/collections/Facilities & Office/documents").json()
    assert [d["source"] for d in docs] == ["badges.md"]

    question = {"question": "How much does a lost badge cost?", "collection": "Facilities & Office"}
    answer = client.post("/chat", json=question).json()
    assert "15 EUR" in answer["answer"] and answer["citations"][0]["source"] == "badges.md"

    gone = client.delete("/admin/collections/Facilities & Office/documents/badges.md")
    assert gone.status_code == 200 and gone.json()["chunks_deleted"] >= 1
    again = client.delete("/admin/collections/Facilities & Office/documents/badges.md")
    assert again.status_code == 404 and again.json()["error"]["code"] == "document_not_found"
    assert client.delete("/admin/collections/Facilities & Office").status_code == 200
    missing = client.get("/admin/collections/Facilities & Office/documents")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "collection_not_found"


def test_upload_errors_are_specific(client: httpx.Client, handbook_components: Components) -> None:
    assert client.get("/admin/jobs/nope").json()["error"]["code"] == "job_not_found"
    handbook_components.settings.limits.max_file_mb = 0.001
    big = client.post("/admin/collections/x/documents", files=[("files", ("big.txt", b"a" * 5000))])
    assert big.status_code == 413 and big.json()["error"]["code"] == "file_too_large"
    no_files = client.post("/admin/collections/x/documents")
    assert no_files.status_code == 422
    hidden = client.post("/admin/collections/x/documents", files=[("files", ("../.env", b"KEY=1"))])
    assert hidden.status_code == 422 and hidden.json()["error"]["code"] == "invalid_filename"


def test_an_upload_name_of_300_characters_is_a_422_and_leaves_nothing(
    client: httpx.Client, handbook_components: Components
) -> None:
    uploads = handbook_components.settings.data_dir / "uploads"
    before = set(uploads.iterdir()) if uploads.exists() else set()
    long = client.post("/admin/collections/x/documents", files=[("files", ("a" * 296 + ".txt", b"text"))])
    assert long.status_code == 422, long.text
    assert long.json()["error"]["code"] == "invalid_filename" and "300 characters" in long.json()["error"]["message"]
    assert (set(uploads.iterdir()) if uploads.exists() else set()) == before  # no empty folder left behind


def test_two_files_with_one_name_and_bidi_controls_in_names(client: httpx.Client) -> None:
    twice = [("files", ("a.txt", b"first text")), ("files", ("a.txt", b"second text"))]
    dup = client.post("/admin/collections/x/documents", files=twice)
    assert dup.status_code == 422 and dup.json()["error"]["code"] == "duplicate_filename"
    evil = client.post("/admin/collections/bidi/documents", files=[("files", ("evil\u202etxt.md", b"# E\n\nHello."))])
    assert evil.status_code == 202, evil.text
    assert evil.json()["files"] == ["eviltxt.md"]


def test_admin_api_needs_an_admin_key_and_can_be_switched_off(handbook_components: Components) -> None:
    handbook_components.settings.api.host = "0.0.0.0"  # auth on: the admin API is served beyond loopback too
    with api_client(handbook_components, role="employee", collections=("handbook",)) as employee:
        for path in ("/admin/collections", "/admin/usage"):
            forbidden = employee.get(path)
            assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "admin_required"
            anonymous = httpx.get(f"{employee.base_url}{path}")
            assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "missing_api_key"
            assert anonymous.headers["www-authenticate"] == "Bearer"
    handbook_components.settings.admin.enabled = False
    with api_client(handbook_components) as admin:
        assert admin.get("/admin/collections").status_code == 404
        assert admin.get("/admin/usage").status_code == 404
        assert admin.get("/healthz").status_code == 200


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
