"""Answer a question from a collection: retrieve → render versioned prompt → call model → cite.

Importable and usable without a server: the API, the CLI (``kb ask``) and the
eval runner all call ``RagService.answer`` with the same objects.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.errors import CollectionNotFoundError, InvalidRequestError, PromptNotFoundError
from app.llm.base import ChatModel, ChatRequest, GenerationParams, Message, SourcePassage
from app.llm.tokens import count_tokens
from app.rag.citations import Citation, build_citations, passage_label
from prompts.registry import Prompt, PromptLookupError, PromptRegistry
from vectorstore.manifest import Manifest
from vectorstore.store import CollectionMissing, Hit, VectorStore

log = logging.getLogger(__name__)


class EmbedsQueries(Protocol):
    def embed_query(self, text: str) -> list[float]: ...


@dataclass(frozen=True)
class RagConfig:
    default_prompt: str = "answer@v1"
    top_k: int = 5
    max_top_k: int = 20
    min_score: float = 0.2
    context_token_budget: int = 2500
    max_question_chars: int = 2000
    params: GenerationParams = field(default_factory=GenerationParams)


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

    def as_dict(self) -> dict[str, Any]:
        data = self.__dict__.copy()
        data["citations"] = [c.as_dict() for c in self.citations]
        return data


class RagService:
    def __init__(
        self,
        store: VectorStore,
        embedder: EmbedsQueries,
        chat_model: ChatModel,
        prompts: PromptRegistry,
        config: RagConfig | None = None,
        *,
        manifest: Manifest | None = None,
    ):
        self.store = store
        self.embedder = embedder
        self.chat_model = chat_model
        self.prompts = prompts
        self.config = config or RagConfig()
        self.manifest = manifest

    def _validate(self, question: str, collection: str, top_k: int | None) -> tuple[str, int]:
        question = question.strip()
        if not question:
            raise InvalidRequestError("question must not be empty", code="question_empty")
        if len(question) > self.config.max_question_chars:
            raise InvalidRequestError(
                f"question is {len(question)} characters; the limit is {self.config.max_question_chars}",
                code="question_too_long",
                http_status=413,
            )
        k = self.config.top_k if top_k is None else top_k
        if not 1 <= k <= self.config.max_top_k:
            raise InvalidRequestError(f"top_k must be between 1 and {self.config.max_top_k}", code="top_k_out_of_range")
        if not self.store.exists(collection):
            raise CollectionNotFoundError(
                f"collection {collection!r} does not exist; ingest documents into it first "
                f"(kb ingest PATH --collection {collection!r})"
            )
        return question, k

    def _prompt(self, ref: str | None) -> Prompt:
        try:
            return self.prompts.get(ref or self.config.default_prompt)
        except PromptLookupError as exc:
            raise PromptNotFoundError(str(exc)) from exc

    def retrieve(self, question: str, collection: str, top_k: int) -> list[Hit]:
        # Over-fetch a little: chunks of a document version that is not live are dropped below.
        fetch = top_k if self.manifest is None else top_k + 5
        try:
            hits = self.store.query(collection, self.embedder.embed_query(question), fetch)
        except CollectionMissing as exc:
            raise CollectionNotFoundError(f"collection {collection!r} does not exist") from exc
        hits = self._live_only(collection, hits)
        return [h for h in hits if h.score >= self.config.min_score][:top_k]

    def _live_only(self, collection: str, hits: list[Hit]) -> list[Hit]:
        """Keep chunks of each document's live version only (updates are atomic for readers)."""
        if self.manifest is None:
            return hits
        live = self.manifest.live_hashes(collection, (str(h.metadata.get("document_id")) for h in hits))
        return [h for h in hits if live.get(str(h.metadata.get("document_id"))) == h.metadata.get("doc_hash")]

    def _pack(self, hits: list[Hit]) -> list[Hit]:
        """Keep passages in rank order while they fit the prompt's token budget."""
        packed: list[Hit] = []
        used = 0
        for hit in hits:
            cost = count_tokens(passage_label(len(packed) + 1, hit))
            if used + cost > self.config.context_token_budget:
                break
            packed.append(hit)
            used += cost
        return packed

    def answer(
        self,
        question: str,
        collection: str,
        *,
        top_k: int | None = None,
        prompt: str | None = None,
        request_id: str | None = None,
        use_cache: bool = True,
    ) -> Answer:
        started = time.perf_counter()
        request_id = request_id or uuid.uuid4().hex
        question, k = self._validate(question, collection, top_k)
        prompt_file = self._prompt(prompt)
        hits = self._pack(self.retrieve(question, collection, k))
        sources = "\n\n".join(passage_label(i, h) for i, h in enumerate(hits, start=1)) or "(no sources found)"
        rendered = prompt_file.render(question=question, sources=sources)
        request = ChatRequest(
            messages=(Message("system", rendered.system), Message("user", rendered.user)),
            params=self.config.params,
            prompt_id=rendered.prompt_id,
            documents=tuple(SourcePassage(i, h.text) for i, h in enumerate(hits, start=1)),
            query=question,
            request_id=request_id,
            use_cache=use_cache,
            collection=collection,
        )
        completion = self.chat_model.complete(request)
        citations = build_citations(completion.text, hits)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        log.info(
            "answered request %s from %r with %s@%s (%d hits, %d cited, cached=%s) in %.0f ms",
            request_id,
            collection,
            completion.provider,
            completion.model,
            len(hits),
            len(citations),
            completion.cached,
            latency_ms,
        )
        return Answer(
            answer=completion.text,
            citations=citations,
            prompt=rendered.prompt_id,
            provider=completion.provider,
            model=completion.model,
            usage={
                "prompt_tokens": completion.usage.prompt_tokens,
                "completion_tokens": completion.usage.completion_tokens,
                "cost_usd": completion.cost_usd,
            },
            cached=completion.cached,
            grounded=bool(citations),
            request_id=request_id,
            latency_ms=latency_ms,
        )
