"""Real HTTP servers on 127.0.0.1 for tests: our FastAPI app under uvicorn, and a small
OpenAI-compatible chat server (non-streaming and SSE streaming, with usage fields)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    """SIGTERM (as ``docker stop``), then SIGKILL if it has not exited within ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def serve_app(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """Run the app under a real uvicorn server in a thread (on ``port``, else a free one); yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
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


class FakeOpenAI:
    """Speaks enough of /v1/chat/completions for the openai SDK; records what it received.

    ``reply`` is the answer text (``replies``, if any, answer the next requests first, one each);
    ``usage`` the token counts it reports (None: omit usage);
    ``delay_s`` sleeps before answering (timeouts); ``status`` forces an HTTP error.
    ``script`` lists what the next requests get before normal service resumes, one item
    per request: an HTTP status (429 and 503 carry ``Retry-After: retry_after``),
    "malformed" (200 with a broken JSON body) or "hang" (no answer for ``hang_s``).
    """

    def __init__(self) -> None:
        self.reply = "Full-time employees get 27 days of annual leave [1]."
        self.replies: list[str] = []
        self.usage: dict[str, int] | None = {"prompt_tokens": 321, "completion_tokens": 12}
        self.delay_s = 0.0
        self.status = 200
        self.script: list[int | str] = []
        self.retry_after = "0"
        self.hang_s = 5.0
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._handle()  # a client that gave up (timeout tests) needs no answer

            def _handle(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    step = fake.script.pop(0) if fake.script else None
                    reply = fake.replies.pop(0) if fake.replies and step is None else fake.reply
                time.sleep(fake.delay_s)
                if step == "hang":
                    time.sleep(fake.hang_s)
                elif step == "malformed":
                    self._raw(200, b'{"id": "chatcmpl-1", "choices": [')
                elif isinstance(step, int):
                    extra = {"Retry-After": fake.retry_after} if step in (429, 503) else {}
                    self._json(step, {"error": {"message": f"scripted {step}", "type": "server_error"}}, extra)
                elif fake.status != 200:
                    self._json(fake.status, {"error": {"message": "upstream exploded", "type": "server_error"}})
                elif body.get("stream"):
                    self._stream(body, reply)
                else:
                    self._json(200, fake._completion(body, reply))

            def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                self._raw(status, json.dumps(payload).encode(), headers)

            def _raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict[str, Any], reply: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
                words = reply.split(" ")
                for i, word in enumerate(words):
                    delta = {"content": word + (" " if i < len(words) - 1 else "")}
                    chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                done = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(done)}\n\n".encode())
                if fake.usage is not None and (body.get("stream_options") or {}).get("include_usage"):
                    usage_chunk = {**base, "choices": [], "usage": fake._usage()}
                    self.wfile.write(f"data: {json.dumps(usage_chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _usage(self) -> dict[str, int]:
        assert self.usage is not None
        return {**self.usage, "total_tokens": sum(self.usage.values())}

    def _completion(self, body: dict[str, Any], reply: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        }
        if self.usage is not None:
            payload["usage"] = self._usage()
        return payload

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A real redis-server on a free 127.0.0.1 port, no persistence; yields its URL.

    Skips the calling test when the binary is missing (``make test`` installs it as root).
    """
    import pytest
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; make test does it as root)")
    port = free_port()
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def api_client(components: Any, *, role: str = "admin", collections: tuple[str, ...] = ("*",)) -> Iterator[Any]:
    """Our app under uvicorn and an httpx client for it, authenticated with a new key of this role."""
    import httpx

    from app.api.main import create_app

    token = components.keys.create(f"test-{role}", role, list(collections)).token
    with (
        serve_app(create_app(components.settings, components=components)) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client,
    ):
        yield client


class UnixProxy:
    """Forwards a Unix socket to another (PostgreSQL's ``.s.PGSQL.5432``); ``cut()`` is the server going away.

    The test database server is shared by the whole session and cannot be stopped for one test; to a
    client, a proxy that closes its listener and every open connection is the same outage: connects
    are refused, pooled connections are dead. ``restore()`` brings it back on the same path.
    """

    def __init__(self, target: Path, listen: Path):
        self.target, self.listen = target, listen
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def restore(self) -> None:
        self.listen.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.listen))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            conns, self._open = self._open, []
        for s in [server, *conns]:
            if s is not None:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        self.listen.unlink(missing_ok=True)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # cut
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(str(self.target))
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in a /metrics body whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
