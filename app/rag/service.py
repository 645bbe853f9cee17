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
from app.llm.providers.extractive import REFUSAL
from app.llm.tokens import count_tokens
from app.rag.citations import Citation, build_citations, passage_label
from app.rag.retrieval import MODES, Mode, RetrievalConfig, Retriever, SearchFilters, SearchHit
from prompts.registry import Prompt, PromptLookupError, PromptRegistry
from vectorstore.manifest import Manifest
from vectorstore.store import Hit, VectorStore

log = logging.getLogger(__name__)


class EmbedsQueries(Protocol):
    def embed_query(self, text: str) -> list[float]: ...


@dataclass(frozen=True)
class RagConfig:
    default_prompt: str = "answer@v1"
    top_k: int = 5
    max_top_k: int = 20
    min_score: float = 0.2
    min_evidence: float = 0.45  # relevance floor: below it the answer is a refusal (see retrieval.py)
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
        retriever: Retriever | None = None,
    ):
        self.store = store
        self.embedder = embedder
        self.chat_model = chat_model
        self.prompts = prompts
        self.config = config or RagConfig()
        self.manifest = manifest
        self.retriever = retriever or Retriever(
            store, embedder, None, manifest, RetrievalConfig(mode="dense", min_score=self.config.min_score)
        )

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

    def retrieve(
        self,
        question: str,
        collection: str,
        top_k: int,
        *,
        mode: Mode | None = None,
        filters: SearchFilters | None = None,
    ) -> list[Hit]:
        """Evidence for an answer: live chunks, fused and diversified; ``Hit.score`` is the cosine."""
        hits = self.retriever.search(question, [collection], top_k, mode=mode, filters=filters)
        return [h.as_hit() for h in hits]

    def search(
        self,
        query: str,
        collections: list[str],
        *,
        top_k: int | None = None,
        mode: Mode | None = None,
        filters: SearchFilters | None = None,
    ) -> list[SearchHit]:
        """Ranked chunks with each retriever's score: POST /search and ``kb search``."""
        if not collections:
            raise InvalidRequestError("name at least one collection", code="collection_missing")
        if mode is not None and mode not in MODES:
            raise InvalidRequestError(f"mode must be one of {', '.join(MODES)}", code="mode_invalid")
        k = top_k
        for collection in dict.fromkeys(collections):
            query, k = self._validate(query, collection, top_k)
        return self.retriever.search(query, list(dict.fromkeys(collections)), k or 1, mode=mode, filters=filters)

    def _refusal(self, request_id: str, collection: str, prompt_id: str, best: float, started: float) -> Answer:
        """Weak evidence: say so instead of asking a model that might invent an answer."""
        log.info("request %s: best evidence in %r is %.3f < floor %.3f: refusing", request_id, collection, best,
                 self.config.min_evidence)  # fmt: skip
        return Answer(
            answer=REFUSAL,
            citations=[],
            prompt=prompt_id,
            provider=self.chat_model.provider,
            model=self.chat_model.model,
            usage={"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0},
            cached=False,
            grounded=False,
            request_id=request_id,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )

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
        found = self.retriever.search(question, [collection], k)
        hits = self._pack([h.as_hit() for h in found])
        best = max((h.evidence for h in found[: len(hits)]), default=0.0)
        if best < self.config.min_evidence:
            return self._refusal(request_id, collection, prompt_file.id, best, started)
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
