"""Operations over real servers: /readyz, JSON logs tagged with request ids, graceful shutdown.

uvicorn runs here the way ``kb serve`` runs it (``log_config=None``, our root handler),
so the access line is covered too.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from app.api.main import create_app, server_options
from app.bootstrap import Components
from app.logging_setup import configure_logging
from app.settings import Settings
from tests.servers import FakeOpenAI, free_port, redis_server


@contextmanager
def running(components: Components, app: Any = None) -> Iterator[tuple[str, uvicorn.Server, threading.Thread]]:
    """Our app (or ``app``, built from it) under uvicorn configured as ``kb serve`` does; the caller may stop it
    early."""
    port = free_port()
    options = {**server_options(components.settings), "log_level": "info"}
    app = app or create_app(components.settings, components=components)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server, thread
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def components_for(handbook_data_dir: Path, tmp_path: Path, embedder: Any) -> Iterator[Any]:
    """Components over a private copy of the handbook store, with settings overrides."""
    built: list[Components] = []

    def make(**overrides: Any) -> Components:
        data_dir = tmp_path / f"data{len(built)}"
        shutil.copytree(handbook_data_dir, data_dir)
        settings = Settings(_env_file=None, data_dir=data_dir, **overrides)  # type: ignore[call-arg]
        built.append(Components(settings, embedder=embedder))
        return built[-1]

    yield make
    for c in built:
        c.close()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """JSON logs captured from the root logger; the previous logging setup is restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def _admin(components: Components) -> dict[str, str]:
    return {"Authorization": f"Bearer {components.keys.create('ops', 'admin', ['*']).token}"}


def test_readyz_reports_every_dependency_without_auth(components_for: Any) -> None:
    components = components_for()
    with running(components) as (url, _, _):
        r = httpx.get(f"{url}/readyz")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ready"
        assert set(body["checks"]) == {"vector_store", "writable", "cache", "database"}
        assert all(c["status"] == "ok" for c in body["checks"].values())
        started = time.perf_counter()
        httpx.get(f"{url}/readyz")
        assert time.perf_counter() - started < 0.5  # normally < 50 ms; generous on a shared 2-core box
        schema = httpx.get(f"{url}/openapi.json").json()["paths"]["/readyz"]["get"]["responses"]
        assert schema["200"]["content"]["application/json"]["example"]["status"] == "ready"
        assert schema["503"]["content"]["application/json"]["example"]["failing"] == ["vector_store"]


