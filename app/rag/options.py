"""What one question or one search asks of ``RagService``: built by the routes, the CLI and the eval
runner, taken whole by the service.

Before these types the options travelled as ``**options: Any`` dicts that each route built by hand,
so a misspelt key reached the service as a TypeError at run time; now it is a type error in CI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from app.rag.answer import Answer
from app.rag.conversation import Turn
from app.rag.retrieval import Mode, SearchFilters
from app.rag.support import Policy


@dataclass(frozen=True)
class AskOptions:
    """How to answer one question. ``None`` means the configured default."""

    top_k: int | None = None
    prompt: str | None = None  # name@vN; else the A/B split or the default answer prompt
    request_id: str | None = None  # a new one when not given; the A/B split hashes it
    use_cache: bool = True  # False bypasses the answer and response caches (never their writes' rules)
    history: Sequence[Turn] = ()  # earlier turns: the question is a follow-up, condensed first
    principal: str | None = None  # who asks (a key or user name): condensing's cache key and the ledger
    support_policy: Policy | None = None  # flag | drop | refuse unsupported sentences


@dataclass(frozen=True)
class SearchOptions:
    """How to search: ``top_k`` passages by ``mode``, within ``filters``."""

    top_k: int | None = None
    mode: Mode | None = None
    filters: SearchFilters | None = None


# What ``RagService.stream_answer`` yields: text as it is written, then the finished answer.
AnswerEvent = tuple[Literal["token"], str] | tuple[Literal["done"], Answer]
