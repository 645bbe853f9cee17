"""Two API replicas as a deployment runs them (docs/operations.md, docker-compose.yml).

Two ``kb serve`` processes on different ports share one Chroma server (``chroma run``), one
Redis (response cache in db 0, rate-limit counters in db 1), one SQL database (keys, usage
ledger, audit log, conversations: a real PostgreSQL database when the test server is
available, as ``make test`` provides, else ``kb.sqlite3`` in the data dir) and one data dir
(manifest, BM25 index, ingestion jobs). Replica A serves the admin API; replica B has it off,
as ``api-2`` in the compose file (the ingestion job queue is not safe to run in two
processes yet).

Ingest through A, ask through B: the cited answer. The same question on A is then a cache
hit although A never answered it, and A's own usage report counts B's model call. A key
created while both run works on both at once, and once revoked fails on both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.chroma_server import chroma_server
from tests.conftest import EXAMPLES, ROOT
from tests.servers import free_port, redis_server, stop_process

pytestmark = pytest.mark.slow

KB = Path(sys.executable).parent / "kb"
QUESTION = {"question": "How many days of annual leave do I get?", "collection": "handbook"}
KEY_MEMORY_S = 1.0  # how long a replica remembers a valid key
RATE_LIMIT = 30  # requests per minute per key, counted in Redis for both replicas


def _kb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KB), *args], env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)


def _key(env: dict[str, str], name: str, role: str, collections: str = "") -> str:
    created = _kb(env, "keys", "create", "--name", name, "--role", role, "--collections", collections, "--json")
    return str(json.loads(created.stdout)["token"])


@contextmanager
def _replica(name: str, env: dict[str, str], workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """``kb serve`` as a subprocess on a free port; stopped with SIGTERM (as ``docker stop``) at the end."""
    port = free_port()
    log = workdir / f"replica-{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(KB), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            yield f"http://127.0.0.1:{port}", proc, log
        finally:
            stop_process(proc)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{url} not ready after {timeout_s} s:\n{log.read_text()[-3000:]}"
        try:
            r = httpx.get(f"{url}/readyz", timeout=5)
            if r.status_code == 200:
                return dict(r.json())
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def _metric(url: str, name: str, headers: dict[str, str]) -> float:
    """A counter from the replica's own /metrics (0 when not yet incremented; an admin key reads them)."""
    for line in httpx.get(f"{url}/metrics", headers=headers).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _cited(answer: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(c["n"], c["source"], c["page"], c["chunk_id"], c["snippet"]) for c in answer["citations"]]


def _ingest_handbook(url: str, headers: dict[str, str]) -> dict[str, Any]:
    files = [("files", (p.name, p.read_bytes())) for p in sorted(EXAMPLES.iterdir()) if p.is_file()]
    r = httpx.post(f"{url}/admin/collections/handbook/documents", files=files, headers=headers, timeout=60)
    assert r.status_code == 202, r.text
    job_url = f"{url}/admin/jobs/{r.json()['id']}"
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "the ingestion job did not finish in 120 s"
        r = httpx.get(job_url, headers=headers)
        if r.status_code == 429:  # polling counts against the key's limit like any request
            time.sleep(float(r.headers["Retry-After"]))
            continue
        job = r.json()
        if job["status"] in ("succeeded", "failed"):
            return dict(job)
        time.sleep(0.5)


def _shared_database(request: pytest.FixtureRequest) -> str | None:
    """A PostgreSQL database of this test's own when a server can be had; None: the replicas share kb.sqlite3."""
    try:
        return str(request.getfixturevalue("postgres_url"))
    except pytest.skip.Exception:
        return None


