"""Four "hosts" with nothing shared on disk: two API processes and two `kb worker` processes, each with
its own empty data dir, sharing only PostgreSQL (keys, manifest, BM25 chunks, jobs, uploads, the
procrastinate queue), Redis (response cache) and a `chroma run` server (issue #16).

Twenty real PDFs (Debian's libtasn1 and shared-mime-info manuals, cut into pieces: tests/real_pdfs.py)
are uploaded through A; both workers take documents (their names are in the job's records); one is
killed with SIGKILL while it ingests a document, and the other takes that document over. Every
document then answers on B with its page; chunk counts equal a clean single-process ingestion of
the same files; a document deleted through B leaves A's search within 10 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bootstrap import Components
from app.settings import Settings
from tests.chroma_server import chroma_server
from tests.conftest import ROOT
from tests.operations.test_replicas import KB, _key, _replica, _wait_ready
from tests.real_pdfs import cut_manuals
from tests.servers import redis_server, stop_process

pytestmark = pytest.mark.slow
COLLECTION = "manuals"


def _worker(name: str, env: dict[str, str], workdir: Path) -> subprocess.Popen[bytes]:
    log = (workdir / f"worker-{name}.log").open("wb")
    return subprocess.Popen(
        [str(KB), "worker", "--name", name], env={**env, "KB_DATA_DIR": str(workdir / f"host-{name}")},
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _job(url: str, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    r = httpx.get(f"{url}/admin/jobs/{job_id}", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _wait(condition: Any, what: str, timeout_s: float, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in logs if p.exists())
            raise AssertionError(f"{what}: not within {timeout_s} s\n{tails}")
        time.sleep(0.25)


def _search(url: str, query: str, headers: dict[str, str], mode: str = "hybrid") -> list[dict[str, Any]]:
    body = {"query": query, "collections": [COLLECTION], "top_k": 5, "mode": mode}
    r = httpx.post(f"{url}/search", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return list(r.json()["results"])


def test_two_apis_and_two_workers_share_nothing_on_disk(tmp_path: Path, postgres_url: str, embedder: Any) -> None:
    pdfs, probes = cut_manuals(tmp_path / "pdfs")
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(tmp_path))
        chroma = stack.enter_context(chroma_server(tmp_path))
        env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
        env.update({
            "HF_HUB_OFFLINE": "1",
            "KB_DATABASE__URL": postgres_url,
            "KB_VECTORSTORE__MODE": "http",
            "KB_VECTORSTORE__HOST": chroma.host,
            "KB_VECTORSTORE__PORT": str(chroma.port),
            "KB_CACHE__BACKEND": "redis",
            "KB_CACHE__REDIS_URL": redis_url,
            "KB_LLM__PROVIDER": "extractive",
            "KB_QUEUE__BACKEND": "postgres",
            "KB_QUEUE__HEARTBEAT_S": "1",
            "KB_QUEUE__STALLED_AFTER_S": "4",
            "KB_ADMIN__ENABLED": "true",
        })  # fmt: skip
        admin = {"Authorization": f"Bearer {_key({**env, 'KB_DATA_DIR': str(tmp_path / 'host-ops')}, 'ops', 'admin')}"}
        a, a_proc, a_log = stack.enter_context(
            _replica("A", {**env, "KB_DATA_DIR": str(tmp_path / "host-a")}, tmp_path)
        )
        b, b_proc, b_log = stack.enter_context(
            _replica("B", {**env, "KB_DATA_DIR": str(tmp_path / "host-b")}, tmp_path)
        )
        workers = {name: _worker(name, env, tmp_path) for name in ("w1", "w2")}
        for proc in workers.values():
            stack.callback(stop_process, proc, 30)
        logs = [a_log, b_log, *(tmp_path / f"worker-{n}.log" for n in workers)]
        for url, proc, log in ((a, a_proc, a_log), (b, b_proc, b_log)):
            assert _wait_ready(url, proc, log)["status"] == "ready"

        files = [("files", (p.name, p.read_bytes(), "application/pdf")) for p in pdfs]
        r = httpx.post(f"{a}/admin/collections/{COLLECTION}/documents", files=files, headers=admin, timeout=60)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]

        # Both workers take documents; then w1 dies (SIGKILL) in the middle of one.
        def w1_busy_and_w2_seen() -> dict[str, Any] | None:
            job = _job(b, job_id, admin)  # the job, read from the other host
            w1 = {f["status"] for f in job["results"] if f["worker"] == "w1"}
            return job if "running" in w1 and "added" in w1 and "w2" in job["workers"] else None

        job = _wait(w1_busy_and_w2_seen, "both workers ingesting", 240, logs)
        victims = [f["source"] for f in job["results"] if f["worker"] == "w1" and f["status"] == "running"]
        workers["w1"].send_signal(signal.SIGKILL)
        workers["w1"].wait()

        done = _wait(
            lambda: (j := _job(a, job_id, admin))["status"] in ("succeeded", "failed") and j, "the job", 300, logs
        )
        summary = done["summary"]
        assert done["status"] == "succeeded" and summary["failed"] == [] and set(done["workers"]) == {"w1", "w2"}
        # w1 may have died just after making a document live: then w2 finds it whole ("unchanged")
        assert summary["added"] + summary["unchanged"] == len(pdfs) and summary["unchanged"] <= len(victims), done
        for victim in victims:  # the documents w1 had in flight (KB_QUEUE__CONCURRENCY: up to 2)
            taken_over = {f["source"]: f for f in done["results"]}[victim]
            assert taken_over["worker"] == "w2" and taken_over["attempts"] == 2, taken_over
            assert taken_over["status"] in ("added", "unchanged"), taken_over

        # The same files ingested by one process on one machine: the reference.
        clean = Components(Settings(_env_file=None, data_dir=tmp_path / "clean"), embedder=embedder)  # type: ignore[call-arg]
        report = clean.ingest_pipeline.ingest([tmp_path / "pdfs"], COLLECTION)
        stack.callback(clean.close)
        expected = {r.source: len(r.chunk_ids) for r in clean.manifest.documents(COLLECTION)}
        assert report.added == len(pdfs) and not report.failed
        listed = httpx.get(f"{b}/admin/collections/{COLLECTION}/documents", headers=admin, timeout=30).json()
        assert {d["source"]: d["chunks"] for d in listed} == expected
        shared = Components(
            Settings(_env_file=None, data_dir=tmp_path / "host-check", database={"url": postgres_url},
                     vectorstore={"mode": "http", "host": chroma.host, "port": chroma.port}),  # type: ignore[arg-type]
            embedder=embedder,
        )  # type: ignore[call-arg]  # fmt: skip
        try:  # no duplicate chunk, nothing half-switched: the store holds exactly the live versions
            assert shared.store.count(COLLECTION) == shared.lexical.count(COLLECTION) == sum(expected.values())
            assert shared.manifest.writers(COLLECTION) == []
        finally:
            shared.close()

        # Every document answers on B, with the page its words are on; both hosts rank alike, and BM25
        # ranks as the single-process reference does (same chunk ids, same tokens, same statistics).
        for probe in probes:
            hits = _search(b, probe.text, admin, "lexical")
            assert (probe.source, probe.page) in [(h["source"], h["page"]) for h in hits], (probe, hits)
            reference = clean.retriever.search(probe.text, [COLLECTION], 5, mode="lexical")
            assert [h["chunk_id"] for h in hits] == [h.id for h in reference]
            assert [h["chunk_id"] for h in _search(a, probe.text, admin)] == [
                h["chunk_id"] for h in _search(b, probe.text, admin)
            ]
        r = httpx.post(
            f"{b}/chat", json={"question": probes[3].text, "collection": COLLECTION}, headers=admin, timeout=60
        )
        assert r.status_code == 200 and (probes[3].source, probes[3].page) in [
            (c["source"], c["page"]) for c in r.json()["citations"]
        ], r.text

        # Deleted through B: gone from A's search (every mode) within 10 s.
        gone = probes[5]
        r = httpx.delete(f"{b}/admin/collections/{COLLECTION}/documents/{gone.source}", headers=admin, timeout=30)
        assert r.status_code == 200, r.text
        started = time.monotonic()
        _wait(
            lambda: all(gone.source not in {h["source"] for h in _search(a, gone.text, admin, mode)}
                        for mode in ("dense", "lexical", "hybrid")),
            "the deleted document leaving A's search", 10, logs,
        )  # fmt: skip
        assert time.monotonic() - started < 10

        # `kb ingest --queue` from a fifth machine: the workers take it; `kb jobs` there sees every job.
        cli_env = {**env, "KB_DATA_DIR": str(tmp_path / "host-cli")}
        again = [str(pdfs[0]), str(tmp_path / "pdfs" / gone.source)]
        queued = subprocess.run(
            [str(KB), "ingest", *again, "-c", COLLECTION, "--queue", "--wait"],
            env=cli_env, cwd=ROOT, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert queued.returncode == 0, queued.stdout + queued.stderr
        assert "succeeded: 1 added, 0 updated, 1 unchanged, 0 failed (workers: w2)" in queued.stdout, queued.stdout
        listed_jobs = subprocess.run([str(KB), "jobs", "list", "--json"], env=cli_env, cwd=ROOT, capture_output=True,
                                     text=True, timeout=60)  # fmt: skip
        assert job_id in listed_jobs.stdout and listed_jobs.returncode == 0

        # A collection deleted through B is gone on A.
        assert httpx.delete(f"{b}/admin/collections/{COLLECTION}", headers=admin, timeout=30).status_code == 200
        names = [c["name"] for c in httpx.get(f"{a}/admin/collections", headers=admin, timeout=30).json()]
        assert COLLECTION not in names
        r = httpx.post(f"{a}/search", json={"query": gone.text, "collection": COLLECTION}, headers=admin, timeout=30)
        assert r.status_code == 404, r.text
