"""Conversations and streaming over real HTTP: follow-ups are condensed, streams end with citations."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from app.bootstrap import Components
from app.rag.condense import rule_condense
from app.settings import LlmSettings, Settings
from tests.servers import FakeOpenAI, api_client


@pytest.mark.parametrize(
    ("previous", "follow_up", "expected"),
    [
        (
            "How long is the probation period?",
            "And for contractors?",
            "How long is the probation period for contractors?",
        ),
        ("How long is parental leave?", "Is it paid?", "How long is parental leave? Is it paid?"),
        ("What is the hotel limit?", "What about meals?", "What is the hotel limit, regarding meals?"),
        (
            "What is the hotel limit?",
            "How many days of annual leave do I get?",
            "How many days of annual leave do I get?",
        ),
    ],
)
def test_the_offline_condenser_rule(previous: str, follow_up: str, expected: str) -> None:
    assert rule_condense(follow_up, previous) == expected


def sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    events = []
    for block in response.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_a_follow_up_retrieves_the_contractor_policy(handbook_components: Components) -> None:
    with api_client(handbook_components, role="employee", collections=("handbook",)) as client:
        first = client.post("/chat", json={"question": "How many days of annual leave do I get?"}).json()
        assert first["grounded"] and "27 days" in first["answer"] and first["citations"][0]["page"] == 2
        follow = client.post(
            "/chat", json={"question": "And for contractors?", "conversation_id": first["conversation_id"]}
        ).json()
        assert follow["conversation_id"] == first["conversation_id"]
        assert follow["standalone_question"] == "How many days of annual leave do I get for contractors?"
        assert follow["grounded"] and "Contractors do not accrue paid annual leave" in follow["answer"]
        assert follow["citations"][0]["source"] == "handbook.pdf" and follow["citations"][0]["page"] == 3
        # Without the conversation the same words find nothing to answer with.
        alone = client.post("/chat", json={"question": "And for contractors?"}).json()
        assert alone["standalone_question"] == "And for contractors?"
        assert alone["conversation_id"] != first["conversation_id"]


def test_conversations_belong_to_their_key(handbook_components: Components) -> None:
    with (
        api_client(handbook_components, role="employee", collections=("handbook",)) as alice,
        api_client(handbook_components, role="employee", collections=("handbook",)) as bob,
    ):
        mine = alice.post("/chat", json={"question": "How long is the probation period?"}).json()
        theirs = bob.post(
            "/chat", json={"question": "And for contractors?", "conversation_id": mine["conversation_id"]}
        )
        unknown = bob.post("/chat", json={"question": "And for contractors?", "conversation_id": "nope"})
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "conversation_not_found"


def test_streamed_answer_ends_with_citations_usage_and_prompt(handbook_components: Components) -> None:
    with api_client(handbook_components, role="employee", collections=("handbook",)) as client:
        r = client.post("/chat", json={"question": "How many days of annual leave do I get?", "stream": True})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
        tokens = [data["delta"] for kind, data in events if kind == "token"]
        kinds = [kind for kind, _ in events]
        assert len(tokens) > 3 and kinds[-1] == "done" and kinds.count("done") == 1
        done = events[-1][1]
        assert "".join(tokens) == done["answer"] and "27 days" in done["answer"]
        assert done["citations"][0]["page"] == 2 and done["prompt"] == "answer@v2"
        assert done["usage"]["prompt_tokens"] > 0 and done["conversation_id"]
        # The streamed turn is part of the conversation.
        follow = client.post(
            "/chat", json={"question": "And carry-over?", "conversation_id": done["conversation_id"], "stream": True}
        )
        assert sse_events(follow)[-1][1]["standalone_question"].startswith("How many days of annual leave")
        # Errors found before the stream starts keep their status and JSON body.
        bad = client.post("/chat", json={"question": "x" * 5000, "stream": True})
        assert bad.status_code == 413 and bad.json()["error"]["code"] == "question_too_long"


@pytest.fixture
def failing_provider(handbook_components: Components, embedder) -> Iterator[tuple[Components, FakeOpenAI]]:  # type: ignore[no-untyped-def]
    with FakeOpenAI() as fake:
        llm = LlmSettings(base_url=fake.base_url, model="gpt-4o-mini", max_retries=0, timeout_s=5)  # type: ignore[call-arg]
        settings = Settings(_env_file=None, data_dir=handbook_components.settings.data_dir, llm=llm)  # type: ignore[call-arg]
        components = Components(settings, embedder=embedder)
        yield components, fake
        components.close()


def test_a_provider_failure_mid_stream_is_an_error_event(failing_provider: tuple[Components, FakeOpenAI]) -> None:
    components, fake = failing_provider
    fake.status = 500
    with api_client(components, role="employee", collections=("handbook",)) as client:
        r = client.post("/chat", json={"question": "How many days of annual leave do I get?", "stream": True})
        assert r.status_code == 200
        kind, data = sse_events(r)[-1]
        assert kind == "error" and data["error"]["code"] == "provider_error" and data["error"]["request_id"]
        plain = client.post("/chat", json={"question": "How many days of annual leave do I get?"})
        assert plain.status_code == 502 and plain.json()["error"]["code"] == "provider_error"
