"""The real FastAPI app over HTTP (uvicorn on 127.0.0.1), with the sample handbook ingested."""

from collections.abc import Iterator

import httpx
import pytest

from app.api.main import create_app
from app.bootstrap import Components
from tests.servers import serve_app


@pytest.fixture
def base_url(handbook_components: Components) -> Iterator[str]:
    app = create_app(handbook_components.settings, components=handbook_components)
    with serve_app(app) as url:
        yield url


def test_chat_returns_a_cited_answer_from_the_pdf(base_url: str) -> None:
    r = httpx.post(
        f"{base_url}/chat",
        json={"question": "How many days of annual leave do I get?", "collection": "handbook"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "27 days" in body["answer"]
    assert body["citations"][0]["source"] == "handbook.pdf" and body["citations"][0]["page"] == 2
    assert body["prompt"] == "answer@v1" and body["provider"] == "extractive"
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["cost_usd"] == 0.0
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["grounded"] is True and body["cached"] is False


def test_request_id_from_the_client_is_kept(base_url: str) -> None:
    r = httpx.post(
        f"{base_url}/chat",
        json={"question": "What is the meal allowance?", "collection": "handbook"},
        headers={"X-Request-ID": "trace-abc"},
        timeout=60,
    )
    assert r.json()["request_id"] == "trace-abc"


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"question": "Anything?", "collection": "nope"}, 404, "collection_not_found"),
        ({"question": "", "collection": "handbook"}, 422, "invalid_request"),
        ({"collection": "handbook"}, 422, "invalid_request"),
        ({"question": "x" * 3000, "collection": "handbook"}, 413, "question_too_long"),
        ({"question": "Anything?", "collection": "handbook", "top_k": 500}, 422, "top_k_out_of_range"),
        ({"question": "Anything?", "collection": "handbook", "prompt": "answer@v9"}, 404, "prompt_not_found"),
    ],
)
def test_bad_requests_get_json_errors(base_url: str, payload: dict, status: int, code: str) -> None:
    r = httpx.post(f"{base_url}/chat", json=payload, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["request_id"]
    assert "Traceback" not in r.text


def test_malformed_json_is_a_clear_422(base_url: str) -> None:
    r = httpx.post(f"{base_url}/chat", content=b"{not json", headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_health_docs_and_collections(base_url: str) -> None:
    assert httpx.get(f"{base_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base_url}/docs").status_code == 200
    spec = httpx.get(f"{base_url}/openapi.json").json()
    assert "/chat" in spec["paths"]
    assert {"name": "handbook", "chunks": handbook_chunks(base_url)} in httpx.get(f"{base_url}/collections").json()
    missing = httpx.get(f"{base_url}/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def handbook_chunks(base_url: str) -> int:
    rows = httpx.get(f"{base_url}/collections").json()
    return next(r["chunks"] for r in rows if r["name"] == "handbook")
