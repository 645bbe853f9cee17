"""The response cache: one contract run against each backend (SQLite file, real redis-server),
the `kb cache clear` command, and the ledger's schema migration."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.bootstrap import Components
from app.llm.base import ChatRequest, Completion, GenerationParams, Message, SourcePassage, Usage
from app.llm.cache import CacheBackend, ResponseCache
from app.llm.cache_redis import RedisResponseCache
from app.settings import CacheSettings, get_settings
from tests.servers import redis_server


def completion(text: str) -> Completion:
    return Completion(text=text, usage=Usage(10, 2), provider="openai", model="m", cost_usd=0.5)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def make_cache(kind: str, tmp_path: Path, redis_url: str | None, **kw: float) -> CacheBackend:
    if kind == "sqlite":
        return ResponseCache(tmp_path / "cache.sqlite3", **kw)  # type: ignore[arg-type]
    assert redis_url is not None
    cache = RedisResponseCache(redis_url, prefix=f"t{time.monotonic_ns()}:", **kw)  # type: ignore[arg-type]
    return cache


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    yield request.param, url


def test_round_trip_and_clear(backend: tuple[str, str | None], tmp_path: Path) -> None:
    cache = make_cache(backend[0], tmp_path, backend[1])
    assert cache.get("k1") is None
    cache.put("k1", completion("one"))
    cache.put("k2", completion("two"))
    hit = cache.get("k1")
    assert hit is not None and hit.text == "one" and hit.usage == Usage(10, 2)
    assert hit.cost_usd is None and not hit.cached, "cost and the cached flag are the wrappers' to set"
    assert cache.clear() == 2 and cache.get("k2") is None
    cache.close()


def test_entries_expire_after_the_ttl(backend: tuple[str, str | None], tmp_path: Path) -> None:
    cache = make_cache(backend[0], tmp_path, backend[1], ttl_s=0.3)
    cache.put("k", completion("fresh"))
    assert cache.get("k") is not None
    time.sleep(0.45)
    assert cache.get("k") is None
    cache.close()


def test_size_bound_evicts_the_oldest(backend: tuple[str, str | None], tmp_path: Path) -> None:
    cache = make_cache(backend[0], tmp_path, backend[1], max_entries=3)
    for i in range(5):
        cache.put(f"k{i}", completion(str(i)))
        time.sleep(0.002)  # distinct insertion times
    assert [cache.get(f"k{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert len(cache) == 3  # type: ignore[arg-type]
    cache.close()


def test_redis_outage_degrades_to_misses(tmp_path: Path) -> None:
    with redis_server(tmp_path) as url:
        cache = RedisResponseCache(url)
        cache.put("k", completion("x"))
        assert cache.get("k") is not None
    # the server is gone now: the cache must answer "miss", not fail the request
    assert cache.get("k") is None
    cache.put("k", completion("y"))
    cache.close()


def _request(temperature: float = 0.0, use_cache: bool = True) -> ChatRequest:
    return ChatRequest(
        messages=(Message("user", "How many days of annual leave?"),),
        params=GenerationParams(temperature=temperature),
        documents=(SourcePassage(1, "Employees get 27 days of annual leave."),),
        query="How many days of annual leave?",
        use_cache=use_cache,
    )


def test_full_stack_on_redis_caches_only_temperature_zero(settings_factory, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(cache=CacheSettings(backend="redis", redis_url=redis_url))  # type: ignore[call-arg]
    components = Components(settings)
    assert isinstance(components.cache, RedisResponseCache)
    components.cache.clear()
    model = components.chat_model
    assert not model.complete(_request()).cached
    assert model.complete(_request()).cached
    assert not model.complete(_request(temperature=0.7)).cached
    assert not model.complete(_request(temperature=0.7)).cached
    assert not model.complete(_request(use_cache=False)).cached
    rows = components.ledger.rows()
    assert [r["cached"] for r in rows] == [0, 1, 0, 0, 0]
    components.close()


def test_kb_cache_clear(settings_factory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from app.cli import cli

    settings = settings_factory()
    components = Components(settings)
    components.chat_model.complete(_request())
    components.close()
    monkeypatch.setenv("KB_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["cache", "clear"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "removed 1 cached responses" in result.output
    assert len(ResponseCache(settings.cache_db)) == 0
