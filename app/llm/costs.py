"""Pricing and the usage ledger, as the outermost ChatModel wrapper.

One ledger row per call, including cache hits (cost 0, cached=1) and failures
(status=error with the error code). Prices come from one table (Settings, USD per
million tokens); an unknown model is logged with cost NULL and a warning, never a
crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.errors import KbError
from app.llm.base import ChatModel, ChatRequest, Completion, StreamEvent, Usage
from app.llm.sqlite_util import SqliteDb

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL,
    latency_ms REAL NOT NULL,
    cached INTEGER NOT NULL,
    streamed INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
"""


@dataclass(frozen=True)
class Price:
    input_per_million: float
    output_per_million: float


def price_for(model: str, prices: Mapping[str, Price]) -> Price | None:
    """Exact model name first, then the longest known prefix (``gpt-4o-mini-2024-07-18``)."""
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(name)]
    return prices[max(matches, key=len)] if matches else None


def cost_usd(model: str, usage: Usage, prices: Mapping[str, Price]) -> float | None:
    price = price_for(model, prices)
    if price is None:
        return None
    return (usage.prompt_tokens * price.input_per_million + usage.completion_tokens * price.output_per_million) / 1e6


class UsageLedger:
    def __init__(self, path: str | Path):
        self._db = SqliteDb(path, _SCHEMA)

    def record(self, **row: Any) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._db.tx() as conn:
            conn.execute(f"INSERT INTO usage ({columns}) VALUES ({marks})", tuple(row.values()))

    def rows(self, since_ts: float = 0.0) -> list[dict[str, Any]]:
        with self._db.tx() as conn:
            cur = conn.execute("SELECT * FROM usage WHERE ts >= ? ORDER BY id", (since_ts,))
            return [dict(r) for r in cur.fetchall()]

    def close(self) -> None:
        self._db.close()


class CostLoggedChatModel:
    def __init__(self, inner: ChatModel, ledger: UsageLedger, prices: Mapping[str, Price]):
        self.inner = inner
        self.ledger = ledger
        self.prices = prices
        self._warned: set[str] = set()

    @property
    def provider(self) -> str:
        return self.inner.provider

    @property
    def model(self) -> str:
        return self.inner.model

    def _price(self, completion: Completion) -> Completion:
        if completion.cached:
            return replace(completion, cost_usd=0.0)
        cost = cost_usd(completion.model, completion.usage, self.prices)
        if cost is None and completion.model not in self._warned:
            self._warned.add(completion.model)
            log.warning(
                "no price for model %r: its calls are logged with cost NULL (set KB_LLM__PRICES)", completion.model
            )
        return replace(completion, cost_usd=cost)

    def _log(
        self,
        request: ChatRequest,
        started: float,
        streamed: bool,
        completion: Completion | None = None,
        error: Exception | None = None,
    ) -> None:
        usage = completion.usage if completion else Usage()
        self.ledger.record(
            ts=time.time(),
            request_id=request.request_id,
            provider=completion.provider if completion else self.provider,
            model=completion.model if completion else self.model,
            prompt=request.prompt_id,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=completion.cost_usd if completion else None,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            cached=int(bool(completion and completion.cached)),
            streamed=int(streamed),
            status="ok" if error is None else "error",
            error=None if error is None else (error.code if isinstance(error, KbError) else type(error).__name__),
        )

    def complete(self, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        try:
            completion = self._price(self.inner.complete(request))
        except Exception as exc:
            self._log(request, started, False, error=exc)
            raise
        self._log(request, started, False, completion)
        return completion

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        started = time.perf_counter()
        try:
            for event in self.inner.stream(request):
                if event.completion is not None:
                    completion = self._price(event.completion)
                    self._log(request, started, True, completion)
                    yield StreamEvent(delta=event.delta, completion=completion)
                else:
                    yield event
        except Exception as exc:
            self._log(request, started, True, error=exc)
            raise
