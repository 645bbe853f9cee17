"""What the answer pipeline produces (``Answer``) and decides before calling the model (``Plan``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.llm.base import ChatRequest
from app.rag.citations import Citation
from vectorstore.store import Hit


@dataclass
class Answer:
    answer: str
    citations: list[Citation]
    prompt: str
    provider: str
    model: str
    usage: dict[str, Any]
    cached: bool
    grounded: bool
    request_id: str
    latency_ms: float
    collections: list[str] = field(default_factory=list)
    standalone_question: str = ""  # what retrieval searched for (a follow-up, condensed)
    retrieved: list[dict[str, Any]] = field(default_factory=list)  # passages retrieved, in rank order
    conversation_id: str | None = None  # set by the API

    def as_dict(self) -> dict[str, Any]:
        data = self.__dict__.copy()
        data["citations"] = [c.as_dict() for c in self.citations]
        return data


@dataclass
class Plan:
    """Everything decided before the model is called; ``request`` None means refuse."""

    request_id: str
    started: float
    question: str
    standalone: str
    collections: list[str]
    prompt_id: str
    hits: list[Hit]
    request: ChatRequest | None
    best_evidence: float
    cache_key: str | None = None  # where the finished answer goes in the answer cache
    cached: Answer | None = None  # an answer cache hit: no retrieval, no model call
    principal: str | None = None
