"""A server whose data cannot be written says so: readiness fails and writes get a 503 naming the cause (#15, 7).

Files cannot be made read-only for root (the tests run as root in their namespace), so the
server is given a file-size limit of 0 bytes (RLIMIT_FSIZE, set from outside with prlimit):
every write that would grow a file fails with EFBIG, as on a full disk, while reads go on.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.operations.test_replicas import KB, _wait_ready
from tests.servers import free_port, stop_process

pytestmark = pytest.mark.slow


def test_an_unwritable_store_fails_readiness_and_writes_get_a_503(handbook_data_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(handbook_data_dir, data)
    env = {**os.environ, "KB_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    port = free_port()
    # Output to a pipe, not a file: under the file-size limit the server could not write a log file either.
    proc = subprocess.Popen(
        [str(KB), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines: list[bytes] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")), daemon=True).start()  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, tmp_path / "no-log-file")
        key = (data / "admin-key.txt").read_text().strip()
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert admin.get("/admin/collections").status_code == 200
        soft, hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (0, hard))
        try:
            ready = httpx.get(f"{url}/readyz", timeout=10)
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["writable"]["status"] == "failing"
            deleted = admin.delete("/admin/collections/handbook/documents/oncall.md")
            assert deleted.status_code == 503, deleted.text
            error = deleted.json()["error"]
            assert error["code"] == "storage_not_writable"
            assert "cannot write" in error["message"] and "full or read-only" in error["message"]
            # a question needs its audit and ledger rows written: refused the same way, not with a 500
            answer = admin.post("/chat", json={"question": "What is the on-call allowance?", "collection": "handbook"})
            assert answer.status_code == 503, b"".join(lines[-60:]).decode()
            assert answer.json()["error"]["code"] == "storage_not_writable"
            assert admin.post("/search", json={"query": "on-call", "collection": "handbook"}).status_code == 200
        finally:
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        assert admin.delete("/admin/collections/handbook/documents/oncall.md").status_code == 200
    finally:
        stop_process(proc)


def test_a_chroma_server_that_cannot_write_is_named(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    """The vector store alone refuses writes (its server's disk is full): 503 naming it, readiness failing."""
    from app.bootstrap import Components
    from app.settings import Settings
    from tests.chroma_server import chroma_server
    from tests.conftest import EXAMPLES
    from tests.servers import api_client

    with chroma_server(tmp_path) as chroma:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, data_dir=tmp_path / "data", vectorstore={"mode": "http", "port": chroma.port}
        )
        components = Components(settings, embedder=embedder)
        components.ingest_pipeline.ingest([EXAMPLES], "handbook")
        with api_client(components) as admin:
            soft, hard = resource.prlimit(chroma.process.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(chroma.process.pid, resource.RLIMIT_FSIZE, (0, hard))
            try:
                deleted = admin.delete("/admin/collections/handbook/documents/oncall.md")
                assert deleted.status_code == 503, deleted.text
                error = deleted.json()["error"]
                assert error["code"] == "storage_not_writable"
                assert "vector store" in error["message"] and "cannot be written" in error["message"]
                ready = admin.get("/readyz")
                assert ready.status_code == 503 and ready.json()["checks"]["writable"]["status"] == "failing"
            finally:
                resource.prlimit(chroma.process.pid, resource.RLIMIT_FSIZE, (soft, hard))
        components.close()
