"""Provider name → factory, and the one place the wrapper stack is composed.

The stack, outermost first::

    Traced                             the call as an OpenTelemetry span (GenAI conventions) when traces are on
    CostLogged(only_cached)            one ledger row per cache hit (cost 0, cached=1)
      Cached                           temperature-0 calls; fallback answers are not stored
        Fallback                       primary, then KB_LLM__FALLBACKS in order
          Retrying                     per provider: backoff + jitter on retryable errors
            CostLogged                 one ledger row per attempt (errors: status=error, cost 0)
              provider adapter         openai / local / extractive

Why this order: the ledger must hold one row per attempt, so attempt logging sits
inside the retry loop, next to the adapter; the answer's usage and cost are then the
successful attempt's. The cache sits above the whole chain so a hit costs no
provider call at all, and the hit logger above the cache records hits only (misses
were logged by the attempt that answered). Retries are per provider so a flaky
primary is retried before the chain moves on. Metrics are recorded by the same
wrappers (app/metrics.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.errors import ConfigurationError
from app.llm.base import ChatModel
from app.llm.cache import CacheBackend, CachedChatModel
from app.llm.costs import CostLoggedChatModel, Price, UsageLedger
from app.llm.providers.extractive import ExtractiveChatModel
from app.llm.providers.local import LocalChatModel
from app.llm.resilience import FallbackChatModel, RetryingChatModel
from app.llm.traced import TracedChatModel
from app.settings import LlmSettings

log = logging.getLogger(__name__)


def _openai(llm: LlmSettings) -> ChatModel:
    # imported here: the openai SDK takes ~0.6 s to import, which a `kb ask` on the offline default
    # provider should not pay
    from app.llm.providers.openai_provider import OpenAIChatModel

    # max_retries=0: retries are RetryingChatModel's, one ledger row each.
    return OpenAIChatModel(
        llm.model, api_key=llm.api_key, base_url=llm.base_url, timeout_s=llm.timeout_s, max_retries=0
    )


def _extractive(llm: LlmSettings) -> ChatModel:
    return ExtractiveChatModel()


def _local(llm: LlmSettings) -> ChatModel:
    return LocalChatModel(llm.local_model_path, context_tokens=llm.local_context_tokens)


PROVIDERS: dict[str, Callable[[LlmSettings], ChatModel]] = {
    "openai": _openai,
    "extractive": _extractive,
    "local": _local,
}

# What the part after ':' of a provider spec sets: 'openai:gpt-4o' → model, 'local:/m.gguf' → local_model_path.
_SPEC_ARGUMENT = {"openai": "model", "local": "local_model_path"}


def build_provider(llm: LlmSettings, spec: str | None = None) -> ChatModel:
    """A bare adapter for ``spec`` ('openai', 'openai:MODEL', 'local[:PATH]', 'extractive'); default the main one."""
    name, _, argument = (spec or llm.resolved_provider()).partition(":")
    try:
        factory = PROVIDERS[name.strip()]
    except KeyError:
        raise ConfigurationError(f"unknown provider {name!r}; known: {sorted(PROVIDERS)}") from None
    if argument:
        if name not in _SPEC_ARGUMENT:
            raise ConfigurationError(f"provider {name!r} takes no argument (got {spec!r})")
        llm = llm.model_copy(update={_SPEC_ARGUMENT[name]: argument.strip()})
    return factory(llm)


def build_chat_model(llm: LlmSettings, ledger: UsageLedger, cache: CacheBackend | None) -> ChatModel:
    prices = {name: Price(p.input_per_million, p.output_per_million) for name, p in llm.prices.items()}
    chain: list[ChatModel] = []
    for spec in [None, *llm.fallbacks]:
        attempt = CostLoggedChatModel(build_provider(llm, spec), ledger, prices)
        chain.append(
            RetryingChatModel(
                attempt, max_retries=llm.max_retries, backoff_s=llm.retry_backoff_s, max_wait_s=llm.retry_max_wait_s
            )
        )
    model: ChatModel = FallbackChatModel(chain)
    if cache is not None:
        model = CachedChatModel(model, cache)
    wrapped = TracedChatModel(CostLoggedChatModel(model, ledger, prices, only_cached=True))
    log.info(
        "LLM provider %s, model %s, fallbacks %s, cache %s",
        wrapped.provider,
        wrapped.model,
        llm.fallbacks or "none",
        type(cache).__name__ if cache is not None else "off",  # an empty cache has len 0: not "off"
    )
    return wrapped
