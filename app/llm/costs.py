"""Pricing and the usage ledger, as a ChatModel wrapper used at two places of the stack.

Wrapped round each provider (inside the retry loop) it writes one row per attempt:
successes priced from the provider's usage, failures with status=error, the error
code and cost 0. Wrapped round the cache with ``only_cached=True`` it writes one row
per cache hit (cost 0, cached=1) and nothing else, since misses were already logged
by the attempt that answered. The sum of the ledger is therefore what was spent.
Prices come from one table (Settings, USD per million tokens); an unknown model is
logged with cost NULL and a warning, never a crash. The ledger is the ``usage`` table of
the shared SQL database (``app.db``), so every replica's calls add up in one place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

from sqlalchemy import Engine, select

from app import metrics
from app.db import engine_for
from app.db.engine import retry_on_disconnect
from app.db.schema import usage
from app.db.writer import DeferredWriter, flush_pending
from app.errors import KbError
from app.llm.base import ChatModel, ChatRequest, Completion, StreamEvent, Usage, Wrapper

log = logging.getLogger(__name__)


class UsageRow(TypedDict):
    """One row of the ledger (the ``usage`` table), as the cost wrapper and the answer cache write it:
    typed so that both builders name the same 15 columns (a missing or misspelt one fails in mypy)."""

    ts: float
    request_id: str
    provider: str
    model: str
    prompt: str  # name@vN
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: no price known for the model
    latency_ms: float
    cached: int  # 1: a cache hit (cost 0)
    streamed: int
    status: str  # ok | error
    error: str | None  # the error code
    collection: str | None
    key: str | None  # the principal (key or user name)


class StoredUsageRow(UsageRow):
    id: int


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
    """The ledger table of the shared database. ``record`` is one INSERT on a pooled connection (no
    BEGIN/COMMIT round trips on PostgreSQL, see ``app.db.engine``): it runs on every model call and cache hit."""

    def __init__(self, db: Engine | str | Path, *, writer: DeferredWriter | None = None):
        self._engine, self._owned = engine_for(db)
        self._insert = usage.insert()
        self.writer = writer  # for ``defer=True`` rows (cache hits); None: every row is written at once

    def record(self, row: UsageRow, *, defer: bool = False) -> None:
        """One row; ``defer``: a cache hit's (cost 0), written by the deferred writer after the response."""
        values: dict[str, Any] = dict(row)
        if defer and self.writer is not None:
            self.writer.submit([(self._insert, values)])
            return
        retry_on_disconnect(lambda: self._write(values), "usage ledger")

    def _write(self, values: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(self._insert, values)

    def rows(self, since_ts: float = 0.0) -> list[StoredUsageRow]:
        query = select(usage).where(usage.c.ts >= since_ts).order_by(usage.c.ts, usage.c.id)  # deferred rows land late
        flush_pending(self._engine)
        with self._engine.connect() as conn:
            return [StoredUsageRow(**r) for r in conn.execute(query).mappings()]  # type: ignore[typeddict-item]

    def close(self) -> None:
        if self._owned:
            self._engine.dispose()


class CostLoggedChatModel(Wrapper):
    """Logs and prices calls through ``inner``; ``only_cached`` logs cache hits only (see module doc)."""

    def __init__(
        self, inner: ChatModel, ledger: UsageLedger, prices: Mapping[str, Price], *, only_cached: bool = False
    ):
        super().__init__(inner)
        self.ledger = ledger
        self.prices = prices
        self.only_cached = only_cached
        self._warned: set[str] = set()

    def _price(self, completion: Completion) -> Completion:
        if completion.cached:
            return replace(completion, cost_usd=0.0)
        if self.only_cached:
            return completion  # priced by the attempt that produced it
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
        if self.only_cached and (completion is None or not completion.cached):
            return
        usage = completion.usage if completion else Usage()
        provider = completion.provider if completion else self.provider
        model = completion.model if completion else self.model
        latency_s = time.perf_counter() - started
        code = None if error is None else (error.code if isinstance(error, KbError) else type(error).__name__)
        row = UsageRow(
            ts=time.time(),
            request_id=request.request_id,
            provider=provider,
            model=model,
            prompt=request.prompt_id,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=completion.cost_usd if completion else 0.0,
            latency_ms=round(latency_s * 1000, 3),
            cached=int(bool(completion and completion.cached)),
            streamed=int(streamed),
            status="ok" if error is None else "error",
            error=code,
            collection=request.collection,
            key=request.key,
        )
        self.ledger.record(row, defer=bool(completion and completion.cached))  # a hit costs nothing: written later
        if not self.only_cached:
            self._observe(provider, model, latency_s, completion, code)

    @staticmethod
    def _observe(provider: str, model: str, latency_s: float, completion: Completion | None, code: str | None) -> None:
        metrics.LLM_CALLS.labels(provider, model, "ok" if code is None else "error").inc()
        metrics.LLM_LATENCY.labels(provider, model).observe(latency_s)
        if code is not None:
            metrics.PROVIDER_ERRORS.labels(provider, code).inc()
        if completion is not None:
            metrics.LLM_TOKENS.labels(provider, model, "prompt").inc(completion.usage.prompt_tokens)
            metrics.LLM_TOKENS.labels(provider, model, "completion").inc(completion.usage.completion_tokens)
            if completion.cost_usd:
                metrics.LLM_COST.labels(provider, model).inc(completion.cost_usd)

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
