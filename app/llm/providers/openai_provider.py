"""OpenAI and every OpenAI-compatible server (Azure, vLLM, Ollama, llama.cpp) via base_url.

Only translation lives here: our request → SDK call, SDK response/usage → Completion,
SDK exceptions → our ProviderError family. Streaming asks for usage in the final
chunk (``stream_options.include_usage``) so streamed calls are costed exactly;
when a server omits usage, tokens are estimated with tiktoken and marked so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import openai

from app.errors import ProviderError, ProviderTimeoutError, ProviderUnavailableError
from app.llm.base import ChatRequest, Completion, StreamEvent, Usage
from app.tokens import encoding_for_model

log = logging.getLogger(__name__)
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # an error code or type such as "invalid_request_error"


def _retry_after(exc: openai.APIStatusError) -> float | None:
    """Seconds from a Retry-After header (the HTTP-date form is rare from model APIs: ignored)."""
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def translate_error(exc: Exception, base_url: str | None) -> ProviderError:
    """SDK exception → our error, marked retryable when repeating the call may help."""
    where = base_url or "api.openai.com"
    error: ProviderError
    if isinstance(exc, openai.APITimeoutError):
        error = ProviderTimeoutError(f"the model provider at {where} did not answer in time")
        error.retryable = True
    elif isinstance(exc, openai.APIConnectionError):
        error = ProviderUnavailableError(f"cannot reach the model provider at {where}: {exc}")
        error.retryable = True
    elif isinstance(exc, openai.AuthenticationError):
        error = ProviderError(
            f"the model provider at {where} rejected the API key (check KB_LLM__API_KEY)",
            code=ProviderError.PROVIDER_AUTH_FAILED,
        )
    elif isinstance(exc, openai.RateLimitError):
        error = ProviderUnavailableError(
            f"the model provider at {where} is rate limiting us; retry later",
            code=ProviderUnavailableError.PROVIDER_RATE_LIMITED,
        )
        error.retryable = True
        error.retry_after_s = _retry_after(exc)
    elif isinstance(exc, openai.APIStatusError):
        # The provider's free-text message may echo our request (documents, system prompt) or our key
        # (gateways do both): it goes to DEBUG only; clients and INFO logs get the status and error code.
        log.debug("the model provider at %s answered HTTP %s: %s", where, exc.status_code, exc.message)
        kinds = [str(k) for k in (exc.code, exc.type) if k and _IDENTIFIER.fullmatch(str(k))]
        detail = f" ({', '.join(dict.fromkeys(kinds))})" if kinds else ""
        error = ProviderError(f"the model provider at {where} answered HTTP {exc.status_code}{detail}")
        error.retryable = exc.status_code in (408, 409) or exc.status_code >= 500
        error.retry_after_s = _retry_after(exc)
    else:
        error = ProviderError(f"the model provider at {where} failed: {exc}")
    return error


def malformed(base_url: str | None, exc: Exception) -> ProviderError:
    """A 200 answer we cannot parse (a broken proxy, a truncated body): retryable, then fall back."""
    error = ProviderError(
        f"the model provider at {base_url or 'api.openai.com'} sent a malformed response ({type(exc).__name__})",
        code=ProviderError.PROVIDER_BAD_RESPONSE,
    )
    error.retryable = True
    return error


class OpenAIChatModel:
    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 0,
    ):
        self._model = model
        self._base_url = base_url
        # Local OpenAI-compatible servers often need no key, but the SDK insists on one.
        # max_retries defaults to 0: retries are ours (app/llm/resilience.py), so each
        # attempt is logged and counted and the SDK never multiplies them behind our back.
        self._client = openai.OpenAI(
            api_key=api_key or "not-needed", base_url=base_url, timeout=timeout_s, max_retries=max_retries
        )

    @property
    def provider(self) -> str:
        return "openai"

    @property
    def model(self) -> str:
        return self._model

    def _kwargs(self, request: ChatRequest) -> dict[str, Any]:
        return {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.params.temperature,
            "max_tokens": request.params.max_tokens,
        }

    def _estimate(self, request: ChatRequest, text: str) -> Usage:
        enc = encoding_for_model(self._model)
        prompt = sum(len(enc.encode(m.content, disallowed_special=())) + 4 for m in request.messages)
        return Usage(prompt_tokens=prompt, completion_tokens=len(enc.encode(text, disallowed_special=())))

    def complete(self, request: ChatRequest) -> Completion:
        try:
            response = self._client.chat.completions.create(**self._kwargs(request))
        except openai.OpenAIError as exc:
            raise translate_error(exc, self._base_url) from exc
        except ValueError as exc:  # the SDK lets json.JSONDecodeError through on a garbled body
            raise malformed(self._base_url, exc) from exc
        try:
            if not response.choices:
                raise ProviderError("the model provider returned no choices", code=ProviderError.PROVIDER_BAD_RESPONSE)
            text = response.choices[0].message.content or ""
            if response.usage is not None:
                usage = Usage(response.usage.prompt_tokens, response.usage.completion_tokens)
                reported = True
            else:
                usage, reported = self._estimate(request, text), False
        except (AttributeError, TypeError, IndexError) as exc:  # JSON, but not a chat completion
            raise malformed(self._base_url, exc) from exc
        return Completion(text, usage, self.provider, response.model or self._model, usage_reported=reported)

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        parts: list[str] = []
        usage: Usage | None = None
        model = self._model
        try:
            chunks = self._client.chat.completions.create(
                **self._kwargs(request), stream=True, stream_options={"include_usage": True}
            )
            for chunk in chunks:
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    delta = choice.delta.content or ""
                    if delta:
                        parts.append(delta)
                        yield StreamEvent(delta=delta)
        except openai.OpenAIError as exc:
            raise translate_error(exc, self._base_url) from exc
        except (ValueError, AttributeError, TypeError) as exc:
            raise malformed(self._base_url, exc) from exc
        text = "".join(parts)
        reported = usage is not None
        final_usage = usage if usage is not None else self._estimate(request, text)
        yield StreamEvent(completion=Completion(text, final_usage, self.provider, model, usage_reported=reported))
