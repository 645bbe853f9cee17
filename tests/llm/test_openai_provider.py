"""The openai provider through the real openai SDK against an OpenAI-compatible server on 127.0.0.1."""

from collections.abc import Iterator

import pytest

from app.bootstrap import Components
from app.errors import ProviderError, ProviderTimeoutError
from app.llm.base import ChatRequest, GenerationParams, Message
from app.rag.options import AskOptions
from app.settings import LlmSettings, ModelPrice, Settings
from tests.servers import FakeOpenAI

PRICE = ModelPrice(input_per_million=1.0, output_per_million=4.0)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def openai_components(fake: FakeOpenAI, handbook_components: Components, embedder) -> Iterator[Components]:  # type: ignore[no-untyped-def]
    llm = LlmSettings(
        base_url=fake.base_url, api_key="sk-test", model="house-model", timeout_s=2.0, prices={"house-model": PRICE}
    )  # type: ignore[call-arg]
    settings = Settings(_env_file=None, data_dir=handbook_components.settings.data_dir, llm=llm)  # type: ignore[call-arg]
    components = Components(settings, embedder=embedder)
    yield components
    components.close()


def test_rag_answer_via_openai_is_costed_cached_and_logged(openai_components: Components, fake: FakeOpenAI) -> None:
    rag = openai_components.rag
    first = rag.answer("How many days of annual leave do I get?", "handbook", AskOptions(request_id="r1"))
    assert first.provider == "openai" and first.model == "house-model"
    assert first.answer == fake.reply
    assert first.citations[0].n == 1 and first.citations[0].source == "handbook.pdf"
    assert first.usage == {
        "prompt_tokens": 321,
        "completion_tokens": 12,
        "cost_usd": pytest.approx((321 * 1 + 12 * 4) / 1e6),
    }

    sent = fake.requests[0]
    assert sent["auth"] == "Bearer sk-test"
    assert sent["body"]["temperature"] == 0 and sent["body"]["model"] == "house-model"
    user_message = sent["body"]["messages"][1]["content"]
    assert "27 days of paid annual leave" in user_message and "(handbook.pdf, page 2" in user_message

    second = rag.answer("How many days of annual leave do I get?", "handbook", AskOptions(request_id="r2"))
    assert len(fake.requests) == 1, "the identical second call must be served from the cache"
    assert second.cached is True and second.usage["cost_usd"] == 0.0 and second.answer == first.answer

    rows = {r["request_id"]: r for r in openai_components.ledger.rows()}
    assert rows["r1"]["cost_usd"] == pytest.approx(369e-6) and rows["r1"]["cached"] == 0
    assert (rows["r1"]["prompt_tokens"], rows["r1"]["completion_tokens"]) == (321, 12)
    assert rows["r2"]["cost_usd"] == 0.0 and rows["r2"]["cached"] == 1
    assert rows["r1"]["prompt"] == rows["r2"]["prompt"] == "answer@v2"
    assert rows["r1"]["provider"] == "openai" and rows["r1"]["model"] == "house-model"


def _request(text: str = "hello", request_id: str = "s1") -> ChatRequest:
    return ChatRequest(
        messages=(Message("user", text),), params=GenerationParams(), prompt_id="answer@v1", request_id=request_id
    )


def test_streaming_is_costed_from_the_final_usage_chunk(openai_components: Components, fake: FakeOpenAI) -> None:
    events = list(openai_components.chat_model.stream(_request("stream me")))
    text = "".join(e.delta for e in events)
    final = events[-1].completion
    assert text == fake.reply and final is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (321, 12)
    assert final.usage_reported
    assert fake.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    row = openai_components.ledger.rows()[-1]
    assert row["streamed"] == 1 and row["cost_usd"] == pytest.approx(369e-6)

    again = list(openai_components.chat_model.stream(_request("stream me", "s2")))
    assert "".join(e.delta for e in again) == fake.reply and again[-1].completion.cached  # type: ignore[union-attr]
    assert len(fake.requests) == 1


def test_missing_usage_is_estimated_with_tiktoken(openai_components: Components, fake: FakeOpenAI) -> None:
    fake.usage = None
    completion = openai_components.chat_model.complete(_request("count my tokens please", "u1"))
    assert completion.usage_reported is False
    assert completion.usage.completion_tokens > 5 and completion.usage.prompt_tokens > 3


def test_timeout_is_a_clear_error_and_is_logged(openai_components: Components, fake: FakeOpenAI) -> None:
    fake.delay_s = 5.0
    openai_components.settings.llm.timeout_s = 0.5
    openai_components.settings.llm.max_retries = 0
    model = openai_components.chat_model
    with pytest.raises(ProviderTimeoutError, match="did not answer in time"):
        model.complete(_request("slow", "t1"))
    row = openai_components.ledger.rows()[-1]
    assert row["status"] == "error" and row["error"] == "provider_timeout" and row["request_id"] == "t1"


def test_server_error_is_translated(openai_components: Components, fake: FakeOpenAI) -> None:
    fake.status = 500
    openai_components.settings.llm.max_retries = 0
    with pytest.raises(ProviderError, match="HTTP 500"):
        openai_components.chat_model.complete(_request("boom", "e1"))


def test_unknown_model_is_logged_with_null_cost(
    fake: FakeOpenAI, settings_factory, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(llm=LlmSettings(base_url=fake.base_url, model="mystery-model"))  # type: ignore[call-arg]
    components = Components(settings)
    completion = components.chat_model.complete(_request("price me", "p1"))
    assert completion.cost_usd is None
    assert components.ledger.rows()[-1]["cost_usd"] is None
    assert "no price for model 'mystery-model'" in caplog.text
    components.close()