def test_readyz_names_a_broken_sqlite_store(components_for: Any) -> None:
    components = components_for()
    with running(components) as (url, _, _):
        assert httpx.get(f"{url}/readyz").status_code == 200
        database = components.settings.default_database_file  # the shared database: keys, ledger, ...
        for wal in (database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
            wal.unlink(missing_ok=True)  # else SQLite would read the fresh pages from the WAL
        database.write_bytes(b"this is not a database" * 100)
        r = httpx.get(f"{url}/readyz")
        assert r.status_code == 503
        assert r.json()["failing"] == ["database"]
        assert r.json()["checks"]["database"]["error"] == "DatabaseError"
        assert str(components.settings.data_dir) not in r.text  # paths stay in the server log


def test_readyz_pings_redis_and_fails_when_it_stops(components_for: Any, tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis_url:
        components = components_for(cache={"backend": "redis", "redis_url": redis_url})
        with running(components) as (url, _, _):
            assert httpx.get(f"{url}/readyz").json()["checks"]["cache"]["status"] == "ok"
            redis.Redis.from_url(redis_url).shutdown(nosave=True)
            r = httpx.get(f"{url}/readyz")
            assert r.status_code == 503 and r.json()["failing"] == ["cache"]


def test_json_logs_carry_the_request_id(components_for: Any, log_stream: io.StringIO) -> None:
    components = components_for()
    headers = {**_admin(components), "X-Request-ID": "trace-ops-1"}
    with running(components) as (url, _, _):
        r = httpx.post(f"{url}/search", json={"query": "annual leave", "collection": "handbook"}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == "trace-ops-1"
    records = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.strip()]
    assert records, "nothing was logged"
    assert all({"ts", "level", "logger", "message", "request_id"} <= set(r) for r in records)
    assert not any("color_message" in r for r in records)  # uvicorn's ANSI-coloured duplicate
    mine = [r for r in records if r["request_id"] == "trace-ops-1"]
    access = [r for r in mine if r["logger"] == "uvicorn.access"]
    assert len(access) == 1 and "POST /search" in access[0]["message"] and "200" in access[0]["message"]
    started = [r for r in records if "kb API ready" in r["message"]]
    assert started and started[0]["request_id"] is None  # outside a request: no id


def test_shutdown_lets_an_in_flight_answer_finish(components_for: Any) -> None:
    with FakeOpenAI() as fake:
        fake.delay_s = 1.5
        llm = {"provider": "openai", "base_url": fake.base_url, "api_key": "test", "max_retries": 0}
        components = components_for(llm=llm)
        headers = _admin(components)
        result: dict[str, Any] = {}
        question = {"question": "How many days of annual leave do I get?", "collection": "handbook"}
        with running(components) as (url, server, thread):

            def ask() -> None:
                result["response"] = httpx.post(f"{url}/chat", json=question, headers=headers, timeout=30)

            asker = threading.Thread(target=ask)
            asker.start()
            deadline = time.monotonic() + 20
            while not fake.requests:  # the answer is now being generated upstream
                assert time.monotonic() < deadline, "the chat request never reached the model"
                time.sleep(0.02)
            server.should_exit = True  # what SIGTERM does
            asker.join(timeout=30)
            thread.join(timeout=30)
            assert not thread.is_alive()
        response = result["response"]
        assert response.status_code == 200, response.text
        assert "27 days" in response.json()["answer"]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz")


def _policy_text(n: int, paragraphs: int = 12) -> str:
    """A distinct Markdown policy (no two share a paragraph, so every chunk is really embedded)."""
    words = ("badge", "visitor", "escort", "locker", "parking", "desk", "laptop", "printer", "canteen",
             "shuttle", "bicycle", "reception", "archive", "mailroom", "ladder", "kitchen")  # fmt: skip
    body = []
    for p in range(paragraphs):
        sentence = " ".join(words[(n * 7 + p * 3 + i) % len(words)] for i in range(40))
        body.append(f"## Rule {p}\n\nRule {n}.{p}: {sentence}. Ask facilities desk {n * 100 + p}.")
    return f"# Office policy {n}\n\n" + "\n\n".join(body) + "\n"


def test_shutdown_lets_a_running_ingestion_job_finish(components_for: Any) -> None:
    """SIGTERM while an upload is being ingested: the job completes and is recorded, nothing is cut."""
    components = components_for()
    headers = _admin(components)
    data_dir = components.settings.data_dir
    files = [("files", (f"policy-{n}.md", _policy_text(n).encode())) for n in range(24)]
    with running(components) as (url, server, thread):
        accepted = httpx.post(f"{url}/admin/collections/office/documents", files=files, headers=headers, timeout=30)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        deadline = time.monotonic() + 30
        while (status := httpx.get(f"{url}/admin/jobs/{job_id}", headers=headers).json()["status"]) == "queued":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.02)
        assert status == "running", status  # too fast to test shutdown against: make the upload larger
        shutdown_at = time.time()
        server.should_exit = True  # what SIGTERM does
        thread.join(timeout=60)
        assert not thread.is_alive()

    import sqlite3

    with sqlite3.connect(data_dir / "jobs.sqlite3") as conn:
        status, finished_at, summary = conn.execute(
            "SELECT status, finished_at, summary FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    conn.close()
    assert status == "succeeded", (status, summary)
    assert finished_at > shutdown_at  # it was still running when shutdown began, and was let finish
    assert json.loads(summary)["added"] == 24
    assert not (data_dir / "uploads" / job_id).exists()  # ingested, so its upload was cleaned up

    after = Components(components.settings, embedder=components.embedder)
    try:
        documents = after.manifest.documents("office")
        assert len(documents) == 24
        chunk_ids = [cid for d in documents for cid in d.chunk_ids]
        assert len(chunk_ids) == len(set(chunk_ids)) and after.store.count("office") == len(chunk_ids)
    finally:
        after.close()


def test_an_idle_connection_outlives_client_pools_expiry(components_for: Any) -> None:
    """kb serve keeps idle connections open past httpx's 5 s pool expiry (uvicorn's own default is 5 s too).

    With equal timeouts a client reuses a pooled connection just as the server closes it, and the
    request fails with a connection reset: 2 of 6,549 requests under load did, before."""
    import socket

    components = components_for()
    assert components.settings.api.keep_alive_s > 5
    with running(components) as (url, _, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            request = b"GET /healthz HTTP/1.1\r\nHost: kb\r\n\r\n"
            for attempt in range(2):
                sock.sendall(request)
                reply = sock.recv(65536)
                assert reply.startswith(b"HTTP/1.1 200"), (attempt, reply[:200])
                if attempt == 0:
                    time.sleep(6)  # idle past 5 s: uvicorn's default would have closed the connection


def test_the_connection_survives_a_500(components_for: Any) -> None:
    """After an unexpected error the same keep-alive connection still serves the next request.

    Starlette's outermost handler re-raised after its 500 and the server dropped the connection, so a
    pooled client's next request failed with a connection reset (5 tries in 10)."""
    import socket

    components = components_for()
    api = create_app(components.settings, components=components)

    def boom() -> None:
        raise RuntimeError("a bug in a route")

    api.add_api_route("/boom", boom)
    with running(components, api) as (url, _, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(3):
                sock.sendall(b"GET /boom HTTP/1.1\r\nHost: kb\r\n\r\n")
                reply = sock.recv(65536)
                assert reply.startswith(b"HTTP/1.1 500"), reply[:200]
                head, _, body = reply.partition(b"\r\n\r\n")
                assert b"connection: close" not in head.lower()
                error = json.loads(body)["error"]
                assert error["code"] == "internal_error" and error["request_id"]
                assert "a bug in a route" not in body.decode()  # no internals reach the client
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: kb\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
