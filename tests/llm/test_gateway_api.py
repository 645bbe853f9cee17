"""The gateway seen from outside: the real app under uvicorn, the real openai SDK against a local
OpenAI-compatible server, /metrics and /admin/usage over HTTP, and `kb usage` reconciling to the cent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.bootstrap import Components
from app.llm.base import ChatRequest, GenerationParams, Message
from app.settings import LlmSettings, ModelPrice, Settings, get_settings
from tests.servers import FakeOpenAI, api_client, metric

MINI = ModelPrice(input_per_million=0.15, output_per_million=0.60)
QUESTION = {"question": "How many days of annual leave do I get?", "collection": "handbook"}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def components_for(fake: FakeOpenAI, data_dir: Path, embedder, **llm) -> Components:  # type: ignore[no-untyped-def]
    options = {"base_url": fake.base_url, "model": "gpt-4o-mini", "timeout_s": 2.0, "max_retries": 1, **llm}
    settings = LlmSettings(retry_backoff_s=0.01, **options)  # type: ignore[call-arg]
    return Components(Settings(_env_file=None, data_dir=data_dir, llm=settings), embedder=embedder)  # type: ignore[call-arg]


def test_fallback_answer_names_its_provider_and_shows_in_metrics(
    fake: FakeOpenAI, handbook_components: Components, embedder
) -> None:  # type: ignore[no-untyped-def]
    fake.status = 500
    components = components_for(fake, handbook_components.settings.data_dir, embedder, fallbacks=["extractive"])
    with api_client(components) as client:
        before = client.get("/metrics").text
        r = client.post("/chat", json=QUESTION, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["provider"] == "extractive" and "27 days" in body["answer"]
        assert len(fake.requests) == 2, "one retry of the 500, then the fallback"
        after = client.get("/metrics").text

        usage = client.get("/admin/usage", params={"since": "1h", "by": "provider"}).json()
        assert [(g["provider"], g["calls"], g["errors"]) for g in usage["groups"]] == [
            ("extractive", 1, 0),
            ("openai", 2, 2),
        ]
        assert usage["total"]["calls"] == 3
        bad = client.get("/admin/usage", params={"since": "yesterday"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_since"

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("kb_llm_calls_total", provider="openai", status="error") == 2
    assert delta("kb_llm_calls_total", provider="extractive", status="ok") == 1
    assert delta("kb_llm_provider_errors_total", provider="openai", code="provider_error") == 2
    assert delta("kb_llm_retries_total", provider="openai") == 1
    assert delta("kb_llm_fallbacks_total", from_provider="openai") == 1
    assert delta("kb_cache_misses_total") == 1
    assert delta("kb_http_requests_total", route="/chat", status="200") == 1
    assert delta("kb_llm_call_duration_seconds_count", provider="openai") == 2
    assert delta("kb_llm_tokens_total", provider="extractive", kind="prompt") > 0
    components.close()


def test_exhausted_chain_is_a_503_json_error_naming_each_failure(
    fake: FakeOpenAI, handbook_components: Components, embedder
) -> None:  # type: ignore[no-untyped-def]
    fake.status = 502
    components = components_for(
        fake, handbook_components.settings.data_dir, embedder, max_retries=0, fallbacks=["openai:gpt-4o"]
    )
    with api_client(components) as client:
        r = client.post("/chat", json=QUESTION, timeout=60)
        metrics_text = client.get("/metrics").text
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "providers_exhausted" and error["request_id"]
    assert (
        "openai/gpt-4o-mini: provider_error" in error["message"] and "openai/gpt-4o: provider_error" in error["message"]
    )
    assert "Traceback" not in r.text
    assert metric(metrics_text, "kb_http_requests_total", route="/chat", status="503") >= 1
    components.close()


def test_kb_usage_reconciles_to_the_cent(fake: FakeOpenAI, settings_factory, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(
        llm=LlmSettings(base_url=fake.base_url, model="gpt-4o-mini", prices={"gpt-4o-mini": MINI}, retry_backoff_s=0.01)  # type: ignore[call-arg]
    )
    components = Components(settings)
    model = components.chat_model
    expected = 0.0
    for i in range(12):
        fake.usage = {"prompt_tokens": 40_000 + 1_337 * i, "completion_tokens": 900 + 77 * i}
        if i == 5:
            fake.script = [429]  # one failed attempt: a ledger row that costs nothing
        request = ChatRequest(
            messages=(Message("user", f"question {i}"),), params=GenerationParams(), request_id=f"q{i}"
        )
        model.complete(request)
        expected += (fake.usage["prompt_tokens"] * 0.15 + fake.usage["completion_tokens"] * 0.60) / 1e6
    model.complete(ChatRequest(messages=(Message("user", "question 0"),), params=GenerationParams()))  # a cache hit
    components.close()

    from app.cli import cli

    monkeypatch.setenv("KB_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        by_model = CliRunner().invoke(cli, ["usage", "--since", "30m", "--json"])
        by_day = CliRunner().invoke(cli, ["usage", "--since", "1h", "--by", "day"])
        bad = CliRunner().invoke(cli, ["usage", "--by", "colour"])
    finally:
        get_settings.cache_clear()
    assert by_model.exit_code == 0, by_model.output
    rows = json.loads(by_model.output)
    total = rows[-1]
    assert total["total"] is True and total["calls"] == 14 and total["errors"] == 1 and total["cached"] == 1
    assert round(total["cost_usd"], 2) == round(expected, 2) and total["cost_usd"] == pytest.approx(expected, abs=1e-8)
    assert rows[0]["model"] == "gpt-4o-mini" and rows[0]["cost_usd"] == total["cost_usd"]
    assert by_day.exit_code == 0 and "total" in by_day.output
    assert bad.exit_code == 2 and "cannot group by 'colour'" in bad.output
