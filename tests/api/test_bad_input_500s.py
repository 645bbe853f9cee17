"""Input that used to crash a route (500) gets a 4xx with a JSON error naming the problem (issue #15, 6)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.bootstrap import Components
from tests.servers import api_client


@pytest.fixture
def client(handbook_components: Components) -> Iterator[httpx.Client]:
    with api_client(handbook_components) as c:
        yield c


def post_raw(client: httpx.Client, path: str, body: str) -> httpx.Response:
    return client.post(path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", '{"model": "kb:handbook", "messages": [{"role": "user", "content": "hi \\ud800"}]}'),
        (
            "/v1/chat/completions",
            '{"model": "kb", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
        ),
        ("/chat", '{"question": "leave \\ud800 days", "collection": "handbook"}'),
        ("/search", '{"query": "leave \\ud800", "collection": "handbook"}'),
    ],
)
def test_a_lone_surrogate_is_a_422(client: httpx.Client, path: str, body: str) -> None:
    reply = post_raw(client, path, body)
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "invalid_request"
    assert "surrogate" in error["message"] or "unicode" in error["message"].lower()


@pytest.mark.parametrize("prompt", ["judge@v1", "condense@v1"])
def test_a_prompt_of_the_wrong_kind_is_a_422(client: httpx.Client, prompt: str) -> None:
    reply = client.post(
        "/chat", json={"question": "How many days of leave?", "collection": "handbook", "prompt": prompt}
    )
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "prompt_not_answer"
    assert prompt.split("@")[0] in error["message"] and "answer" in error["message"]


def test_search_refuses_unknown_fields_like_chat(client: httpx.Client) -> None:
    reply = client.post("/search", json={"query": "leave", "collection": "handbook", "stream": "yes"})
    assert reply.status_code == 422, reply.text
    assert "stream" in reply.json()["error"]["message"]
