"""Secrets and document text never reach the logs at INFO level.

One realistic day, with every log record at INFO and above captured (the root logger,
uvicorn's server and access loggers, and httpx under the openai SDK, all at INFO):
``kb keys create`` through the CLI, the first-run admin key written at start-up, an
admin upload and ingestion of a document with a unique sentence, questions over
``/chat`` (plain and streamed) and ``/v1/chat/completions`` with good, unknown, missing
and revoked keys, all answered by the ``openai`` provider (a distinctive API key)
against a local OpenAI-compatible server that quotes the document in its answers and,
in between, fails with 401, 500 and a malformed body so the error paths log too.

The records must carry none of: an API key, the provider API key, the document's
sentence, the answer text. The test also checks that the capture saw the records of
each of those paths, so a logger that stopped being captured cannot make it pass.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner

from app.bootstrap import Components
from app.settings import LlmSettings, Settings, get_settings
from tests.servers import FakeOpenAI, free_port

PROVIDER_KEY = "sk-test-SECRET-" + secrets.token_hex(12)
SENTENCE = "The quokka committee approves every orangery budget on the third Thursday of each month."
QUESTION = "When does the quokka committee approve orangery budgets?"
REPLY = f"{SENTENCE} [1]"
TOKEN = re.compile(r"kb_[A-Za-z0-9_-]{43}")
LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "openai", "app", "ingest", "vectorstore")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.formatter_ = logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.formatter_.format(record))  # message, args and any traceback

    def text(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def captured_logs() -> Iterator[Records]:
    """Every record at INFO or above from the loggers a deployment shows, whatever earlier tests set.
    Logger levels are restored afterwards (``kb``'s CLI set-up changes some of them)."""
    handler = Records()
    saved = {name: logging.getLogger(name).level for name in (*LOGGERS, "chromadb", "sentence_transformers")}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    for name in ("", "uvicorn", "uvicorn.access"):  # uvicorn's own config may stop them propagating
        logging.getLogger(name).addHandler(handler)
    try:
        yield handler
    finally:
        for name in ("", "uvicorn", "uvicorn.access"):
            logging.getLogger(name).removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextmanager
def serve_logged(app: FastAPI) -> Iterator[str]:
    """Like tests.servers.serve_app, but with uvicorn logging at INFO (access log on) into our loggers."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", log_config=None, access_log=True)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def fragments(secret: str, size: int = 12) -> list[str]:
    """Every ``size``-character piece of a secret's random part: a truncated secret is still a leak."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def kb(runner: CliRunner, *args: str) -> str:
    from app.cli import cli

    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def wait_for_job(client: httpx.Client, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(f"/admin/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"ingestion job {job_id} did not finish")


def test_keys_provider_key_and_document_text_stay_out_of_info_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder
) -> None:  # type: ignore[no-untyped-def]
    from app.api.main import create_app

    data_dir = tmp_path / "data"
    monkeypatch.setenv("KB_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    runner = CliRunner()
    docs = tmp_path / "upload"
    docs.mkdir()
    (docs / "committees.md").write_text(f"# Committees\n\n{SENTENCE}\n", encoding="utf-8")

    with captured_logs() as logs, FakeOpenAI() as fake:
        try:
            employee = TOKEN.findall(kb(runner, "keys", "create", "--name", "alice", "--collections", "notes"))[-1]
            leaver = TOKEN.findall(kb(runner, "keys", "create", "--name", "bob", "--collections", "notes"))[-1]
            kb(runner, "keys", "list")
            kb(runner, "keys", "revoke", "bob")
        finally:
            get_settings.cache_clear()
        for name in ("httpx", "openai"):  # the CLI quiets httpx; a server may not: capture it anyway
            logging.getLogger(name).setLevel(logging.INFO)

        fake.reply = REPLY
        llm = LlmSettings(
            base_url=fake.base_url, api_key=PROVIDER_KEY, model="gpt-4o-mini", timeout_s=5.0, max_retries=1,
            retry_backoff_s=0.01,
        )  # type: ignore[call-arg]  # fmt: skip
        settings = Settings(_env_file=None, data_dir=data_dir, llm=llm)  # type: ignore[call-arg]
        components = Components(settings, embedder=embedder)
        try:
            with serve_logged(create_app(settings, components=components)) as url:
                admin = settings.admin_key_file.read_text(encoding="utf-8").strip()
                unknown = "kb_" + secrets.token_urlsafe(32)
                tokens = {"employee": employee, "revoked": leaver, "admin": admin, "unknown": unknown}
                statuses = run_the_day(url, tokens, docs / "committees.md", fake)
        finally:
            components.close()

    text = logs.text()
    # The capture saw every path where a secret could have been logged.
    expected = (
        "created employee key", "revoked keys", "first run: created admin API key", "accepted ingestion job",
        "ingest 'notes'", "answered request", "request failed with invalid_api_key", "request failed with provider_",
        "attempt 1 failed", '"POST /chat HTTP/1.1" 200', '"POST /v1/chat/completions HTTP/1.1" 200',
        "HTTP Request: POST " + fake.base_url,
    )  # fmt: skip
    missing = [e for e in expected if e not in text]
    if not re.search(r"stream \w+ failed with provider_error", text):
        missing.append("the streamed provider failure")
    assert not missing, f"records not captured: {missing}\n{text}"
    assert statuses == EXPECTED_STATUSES

    secrets_ = {
        "employee key": fragments(employee[3:]),
        "revoked key": fragments(leaver[3:]),
        "admin key": fragments(admin[3:]),
        "unknown key": fragments(unknown[3:]),
        "provider key": fragments(PROVIDER_KEY[len("sk-test-") :]),
        "document sentence": [SENTENCE, "quokka committee approves", "orangery budget"],
        "question": [QUESTION, "approve orangery budgets"],
    }
    leaked = {what: sorted({f for f in parts if f in text}) for what, parts in secrets_.items()}
    leaked = {what: found for what, found in leaked.items() if found}
    assert not leaked, f"secrets in INFO logs: {leaked}\n{text}"


EXPECTED_STATUSES = {
    "upload": 202,
    "chat": 200,
    "chat stream": 200,
    "v1": 200,
    "v1 stream": 200,
    "unknown key": 401,
    "missing key": 401,
    "revoked key": 401,
    "provider 401": 502,
    "provider 500": 502,
    "provider malformed": 502,
    "provider 500 streamed": 200,
}


def run_the_day(url: str, tokens: dict[str, str], document: Path, fake: FakeOpenAI) -> dict[str, int]:
    def client(who: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
        return httpx.Client(base_url=url, headers=headers, timeout=60)

    statuses: dict[str, int] = {}
    chat = {"question": QUESTION, "collection": "notes", "cache": False}
    v1 = {"model": "kb:notes", "messages": [{"role": "user", "content": QUESTION}]}
    with client("admin") as admin, client("employee") as employee:
        with document.open("rb") as f:
            upload = admin.post("/admin/collections/notes/documents", files={"files": (document.name, f)})
        statuses["upload"] = upload.status_code
        assert wait_for_job(admin, upload.json()["id"])["status"] == "succeeded"

        answered = employee.post("/chat", json=chat)
        assert SENTENCE in answered.json()["answer"], answered.text  # the answer quotes the document
        statuses["chat"] = answered.status_code
        streamed = employee.post("/chat", json={**chat, "stream": True})
        assert "event: done" in streamed.text, streamed.text
        statuses["chat stream"] = streamed.status_code
        statuses["v1"] = employee.post("/v1/chat/completions", json=v1).status_code
        statuses["v1 stream"] = employee.post("/v1/chat/completions", json={**v1, "stream": True}).status_code

        for who in ("unknown", None, "revoked"):
            with client(who) as other:
                statuses[f"{who or 'missing'} key"] = other.post("/chat", json=chat).status_code

        for label, script in (("401", [401]), ("500", [500, 500]), ("malformed", ["malformed", "malformed"])):
            fake.script = list(script)
            statuses[f"provider {label}"] = employee.post("/chat", json=chat).status_code
        fake.script = [500, 500]
        failed = employee.post("/chat", json={**chat, "stream": True})
        assert "event: error" in failed.text, failed.text
        statuses["provider 500 streamed"] = failed.status_code
    return statuses


class EchoingProvider:
    """An OpenAI-compatible endpoint that rejects every call with a 400 whose message echoes the request
    and the key it was sent, as FastAPI-based proxies do (their 422 bodies quote the offending ``input``)
    and as some gateways do with keys ("Received API Key = sk-..."). A real server on 127.0.0.1."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                message = f"invalid request {json.dumps(body['messages'])}; key {self.headers.get('Authorization')}"
                data = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> EchoingProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_a_provider_error_that_echoes_the_request_is_not_logged_or_relayed(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from app.api.main import create_app

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "committees.md").write_text(f"# Committees\n\n{SENTENCE}\n", encoding="utf-8")
    with EchoingProvider() as provider, captured_logs() as logs:
        llm = LlmSettings(base_url=provider.base_url, api_key=PROVIDER_KEY, model="gpt-4o-mini", max_retries=0)  # type: ignore[call-arg]
        settings = Settings(_env_file=None, data_dir=tmp_path / "data", llm=llm)  # type: ignore[call-arg]
        components = Components(settings, embedder=embedder)
        try:
            assert components.ingest_pipeline.ingest([docs], "notes").added == 1
            token = components.keys.create("alice", "employee", ["notes"]).token
            with (
                serve_logged(create_app(settings, components=components)) as url,
                httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client,
            ):
                chat = {"question": QUESTION, "collection": "notes"}
                failed = client.post("/chat", json=chat)
                streamed = client.post("/chat", json={**chat, "stream": True})
        finally:
            components.close()
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "provider_error", failed.text
    assert "HTTP 400" in failed.json()["error"]["message"]  # the operator still learns what happened
    assert "event: error" in streamed.text
    text = logs.text()
    assert "request failed with provider_error" in text and f"stream {streamed.headers['x-request-id']}" in text
    for where, seen in (("logs", text), ("the /chat error", failed.text), ("the stream's error", streamed.text)):
        for secret in [*fragments(PROVIDER_KEY[len("sk-test-") :]), "quokka committee approves"]:
            assert secret not in seen, f"{secret!r} reached {where}: {seen}"
