"""Retries, fallback and the per-attempt ledger: the registry-built stack, the real openai SDK,
a real OpenAI-compatible server on 127.0.0.1 that misbehaves on cue, and real SQLite stores."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.errors import InvalidRequestError, ProviderError, ProviderUnavailableError
from app.llm.base import ChatModel, ChatRequest, GenerationParams, Message, SourcePassage
from app.llm.cache import ResponseCache
from app.llm.costs import UsageLedger
from app.llm.registry import build_chat_model
from app.llm.usage_report import parse_since
from app.settings import LlmSettings, ModelPrice, Settings
from tests.servers import FakeOpenAI

PRICE = ModelPrice(input_per_million=1.0, output_per_million=4.0)
FREE = ModelPrice(input_per_million=0.0, output_per_million=0.0)
COST = (321 * 1 + 12 * 4) / 1e6


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[UsageLedger]:
    ledger = UsageLedger(tmp_path / "usage.sqlite3")
    yield ledger
    ledger.close()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[ResponseCache]:
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    yield cache
    cache.close()


def stack(fake: FakeOpenAI, ledger: UsageLedger, cache: ResponseCache | None = None, **llm: Any) -> ChatModel:
    settings: dict[str, Any] = {
        "base_url": fake.base_url,
        "api_key": "sk-test",
        "model": "house-model",
        "timeout_s": 2.0,
        "retry_backoff_s": 0.01,
        "retry_max_wait_s": 0.5,
        "prices": {"house-model": PRICE, "backup-model": PRICE, "extractive": FREE},
    }
    return build_chat_model(LlmSettings(**{**settings, **llm}), ledger, cache)  # type: ignore[arg-type]


def request(rid: str, text: str = "How many days of annual leave?") -> ChatRequest:
    return ChatRequest(
        messages=(Message("user", text),),
        params=GenerationParams(),
        prompt_id="answer@v1",
        documents=(SourcePassage(1, "Full-time employees get 27 days of annual leave per year."),),
        query=text,
        request_id=rid,
        collection="handbook",
    )


def attempts(ledger: UsageLedger, rid: str) -> list[tuple[str, str, str | None]]:
    return [(r["provider"], r["status"], r["error"]) for r in ledger.rows() if r["request_id"] == rid]


def test_429_is_retried_after_retry_after_and_every_attempt_is_a_ledger_row(
    fake: FakeOpenAI, ledger: UsageLedger
) -> None:
    fake.script = [429, 429]
    fake.retry_after = "0.2"
    started = time.perf_counter()
    completion = stack(fake, ledger).complete(request("r1"))
    elapsed = time.perf_counter() - started
    assert len(fake.requests) == 3, "two rate-limited attempts, then the answer"
    assert elapsed >= 0.4, "Retry-After: 0.2 must be waited twice"
    assert completion.provider == "openai" and completion.cost_usd == pytest.approx(COST)
    assert attempts(ledger, "r1") == [
        ("openai", "error", "provider_rate_limited"),
        ("openai", "error", "provider_rate_limited"),
        ("openai", "ok", None),
    ]
    rows = [r for r in ledger.rows() if r["request_id"] == "r1"]
    assert [r["cost_usd"] for r in rows] == [0.0, 0.0, pytest.approx(COST)]
    assert {r["collection"] for r in rows} == {"handbook"}


def test_retry_after_is_capped_by_the_max_wait(fake: FakeOpenAI, ledger: UsageLedger) -> None:
    fake.script = [429]
    fake.retry_after = "120"
    started = time.perf_counter()
    stack(fake, ledger, retry_max_wait_s=0.1).complete(request("cap"))
    assert time.perf_counter() - started < 2 and len(fake.requests) == 2


def test_5xx_malformed_body_and_timeout_are_each_retried(fake: FakeOpenAI, ledger: UsageLedger) -> None:
    fake.script = [500, "malformed", "hang"]
    fake.hang_s = 2.0
    completion = stack(fake, ledger, max_retries=3, timeout_s=0.5).complete(request("r2"))
    assert completion.text == fake.reply and len(fake.requests) == 4
    assert [e for _, _, e in attempts(ledger, "r2")] == [
        "provider_error",
        "provider_bad_response",
        "provider_timeout",
        None,
    ]


def test_retries_stop_at_max_retries_and_the_error_surfaces(fake: FakeOpenAI, ledger: UsageLedger) -> None:
    fake.status = 503
    with pytest.raises(ProviderError, match="HTTP 503"):
        stack(fake, ledger, max_retries=2).complete(request("r3"))
    assert len(fake.requests) == 3
    assert attempts(ledger, "r3") == [("openai", "error", "provider_error")] * 3


def test_auth_failure_is_not_retried_but_falls_back_and_is_not_cached(
    fake: FakeOpenAI, ledger: UsageLedger, cache: ResponseCache
) -> None:
    fake.status = 401
    model = stack(fake, ledger, cache, fallbacks=["extractive"])
    completion = model.complete(request("r4"))
    assert len(fake.requests) == 1, "a rejected key is not retried"
    assert completion.provider == "extractive" and completion.fallback
    assert "27 days" in completion.text and completion.cost_usd == 0.0
    assert attempts(ledger, "r4") == [("openai", "error", "provider_auth_failed"), ("extractive", "ok", None)]

    fake.status = 200
    again = model.complete(request("r5"))
    assert again.provider == "openai" and not again.cached, "a fallback answer must not be served from the cache"
    assert model.complete(request("r6")).cached


def test_exhausted_chain_is_a_503_naming_every_failure(fake: FakeOpenAI, ledger: UsageLedger) -> None:
    fake.status = 500
    model = stack(fake, ledger, max_retries=1, fallbacks=["openai:backup-model"])
    with pytest.raises(ProviderUnavailableError) as info:
        model.complete(request("r7"))
    err = info.value
    assert err.http_status == 503 and err.code == "providers_exhausted"
    assert "openai/house-model: provider_error" in err.message and "openai/backup-model: provider_error" in err.message
    assert [r["body"]["model"] for r in fake.requests] == ["house-model"] * 2 + ["backup-model"] * 2
    assert len(attempts(ledger, "r7")) == 4


def test_stream_is_retried_before_the_first_token_and_costed(fake: FakeOpenAI, ledger: UsageLedger) -> None:
    fake.script = [503]
    events = list(stack(fake, ledger).stream(request("s1")))
    final = events[-1].completion
    assert "".join(e.delta for e in events) == fake.reply and final is not None
    assert final.cost_usd == pytest.approx(COST) and len(fake.requests) == 2
    rows = [r for r in ledger.rows() if r["request_id"] == "s1"]
    assert [(r["status"], r["streamed"]) for r in rows] == [("error", 1), ("ok", 1)]
    assert rows[-1]["cost_usd"] == pytest.approx(COST)


def test_stream_falls_back_to_extractive(fake: FakeOpenAI, ledger: UsageLedger) -> None:
    fake.status = 500
    events = list(stack(fake, ledger, max_retries=0, fallbacks=["extractive"]).stream(request("s2")))
    final = events[-1].completion
    assert final is not None and final.provider == "extractive" and final.fallback
    assert "".join(e.delta for e in events) == final.text and "27 days" in final.text


def test_the_chain_is_configured_from_the_environment(
    fake: FakeOpenAI, ledger: UsageLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.status = 500
    monkeypatch.setenv("KB_LLM__BASE_URL", fake.base_url)
    monkeypatch.setenv("KB_LLM__MODEL", "house-model")
    monkeypatch.setenv("KB_LLM__MAX_RETRIES", "0")
    monkeypatch.setenv("KB_LLM__FALLBACKS", '["openai:backup-model", "extractive"]')
    llm = Settings(_env_file=None).llm  # type: ignore[call-arg]
    completion = build_chat_model(llm, ledger, None).complete(request("env"))
    assert completion.provider == "extractive"
    assert [r["body"]["model"] for r in fake.requests] == ["house-model", "backup-model"]


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("12h", 43200), ("7d", 604800), ("1.5h", 5400)])
def test_since_windows(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


def test_unreadable_since_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequestError, match="like 30m, 12h or 7d"):
        parse_since("last week")