def test_two_replicas_share_the_store_the_cache_the_limits_and_the_ledger(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database_url = _shared_database(request)
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(tmp_path))  # skips the test without redis-server
        chroma = stack.enter_context(chroma_server(tmp_path))
        redis_base = redis_url.rsplit("/", 1)[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
        env.update({
            "HF_HUB_OFFLINE": "1",
            "KB_DATA_DIR": str(tmp_path / "shared-data"),
            "KB_VECTORSTORE__MODE": "http",
            "KB_VECTORSTORE__HOST": chroma.host,
            "KB_VECTORSTORE__PORT": str(chroma.port),
            "KB_CACHE__BACKEND": "redis",
            "KB_CACHE__REDIS_URL": f"{redis_base}/0",
            "KB_LIMITS__RATE_LIMIT_STORAGE": f"{redis_base}/1",
            "KB_LIMITS__REQUESTS_PER_MINUTE": str(RATE_LIMIT),
            "KB_LLM__PROVIDER": "extractive",
            "KB_AUTH__KEY_CACHE_S": str(KEY_MEMORY_S),
        })  # fmt: skip
        if database_url is not None:
            env["KB_DATABASE__URL"] = database_url
        # Keys first, with the CLI against the shared data dir: no replica writes a first-run key.
        ops = {"Authorization": f"Bearer {_key(env, 'ops', 'admin')}"}
        on_a = {"Authorization": f"Bearer {_key(env, 'carol-on-a', 'admin')}"}
        on_b = {"Authorization": f"Bearer {_key(env, 'bob-on-b', 'admin')}"}
        limited = {"Authorization": f"Bearer {_key(env, 'limited', 'employee', 'handbook')}"}
        a, a_proc, a_log = stack.enter_context(_replica("A", {**env, "KB_ADMIN__ENABLED": "true"}, tmp_path))
        b, b_proc, b_log = stack.enter_context(_replica("B", {**env, "KB_ADMIN__ENABLED": "false"}, tmp_path))

        for url, proc, log in ((a, a_proc, a_log), (b, b_proc, b_log)):
            ready = _wait_ready(url, proc, log)
            assert ready["status"] == "ready", ready
            assert {"vector_store", "cache", "database"} <= set(ready["checks"]), ready
            assert all(c["status"] == "ok" for c in ready["checks"].values()), ready
        assert not (tmp_path / "shared-data" / "admin-key.txt").exists()
        assert httpx.get(f"{b}/admin/usage", headers=ops).status_code == 404  # B: no admin API, as api-2

        job = _ingest_handbook(a, ops)
        assert job["status"] == "succeeded" and job["summary"]["added"] == 4, job
        assert (chroma.path / "chroma.sqlite3").exists()  # the vectors went to the Chroma server

        # B never ingested anything: it finds the chunks (Chroma server) and their live version (shared manifest).
        r = httpx.post(f"{b}/chat", json=QUESTION, headers=on_b, timeout=60)
        assert r.status_code == 200, r.text
        from_b = r.json()
        assert "27 days" in from_b["answer"] and from_b["grounded"] and not from_b["cached"], from_b
        first = from_b["citations"][0]
        assert (first["source"], first["page"]) == ("handbook.pdf", 2), from_b["citations"]
        assert f"[{first['n']}]" in from_b["answer"]
        assert _metric(b, "kb_cache_misses_total", ops) == 1  # B called the model and stored the completion in Redis
        assert redis.Redis.from_url(f"{redis_base}/0").zcard("kb:cache:index") == 1

        # Each replica has an in-process answer cache (app/rag/answer_cache.py) in front of the shared
        # Redis response cache. A has never answered this question, so its answer cache is empty: A
        # retrieves the same passages from the shared store, builds the same prompt, and the model call
        # is a hit in Redis: the entry B stored. Asked again, A answers from its own answer cache.
        r = httpx.post(f"{a}/chat", json=QUESTION, headers=on_a, timeout=60)
        assert r.status_code == 200, r.text
        from_a = r.json()
        assert from_a["cached"] is True, from_a
        assert from_a["answer"] == from_b["answer"] and _cited(from_a) == _cited(from_b)
        assert (_metric(a, "kb_cache_hits_total", ops), _metric(a, "kb_answer_cache_hits_total", ops)) == (1, 0)
        assert _metric(a, "kb_cache_misses_total", ops) == 0  # A made no model call of its own
        r = httpx.post(f"{a}/chat", json=QUESTION, headers=on_a, timeout=60)
        assert r.status_code == 200 and r.json()["cached"] is True, r.text
        assert r.json()["answer"] == from_b["answer"]
        assert _metric(a, "kb_answer_cache_hits_total", ops) == 1

        # The usage ledger is shared: A's report holds B's model call and A's two cache hits.
        usage = httpx.get(f"{a}/admin/usage", params={"by": "key"}, headers=ops).json()
        per_key = {g["key"]: (g["calls"], g["cached"]) for g in usage["groups"]}
        assert per_key == {"bob-on-b": (1, 0), "carol-on-a": (2, 2)}, usage
        assert (usage["total"]["calls"], usage["total"]["cached"], usage["total"]["errors"]) == (3, 2, 0), usage
        assert usage["total"]["prompt_tokens"] > 0

        if database_url is not None:  # keys and ledger are in PostgreSQL, not in the shared data dir
            assert not (tmp_path / "shared-data" / "kb.sqlite3").exists()

        # Keys live in the shared database: one created while both replicas run works on both at
        # once (no restart; unknown keys are never remembered), and once revoked it fails on both
        # within the time a replica remembers a valid key (KB_AUTH__KEY_CACHE_S), and from then on.
        late = {"Authorization": f"Bearer {_key(env, 'late', 'employee', 'handbook')}"}
        for url in (a, b):
            r = httpx.get(f"{url}/collections", headers=late)
            assert r.status_code == 200 and [c["name"] for c in r.json()] == ["handbook"], r.text
        _kb(env, "keys", "revoke", "late")
        revoked_at = time.monotonic()
        for url in (a, b):
            while httpx.get(f"{url}/collections", headers=late).status_code != 401:
                assert time.monotonic() - revoked_at < KEY_MEMORY_S + 1.0, f"{url} still accepts a revoked key"
                time.sleep(0.05)
        for url in (a, b):
            assert httpx.get(f"{url}/collections", headers=late).status_code == 401

        # Rate limits are counted in Redis: half the budget on each replica, then the next request is refused.
        for i in range(RATE_LIMIT):
            r = httpx.get(f"{(a, b)[i % 2]}/collections", headers=limited)
            assert r.status_code == 200, (i, r.text)
        for url in (a, b):
            r = httpx.get(f"{url}/collections", headers=limited)
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
            assert r.json()["error"]["code"] == "rate_limited"

        for url, proc, log in ((a, a_proc, a_log), (b, b_proc, b_log)):
            assert httpx.get(f"{url}/readyz").status_code == 200
            assert proc.poll() is None, log.read_text()[-3000:]
