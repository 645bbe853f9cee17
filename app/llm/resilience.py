"""Retries with backoff and a provider fallback chain, as ChatModel wrappers.

Why our own retries rather than the SDK's: each attempt must be a ledger row and a
metric, the policy must be the same for every provider (the local and extractive
ones have no SDK retry at all), and a Retry-After hint must be honoured but capped
so a misbehaving server cannot park a request for minutes. The openai SDK is
therefore built with ``max_retries=0``.

Which errors are retried is decided by ``ProviderError.retryable``, set by each
adapter (timeouts, connection errors, 429, 5xx, malformed bodies). Auth failures
and 4xx are not retried: repeating them cannot help, but the next provider of the
chain may still answer.

A stream is retried or handed to the next provider only while nothing has been
yielded; once text reached the caller, a failure ends the stream with the error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from app import metrics
from app.errors import ProviderError, ProviderUnavailableError
from app.llm.base import ChatModel, ChatRequest, Completion, StreamEvent, Wrapper

log = logging.getLogger(__name__)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


class RetryingChatModel(Wrapper):
    """Repeats retryable failures: exponential backoff with full jitter, Retry-After honoured up to ``max_wait_s``."""

    def __init__(self, inner: ChatModel, *, max_retries: int = 2, backoff_s: float = 0.5, max_wait_s: float = 10.0):
        super().__init__(inner)
        self.max_retries = max_retries
        self._jitter = wait_random_exponential(multiplier=backoff_s, max=max_wait_s)
        self.max_wait_s = max_wait_s

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self.max_wait_s)
        return float(self._jitter(state))

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        metrics.LLM_RETRIES.labels(self.provider).inc()
        log.warning(
            "%s/%s attempt %d failed (%s); retrying in %.2f s",
            self.provider,
            self.model,
            state.attempt_number,
            getattr(exc, "code", type(exc).__name__),
            state.upcoming_sleep,
        )

    def _retrying(self) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def complete(self, request: ChatRequest) -> Completion:
        return self._retrying()(self.inner.complete, request)

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        for attempt in self._retrying():
            with attempt:
                events = self.inner.stream(request)
                first = next(events, None)  # failures before the first event are retryable
        if first is not None:
            yield first
            yield from events


class FallbackChatModel:
    """Tries each provider of the chain in turn; names the one that answered.

    With a single provider its own error surfaces unchanged (a timeout stays a 504);
    when several providers all fail, one ProviderUnavailableError (503) lists each
    provider's failure so the operator sees the whole story in one message.
    """

    def __init__(self, chain: Sequence[ChatModel]):
        if not chain:
            raise ValueError("a fallback chain needs at least one provider")
        self.chain = list(chain)

    @property
    def provider(self) -> str:
        return self.chain[0].provider

    @property
    def model(self) -> str:
        return self.chain[0].model

    def _exhausted(self, failures: list[tuple[ChatModel, ProviderError]]) -> ProviderError:
        if len(self.chain) == 1:
            return failures[0][1]
        summary = "; ".join(f"{m.provider}/{m.model}: {e.code} ({e.message})" for m, e in failures)
        return ProviderUnavailableError(
            f"every model provider failed: {summary}", code=ProviderUnavailableError.PROVIDERS_EXHAUSTED
        )

    def _note(self, model: ChatModel, exc: ProviderError, index: int) -> None:
        if index + 1 < len(self.chain):
            metrics.LLM_FALLBACKS.labels(model.provider).inc()
            nxt = self.chain[index + 1]
            log.warning(
                "%s/%s failed (%s); falling back to %s/%s",
                model.provider,
                model.model,
                exc.code,
                nxt.provider,
                nxt.model,
            )

    def complete(self, request: ChatRequest) -> Completion:
        failures: list[tuple[ChatModel, ProviderError]] = []
        for index, model in enumerate(self.chain):
            try:
                completion = model.complete(request)
            except ProviderError as exc:
                failures.append((model, exc))
                self._note(model, exc, index)
                continue
            return replace(completion, fallback=True) if index else completion
        raise self._exhausted(failures)

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        failures: list[tuple[ChatModel, ProviderError]] = []
        for index, model in enumerate(self.chain):
            events = model.stream(request)
            try:
                first = next(events, None)
            except ProviderError as exc:
                failures.append((model, exc))
                self._note(model, exc, index)
                continue
            if first is None:
                return
            yield self._mark(first, index)
            for event in events:
                yield self._mark(event, index)
            return
        raise self._exhausted(failures)

    @staticmethod
    def _mark(event: StreamEvent, index: int) -> StreamEvent:
        if index and event.completion is not None:
            return replace(event, completion=replace(event.completion, fallback=True))
        return event
