"""Ingestion jobs report progress, can be cancelled, and do not re-run for ever after restarts (issue #15, 4)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from app.bootstrap import Components
from ingest.jobs import MAX_ATTEMPTS, JobQueue
from tests.cli.test_cli import run_kb
from tests.servers import api_client


def many_files(count: int) -> list[tuple[str, tuple[str, bytes]]]:
    return [
        (
            "files",
            (
                f"note-{i:03d}.md",
                f"# Note {i}\n\n".encode()
                + " ".join(f"Item {i}.{k} of the procurement notes says something new." for k in range(60)).encode(),
            ),
        )
        for i in range(120)
    ]


def test_a_running_job_shows_progress_and_can_be_cancelled(handbook_components: Components) -> None:
    handbook_components.settings.limits.requests_per_minute = 0  # this test polls quickly
    with api_client(handbook_components) as client:
        job = client.post("/admin/collections/notes/documents", files=many_files(120)).json()
        deadline = time.monotonic() + 120
        while not ((state := client.get(f"/admin/jobs/{job['id']}").json())["progress"] or {}).get("files_done"):
            assert state["status"] in ("queued", "running"), state
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert state["progress"]["files_total"] == 120
        asked = time.monotonic()
        cancel = client.delete(f"/admin/jobs/{job['id']}")
        assert cancel.status_code == 200 and cancel.json()["cancel_requested"] is True
        while (state := client.get(f"/admin/jobs/{job['id']}").json())["status"] == "running":
            assert time.monotonic() - asked < 10, "the job did not stop within 10 s of the cancel"
            time.sleep(0.05)
        assert state["status"] == "cancelled", state
        listed = {j["id"]: j["status"] for j in client.get("/admin/jobs").json()}
        assert listed[job["id"]] == "cancelled"
        assert client.delete("/admin/jobs/nope").json()["error"]["code"] == "job_not_found"
    documents = handbook_components.manifest.documents("notes")
    assert len(documents) < 120  # it stopped part-way
    for record in documents:  # what it wrote is whole
        ids = list(record.chunk_ids)
        assert handbook_components.store.existing_ids("notes", ids) == set(ids)
    assert not (handbook_components.settings.data_dir / "uploads" / job["id"]).exists()


def test_a_finished_job_shows_its_final_counts(handbook_components: Components) -> None:
    with api_client(handbook_components) as client:
        job = client.post("/admin/collections/notes/documents", files=many_files(120)[:3]).json()
        deadline = time.monotonic() + 120
        while (state := client.get(f"/admin/jobs/{job['id']}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert state["status"] == "succeeded"
    assert state["progress"]["files_done"] == state["progress"]["files_total"] == 3
    assert state["progress"]["chunks"] > 0


def test_kb_jobs_cancels_a_queued_job_from_another_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    queue = JobQueue(data, None)  # a server that accepted an upload and has not started on it
    job_id, folder = queue.new_job_dir()
    (folder / "a.md").write_text("# A\n\ntext")
    queue.submit(job_id, "later", ["a.md"])
    listed = run_kb(["jobs", "list", "--json"], data)
    assert listed.returncode == 0, listed.stderr
    assert [j["status"] for j in json.loads(listed.stdout)] == ["queued"]
    cancelled = run_kb(["jobs", "cancel", job_id], data)
    assert cancelled.returncode == 0 and f"cancelled job {job_id}" in cancelled.stdout
    assert queue.get(job_id).status == "cancelled"  # type: ignore[union-attr]
    assert not folder.exists()
    assert run_kb(["jobs", "cancel", "nope"], data).returncode == 1
    queue.stop()


def test_a_job_that_keeps_stopping_the_server_is_not_retried_for_ever(tmp_path: Path) -> None:
    data = tmp_path / "data"
    queue = JobQueue(data, None)
    job_id, folder = queue.new_job_dir()
    (folder / "a.md").write_text("# A\n\ntext")
    queue.submit(job_id, "crashy", ["a.md"])
    queue.stop()
    for _ in range(MAX_ATTEMPTS):
        restarted = JobQueue(data, None)  # each start re-queues it, and the worker picks it up again ...
        assert restarted.get(job_id).status == "queued"  # type: ignore[union-attr]
        assert restarted._next() == (job_id, "crashy")
        restarted.stop()  # ... and the server dies while ingesting it
    final = JobQueue(data, None)
    job = final.get(job_id)
    assert job is not None and job.status == "failed" and job.attempts == MAX_ATTEMPTS
    assert f"interrupted {MAX_ATTEMPTS} times" in (job.error or "")
    final.stop()


def test_kb_ingest_queue_hands_files_to_the_servers_job_queue(handbook_components: Components, tmp_path: Path) -> None:
    """`kb ingest --queue` on one host: the job lands in the local queue (sources keep their subfolders),
    and the server's worker thread ingests it as it would an upload."""
    data = handbook_components.settings.data_dir
    folder = tmp_path / "policies"
    (folder / "travel").mkdir(parents=True)
    (folder / "travel" / "trains.md").write_text("# Trains\n\nSecond class for trips under four hours.\n")
    (folder / "badges.md").write_text("# Badges\n\nLost badges cost 15 EUR.\n")
    queued = run_kb(["ingest", str(folder), "-c", "facilities", "--queue"], data)
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.split("queued job ", 1)[1].split(":", 1)[0]
    assert run_kb(["ingest", str(folder), "-c", "x", "--queue", "--prune"], data).returncode == 2  # needs one run
    queue = JobQueue(data, handbook_components.ingest_folder)
    queue.start()
    try:
        deadline = time.monotonic() + 60
        while (job := queue.get(job_id)) is not None and job.status in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        queue.stop()
    assert job is not None and job.status == "succeeded" and job.files == ["badges.md", "travel/trains.md"], job
    listed = run_kb(["documents", "list", "-c", "facilities", "--json"], data)
    assert {d["source"] for d in json.loads(listed.stdout)} == {"badges.md", "travel/trains.md"}
