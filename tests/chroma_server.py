"""A real Chroma server for tests: ``chroma run`` (the Rust server shipped in the chromadb
wheel) on a free 127.0.0.1 port, stopped when the block ends.

The same binary and version as the client, so server-mode tests exercise exactly what a
deployment runs (docker-compose.yml starts the same command).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import free_port, stop_process

CHROMA_BIN = Path(sys.executable).parent / "chroma"


@dataclass(frozen=True)
class ChromaServer:
    host: str
    port: int
    path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def chroma_command(path: Path | str, host: str, port: int) -> list[str]:
    """The command line, shared with the deployment-file test (compose must run the same)."""
    return ["chroma", "run", "--path", str(path), "--host", host, "--port", str(port)]


@contextmanager
def chroma_server(workdir: Path, *, timeout_s: float = 30.0) -> Iterator[ChromaServer]:
    """Start ``chroma run`` and wait for its heartbeat; its output goes to workdir/chroma.log."""
    port = free_port()
    data = workdir / "chroma-data"
    args = chroma_command(data, "127.0.0.1", port)
    args[0] = str(CHROMA_BIN)
    log_file = (workdir / "chroma.log").open("wb")
    proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
    server = ChromaServer("127.0.0.1", port, data, proc)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{server.url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chroma run did not start; see {workdir / 'chroma.log'}")
            time.sleep(0.05)
        yield server
    finally:
        stop_process(proc, timeout=10)
        log_file.close()
