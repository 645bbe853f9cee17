"""The product over a real Chroma server (``KB_VECTORSTORE__MODE=http``): ingest the sample
handbook, get a cited answer, and readiness that follows the server's health."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bootstrap import Components
from app.errors import ConfigurationError
from app.settings import Settings, VectorStoreSettings
from tests.chroma_server import chroma_server
from tests.conftest import EXAMPLES
from tests.operations.test_operations import running
from tests.servers import free_port


def _settings(data_dir: Path, host: str, port: int) -> Settings:
    vectorstore = VectorStoreSettings(mode="http", host=host, port=port)  # type: ignore[call-arg]
    return Settings(_env_file=None, data_dir=data_dir, vectorstore=vectorstore)  # type: ignore[call-arg]


@pytest.fixture
def server_components(tmp_path: Path, embedder: Any) -> Iterator[tuple[Components, Any]]:
    with chroma_server(tmp_path) as srv:
        components = Components(_settings(tmp_path / "data", srv.host, srv.port), embedder=embedder)
        try:
            yield components, srv
        finally:
            components.close()


def test_ingest_and_answer_through_a_chroma_server(server_components: tuple[Components, Any]) -> None:
    components, srv = server_components
    report = components.ingest_pipeline.ingest([EXAMPLES], "handbook")
    assert report.added == 4 and not report.failed, report
    assert not (components.settings.chroma_dir).exists()  # nothing embedded on the API side
    assert (srv.path / "chroma.sqlite3").exists()  # the vectors are in the server's directory
    answer = components.rag.answer("How many days of annual leave do I get?", "handbook")
    assert "27 days" in answer.answer and answer.grounded
    first = answer.citations[0]
    assert (first.source, first.page) == ("handbook.pdf", 2)
    assert f"[{first.n}]" in answer.answer
    again = components.ingest_pipeline.ingest([EXAMPLES], "handbook")  # the server state is the truth
    assert again.unchanged == 4 and again.added == 0

    auth = {"Authorization": f"Bearer {components.keys.create('ops', 'admin', ['*']).token}"}
    search = {"query": "annual leave", "collection": "handbook"}
    with running(components) as (url, _, _):
        assert httpx.post(f"{url}/search", json=search, headers=auth).status_code == 200
        r = httpx.get(f"{url}/readyz")
        assert r.status_code == 200 and r.json()["checks"]["vector_store"]["status"] == "ok", r.text
        srv.process.terminate()
        srv.process.wait(timeout=10)
        r = httpx.get(f"{url}/readyz")
        assert r.status_code == 503
        assert r.json()["failing"] == ["vector_store"]
        assert r.json()["checks"]["vector_store"]["error"] == "StoreUnavailable"
        assert httpx.get(f"{url}/healthz").status_code == 200  # alive, just not ready
        r = httpx.post(f"{url}/search", json=search, headers=auth)
        assert r.status_code == 503  # an outage, not "collection not found"
        assert r.json()["error"]["code"] == "vector_store_unavailable"
        assert srv.url not in r.text


def test_an_unreachable_server_is_a_configuration_error(tmp_path: Path) -> None:
    port = free_port()
    components = Components(_settings(tmp_path / "data", "127.0.0.1", port))
    with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}.*KB_VECTORSTORE__MODE=embedded"):
        _ = components.store


def test_auth_token_and_headers_reach_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KB_VECTORSTORE__AUTH_TOKEN and __HEADERS (JSON) are sent on every call to the Chroma server."""
    seen: list[dict[str, str]] = []

    class Recorder(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            self.send_response(401)  # what a Chroma server with token auth says to a wrong token
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("KB_VECTORSTORE__MODE", "http")
        monkeypatch.setenv("KB_VECTORSTORE__PORT", str(server.server_address[1]))
        monkeypatch.setenv("KB_VECTORSTORE__AUTH_TOKEN", "s3cret")
        monkeypatch.setenv("KB_VECTORSTORE__HEADERS", '{"X-Proxy-Auth": "p"}')
        settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]
        with pytest.raises(ConfigurationError) as err:
            _ = Components(settings).store
    finally:
        server.shutdown()
        server.server_close()
    assert seen, "the client never called the server"
    assert seen[0]["Authorization"] == "Bearer s3cret" and seen[0]["X-Proxy-Auth"] == "p"
    assert "s3cret" not in str(err.value)  # the message names the URL, never the token
