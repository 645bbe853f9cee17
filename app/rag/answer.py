"""What the answer pipeline produces (``Answer``) and decides before calling the model (``Plan``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from app import metrics, tracing
from app.llm.base import REFUSAL, ChatModel, ChatRequest, Completion
from app.rag.citations import Citation, build_citations
from app.rag.support import Policy, SentenceSupport, Verifier
from app.rag.support_policy import Checked, RefinesSupport, verify_answer
from vectorstore.store import Hit

log = logging.getLogger(__name__)


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
    sentences: list[SentenceSupport] = field(default_factory=list)  # each sentence's support (support.py)
    support: dict[str, Any] = field(default_factory=dict)  # policy, counts of unsupported/dropped, refused

    def as_dict(self) -> dict[str, Any]:
        data = self.__dict__.copy()
        data["citations"] = [c.as_dict() for c in self.citations]
        data["sentences"] = [s.as_dict() for s in self.sentences]
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
    support_policy: Policy | None = None  # the request's own; None: the configured one


def _count(checked: Checked) -> None:
    """Prometheus: a fresh answer's claims by what the support policy did with them."""
    summary = checked.summary()
    claims, unsupported = summary["claims"], summary["unsupported"]
    if checked.refused:
        outcomes = {"withheld": claims, "dropped": checked.dropped}
    else:
        outcomes = {"supported": claims - unsupported, "unsupported": unsupported, "dropped": checked.dropped}
    for outcome, n in outcomes.items():
        if n:
            metrics.SUPPORT_SENTENCES.labels(checked.policy, outcome).inc(n)
    if checked.refused:
        metrics.SUPPORT_REFUSALS.labels(checked.policy).inc()


def finish(
    plan: Plan,
    completion: Completion | None,
    model_: ChatModel,
    verifier: Verifier,
    judge: RefinesSupport | None = None,
) -> Answer:
    """The Answer for a plan's completion, each sentence checked against what it cites and the support
    policy applied; or the refusal when the plan had no evidence (no model call: ``model_`` names who
    would have answered)."""
    policy = plan.support_policy or verifier.config.policy
    if completion is None:
        text, citations, cached, grounded = REFUSAL, [], False, False
        provider, model = model_.provider, model_.model
        usage: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
        checked = Checked(REFUSAL, [], policy)
    else:
        cached, provider, model = completion.cached, completion.provider, completion.model
        with tracing.span("kb.verify", {"kb.support.policy": policy}) as span:
            checked = verify_answer(
                verifier, completion.text, plan.hits, refusal=REFUSAL, policy=policy, judge=judge, context=plan.request
            )
            if span is not None:
                summary = checked.summary()
                span.set_attributes({f"kb.support.{k}": summary[k] for k in ("claims", "unsupported", "dropped")})
                span.set_attribute("kb.support.refused", checked.refused)
        text = checked.text
        _count(checked)
        citations = build_citations(text, plan.hits)
        grounded = bool(citations) and not checked.refused
        usage = {
            "prompt_tokens": completion.usage.prompt_tokens,
            "completion_tokens": completion.usage.completion_tokens,
            "cost_usd": completion.cost_usd,
        }
    latency_ms = round((time.perf_counter() - plan.started) * 1000, 1)
    retrieved = [
        {"chunk_id": h.id, "collection": h.metadata.get("collection"), "source": h.metadata.get("source"),
         "page": h.metadata.get("page")}
        for h in plan.hits
    ]  # fmt: skip
    log.info(
        "answered request %s from %s with %s/%s (%d hits, %d cited, cached=%s, grounded=%s, %d of %d sentences "
        "unsupported, %s: %d dropped%s) in %.0f ms",
        plan.request_id, plan.collections, provider, model, len(retrieved), len(citations), cached, grounded,
        checked.unsupported, len(checked.sentences), policy, checked.dropped, ", refused" if checked.refused else "",
        latency_ms,
    )  # fmt: skip
    return Answer(
        answer=text, citations=citations, prompt=plan.prompt_id, provider=provider, model=model, usage=usage,
        cached=cached, grounded=grounded, request_id=plan.request_id, latency_ms=latency_ms,
        collections=plan.collections, standalone_question=plan.standalone, retrieved=retrieved,
        sentences=checked.sentences, support=checked.summary(),
    )  # fmt: skip
