"""Our /v1 API driven by the real openai SDK and LangChain's ChatOpenAI, as employees' tools would."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from langchain_openai import ChatOpenAI

from app.bootstrap import Components
from tests.servers import serve_app

QUESTION = "How many days of annual leave do I get?"


@pytest.fixture
def server(handbook_components: Components) -> Iterator[tuple[str, str]]:
    """Base URL of /v1 and an employee key for the handbook."""
    from app.api.main import create_app

    token = handbook_components.keys.create("sdk-user", "employee", ["handbook"]).token
    with serve_app(create_app(handbook_components.settings, components=handbook_components)) as url:
        yield f"{url}/v1", token


def test_openai_sdk_lists_models_and_answers_with_citations(server: tuple[str, str]) -> None:
    base_url, token = server
    client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)
    assert [m.id for m in client.models.list()] == ["kb", "kb:handbook"]
    completion = client.chat.completions.create(model="kb:handbook", messages=[{"role": "user", "content": QUESTION}])
    text = completion.choices[0].message.content or ""
    assert "27 days" in text and "[1]" in text and "References:\n[1] handbook.pdf, page 2" in text
    extra = completion.model_extra or {}
    assert extra["citations"][0]["page"] == 2 and extra["kb"]["prompt"] == "answer@v2"
    assert extra["kb"]["grounded"] is True and completion.usage and completion.usage.prompt_tokens > 0


def test_openai_sdk_streams_and_keeps_the_conversation(server: tuple[str, str]) -> None:
    base_url, token = server
    client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "Full-time employees receive 27 days [1].\n\nReferences:\n[1] handbook.pdf"},
        {"role": "user", "content": "And for contractors?"},
    ]
    chunks = list(client.chat.completions.create(model="kb", messages=messages, stream=True))  # type: ignore[call-overload]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Contractors do not accrue paid annual leave" in text and "page 3" in text
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert (final.model_extra or {})["kb"]["standalone_question"].endswith("for contractors?")


def test_openai_sdk_sees_access_errors(server: tuple[str, str], handbook_components: Components) -> None:
    base_url, token = server
    client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match="may not read collection 'hr'"):
        client.chat.completions.create(model="kb:hr", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.NotFoundError, match="not one of ours"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url, api_key="kb_wrong", max_retries=0).models.list()


def test_langchain_chat_openai_against_kb(server: tuple[str, str]) -> None:
    base_url, token = server
    llm = ChatOpenAI(base_url=base_url, api_key=token, model="kb:handbook", max_retries=0)  # type: ignore[arg-type]
    reply = llm.invoke("What is the guest Wi-Fi network called?")
    assert "Fernhill-Guest" in str(reply.content) and "office-faq.txt" in str(reply.content)
    streamed = "".join(str(chunk.content) for chunk in llm.stream("What is the hotel limit per night?"))
    assert "180 EUR" in streamed and "expenses.html" in streamed
