"""Real servers a bench script starts for itself: ``chroma run`` and a fixed-answer OpenAI-compatible model.

The benches measure kb against these, so they live with the benches (the test suite has its own,
scriptable ones in tests/servers.py: a bench must run without the test code). Both listen on a free
127.0.0.1 port and stop when their block ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
from http_query import free_port

CHROMA_BIN = Path(sys.executable).parent / "chroma"


@dataclass(frozen=True)
class ChromaServer:
    host: str
    port: int
    process: subprocess.Popen[bytes]


@contextmanager
def chroma_server(workdir: Path, *, timeout_s: float = 30.0) -> Iterator[ChromaServer]:
    """``chroma run`` (the server in the chromadb wheel) on ``workdir/chroma-data``; log in workdir/chroma.log."""
    port = free_port()
    args = [str(CHROMA_BIN), "run", "--path", str(workdir / "chroma-data"), "--host", "127.0.0.1", "--port", str(port)]
    with (workdir / "chroma.log").open("wb") as log_file:
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chroma run did not start; see {workdir / 'chroma.log'}")
                time.sleep(0.05)
            yield ChromaServer("127.0.0.1", port, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class FixedAnswerModel:
    """``POST /v1/chat/completions`` answered at once with one fixed text and fixed usage (no streaming):
    the cheapest upstream, so what a bench measures above it is the caller's own cost."""

    reply: ClassVar[str] = "Full-time employees get 27 days of annual leave [1]."
    usage: ClassVar[dict[str, int]] = {"prompt_tokens": 321, "completion_tokens": 12, "total_tokens": 333}

    def __init__(self) -> None:
        self.served = 0
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                model.served += 1
                message = {"role": "assistant", "content": model.reply}
                data = json.dumps({
                    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": model.usage,
                }).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FixedAnswerModel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
