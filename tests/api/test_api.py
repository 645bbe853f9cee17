"""The real FastAPI app over HTTP (uvicorn on 127.0.0.1), with the sample handbook ingested."""

import re
from collections.abc import Iterator

import httpx
import pytest

from app.bootstrap import Components
from tests.servers import api_client


@pytest.fixture
def client(handbook_components: Components) -> Iterator[httpx.Client]:
    with api_client(handbook_components) as api:
        yield api


def test_chat_returns_a_cited_answer_from_the_pdf(client: httpx.Client) -> None:
    r = client.post(
        "/chat",
        json={"question": "How many days of annual leave do I get?", "collection": "handbook"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "27 days" in body["answer"]
    assert body["citations"][0]["source"] == "handbook.pdf" and body["citations"][0]["page"] == 2
    assert body["prompt"] == "answer@v2" and body["provider"] == "extractive"
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["cost_usd"] == 0.0
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["grounded"] is True and body["cached"] is False


def test_request_id_from_the_client_is_kept(client: httpx.Client) -> None:
    r = client.post(
        "/chat",
        json={"question": "What is the meal allowance?", "collection": "handbook"},
        headers={"X-Request-ID": "trace-abc"},
        timeout=60,
    )
    assert r.json()["request_id"] == "trace-abc"
    # an id that is not a plain token (spaces, quotes, log-line look-alikes) is replaced by one of ours
    odd = client.get("/healthz", headers={"X-Request-ID": 'x" level=ERROR msg="forged'})
    assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["x-request-id"])


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"question": "Anything?", "collection": "nope"}, 404, "collection_not_found"),
        ({"question": "", "collection": "handbook"}, 422, "invalid_request"),
        ({"collection": "handbook"}, 422, "invalid_request"),
        ({"question": "x" * 3000, "collection": "handbook"}, 413, "question_too_long"),
        ({"question": "Anything?", "collection": "handbook", "top_k": 50}, 422, "top_k_out_of_range"),
        ({"question": "Anything?", "collection": "handbook", "top_k": 500}, 422, "invalid_request"),
        ({"question": "Anything?", "collection": "handbook", "prompt": "answer@v9"}, 404, "prompt_not_found"),
    ],
)
def test_bad_requests_get_json_errors(client: httpx.Client, payload: dict, status: int, code: str) -> None:
    r = client.post("/chat", json=payload, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["request_id"]
    assert "Traceback" not in r.text


def test_malformed_json_is_a_clear_422(client: httpx.Client) -> None:
    r = client.post("/chat", content=b"{not json", headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert "the body is not valid JSON" in r.json()["error"]["message"], r.text


def test_health_docs_and_collections(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/chat" in spec["paths"]
    assert {"name": "handbook", "chunks": handbook_chunks(client)} in client.get("/collections").json()
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def handbook_chunks(client: httpx.Client) -> int:
    rows = client.get("/collections").json()
    return next(r["chunks"] for r in rows if r["name"] == "handbook")


def test_metrics_and_docs_exposure_are_settings(handbook_components: Components) -> None:
    with api_client(handbook_components, role="employee", collections=("handbook",)) as employee:
        assert httpx.get(f"{employee.base_url}/metrics").status_code == 401  # default: an admin key
        assert employee.get("/metrics").status_code == 403
        assert httpx.get(f"{employee.base_url}/docs").status_code == 200
    with api_client(handbook_components) as admin:
        assert admin.get("/metrics").status_code == 200 and "kb_http_requests_total" in admin.get("/metrics").text
    handbook_components.settings.api.metrics = "public"
    handbook_components.settings.api.docs = "off"
    with api_client(handbook_components) as admin:
        assert httpx.get(f"{admin.base_url}/metrics").status_code == 200
        for path in ("docs", "redoc", "openapi.json"):
            assert httpx.get(f"{admin.base_url}/{path}").status_code == 404
    handbook_components.settings.api.metrics = "off"
    with api_client(handbook_components) as admin:
        assert admin.get("/metrics").status_code == 404
