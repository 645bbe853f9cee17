"""Provider name → factory, and the one place the wrapper stack is composed.

``CostLogged(Cached(provider))``: cost logging is outermost so cache hits are
logged too (cost 0, cached). Resilience wrappers slot in between later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.errors import ConfigurationError
from app.llm.base import ChatModel
from app.llm.cache import CachedChatModel, ResponseCache
from app.llm.costs import CostLoggedChatModel, Price, UsageLedger
from app.llm.providers.extractive import ExtractiveChatModel
from app.llm.providers.openai_provider import OpenAIChatModel
from app.settings import LlmSettings

log = logging.getLogger(__name__)


def _openai(llm: LlmSettings) -> ChatModel:
    return OpenAIChatModel(
        llm.model, api_key=llm.api_key, base_url=llm.base_url, timeout_s=llm.timeout_s, max_retries=llm.max_retries
    )


def _extractive(llm: LlmSettings) -> ChatModel:
    return ExtractiveChatModel()


PROVIDERS: dict[str, Callable[[LlmSettings], ChatModel]] = {
    "openai": _openai,
    "extractive": _extractive,
}


def build_provider(llm: LlmSettings) -> ChatModel:
    name = llm.resolved_provider()
    try:
        factory = PROVIDERS[name]
    except KeyError:
        raise ConfigurationError(f"unknown provider {name!r}; known: {sorted(PROVIDERS)}") from None
    return factory(llm)


def build_chat_model(llm: LlmSettings, ledger: UsageLedger, cache: ResponseCache | None) -> ChatModel:
    model = build_provider(llm)
    if cache is not None:
        model = CachedChatModel(model, cache)
    prices = {name: Price(p.input_per_million, p.output_per_million) for name, p in llm.prices.items()}
    wrapped = CostLoggedChatModel(model, ledger, prices)
    log.info("LLM provider %s, model %s, cache %s", wrapped.provider, wrapped.model, "on" if cache else "off")
    return wrapped
