"""The model call as an OpenTelemetry span, with the GenAI semantic conventions (the gateway's outermost
wrapper: the span covers the cache, the fallbacks, the retries and the ledger rows below it).

``gen_ai.operation.name`` chat, ``gen_ai.provider.name``, ``gen_ai.request.model`` (the configured model),
``gen_ai.response.model`` (who answered: a fallback's model), ``gen_ai.usage.input_tokens`` and
``output_tokens``, plus ``kb.cost_usd``, ``kb.cache_hit``, ``kb.fallback`` and the prompt version. Never
the messages: they hold the question and the documents' passages. Off, each call costs one check.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app import tracing
from app.llm.base import ChatRequest, Completion, StreamEvent, Wrapper


def _request_attributes(model: Any, request: ChatRequest) -> dict[str, tracing.AttributeValue]:
    attributes: dict[str, tracing.AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": model.provider,
        "gen_ai.request.model": model.model,
        "gen_ai.request.temperature": request.params.temperature,
        "gen_ai.request.max_tokens": request.params.max_tokens,
        "kb.prompt": request.prompt_id,
    }
    return attributes


def _completion_attributes(completion: Completion) -> dict[str, tracing.AttributeValue | None]:
    return {
        "gen_ai.response.model": completion.model,
        "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": completion.usage.completion_tokens,
        "kb.cost_usd": completion.cost_usd,
        "kb.cache_hit": completion.cached,
        "kb.fallback": completion.fallback,
    }


class TracedChatModel(Wrapper):
    def complete(self, request: ChatRequest) -> Completion:
        if not tracing.enabled():
            return self.inner.complete(request)
        from opentelemetry.trace import SpanKind

        attributes = _request_attributes(self, request)
        with tracing.span(f"chat {self.model}", attributes, kind=SpanKind.CLIENT) as span:
            completion = self.inner.complete(request)
            tracing.set_attributes(span, _completion_attributes(completion))
            return completion

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        if not tracing.enabled():
            yield from self.inner.stream(request)
            return
        from opentelemetry.trace import SpanKind

        span = tracing.start(f"chat {self.model}", _request_attributes(self, request), kind=SpanKind.CLIENT)
        try:
            for event in self.inner.stream(request):
                if event.completion is not None:
                    tracing.set_attributes(span, _completion_attributes(event.completion))
                yield event
        except Exception as exc:
            tracing.record_error(span, exc)
            raise
        finally:
            span.end()
