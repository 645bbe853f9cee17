"""The provider Protocol and the plain data that crosses it.

Every provider, and every wrapper (cache, cost ledger), implements ``ChatModel``:
``complete(request) -> Completion`` and ``stream(request) -> iterator of StreamEvent``.
A request carries the rendered messages plus the context an extractive provider
needs (``documents``) and the bookkeeping the wrappers record (prompt id, request id).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]

# kb's "I don't know": what the offline provider says when no sentence covers the question, and what the
# answer pipeline says when nothing was retrieved or the support check refuses an answer. One wording, so
# that callers (and the eval suites) can tell a refusal from an answer.
REFUSAL = "I don't know: the documents I can search don't cover this."


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.0
    max_tokens: int = 512

    def as_dict(self) -> dict[str, float | int]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}


@dataclass(frozen=True)
class SourcePassage:
    """A numbered retrieved passage, as shown to the model under ``[n]``."""

    n: int
    text: str


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    params: GenerationParams = field(default_factory=GenerationParams)
    prompt_id: str = ""
    documents: tuple[SourcePassage, ...] = ()
    query: str = ""  # the plain question, for providers that do not read prompts (extractive)
    request_id: str = ""
    use_cache: bool = True
    collection: str | None = None  # recorded in the usage ledger
    key: str | None = None  # the caller's key name; recorded in the usage ledger
    # The collections the caller could read for this answer: part of the cache key, so an
    # answer built from restricted chunks is never served to a caller with another scope.
    scope: tuple[str, ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage
    provider: str
    model: str
    cached: bool = False
    cost_usd: float | None = None
    usage_reported: bool = True  # False when the provider gave no usage and tokens were estimated
    fallback: bool = False  # True when a fallback provider answered (such answers are not cached)


@dataclass(frozen=True)
class StreamEvent:
    """A piece of a streamed answer; the last event carries ``completion``."""

    delta: str = ""
    completion: Completion | None = None


@runtime_checkable
class ChatModel(Protocol):
    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    def complete(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]: ...


class Wrapper:
    """Base of the gateway's wrappers (cache, retries, ledger): each is a ChatModel that answers as the
    model it wraps, so ``provider`` and ``model`` are the inner one's."""

    def __init__(self, inner: ChatModel):
        self.inner = inner

    @property
    def provider(self) -> str:
        return self.inner.provider

    @property
    def model(self) -> str:
        return self.inner.model
