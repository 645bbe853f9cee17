"""Answer a question from a collection: retrieve → render versioned prompt → call model → cite.

Importable and usable without a server: the API, the CLI (``kb ask``) and the
eval runner all call ``RagService.answer`` with the same objects.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from app import tracing
from app.errors import CollectionNotFoundError, InvalidRequestError, PromptNotFoundError, ProviderError
from app.llm.base import REFUSAL, ChatModel, ChatRequest, Completion, GenerationParams, Message, SourcePassage
from app.llm.costs import UsageLedger
from app.rag.answer import Answer, Plan, finish
from app.rag.answer_cache import AnswerCache, answer_key, revive
from app.rag.citations import passage_label
from app.rag.condense import Condenser
from app.rag.options import AnswerEvent, AskOptions, SearchOptions
from app.rag.retrieval import MODES, Retriever, SearchHit
from app.rag.support import POLICIES, EmbedsTexts, Verifier
from app.rag.support_judge import SupportJudge
from app.rag.support_policy import MarkerFilter
from app.settings import Settings, SupportSettings
from app.text import escape_fence
from app.tokens import count_tokens
from prompts.registry import Prompt, PromptLookupError, PromptRegistry
from prompts.selection import PromptSelector
from vectorstore.manifest import Manifest
from vectorstore.store import Hit, VectorStore

log = logging.getLogger(__name__)
ANSWER_VARIABLES = {"question", "sources"}  # what an answer prompt is rendered with
# A document must not close the prompt's <sources> fence and speak outside it: its tags are escaped.
_FENCE = re.compile(r"<\s*/?\s*sources\s*>", re.IGNORECASE)  # also "< /sources>", "</ SOURCES >"


class EmbedsQueries(Protocol):
    def embed_query(self, text: str) -> list[float]: ...


@dataclass(frozen=True)
class RagConfig:
    """What the answer pipeline reads from five settings sections, gathered in one place (``from_settings``).
    No defaults here: they are the settings' own, defined once in app/settings.py."""

    default_prompt: str  # name@version of the answer prompt
    top_k: int
    max_top_k: int
    min_evidence: float  # relevance floor: below it the answer is a refusal (see retrieval.py)
    context_token_budget: int
    max_question_chars: int
    params: GenerationParams
    support: SupportSettings

    @classmethod
    def from_settings(cls, s: Settings) -> RagConfig:
        return cls(
            default_prompt=s.prompts.answer,
            top_k=s.retrieval.top_k,
            max_top_k=s.retrieval.max_top_k,
            min_evidence=s.retrieval.min_evidence,
            context_token_budget=s.prompts.context_token_budget,
            max_question_chars=s.limits.max_question_chars,
            params=GenerationParams(temperature=s.llm.temperature, max_tokens=s.llm.max_tokens),
            support=s.support,
        )


class RagService:
    def __init__(
        self,
        store: VectorStore,
        embedder: EmbedsQueries,
        chat_model: ChatModel,
        prompts: PromptRegistry,
        config: RagConfig,
        *,
        retriever: Retriever,
        condenser: Condenser,
        manifest: Manifest | None = None,
        selector: PromptSelector | None = None,
        answer_cache: AnswerCache | None = None,
        hit_ledger: UsageLedger | None = None,
    ):
        self.store = store
        self.embedder = embedder
        self.chat_model = chat_model
        self.prompts = prompts
        self.config = config
        self.manifest = manifest
        self.retriever = retriever  # required: a default one once meant dense-only search, silently
        self.condenser = condenser
        self.selector = selector or PromptSelector({}, prompts)
        self.answer_cache = answer_cache
        self.hit_ledger = hit_ledger  # records answer cache hits, as the response cache's hits are
        self.verifier = Verifier(embedder if isinstance(embedder, EmbedsTexts) else None, self.config.support)
        self.judge: SupportJudge | None = None  # the model's second opinion on undecided sentences
        if self.config.support.judge and chat_model.provider != "extractive":
            self.judge = SupportJudge(chat_model, prompts, self.config.support.judge_prompt)

    def _validate(self, question: str, top_k: int | None) -> tuple[str, int]:
        question = question.strip()
        if not question:
            raise InvalidRequestError("question must not be empty", code=InvalidRequestError.QUESTION_EMPTY)
        if len(question) > self.config.max_question_chars:
            raise InvalidRequestError(
                f"question is {len(question)} characters; the limit is {self.config.max_question_chars}",
                code=InvalidRequestError.QUESTION_TOO_LONG,
                http_status=413,
            )
        k = self.config.top_k if top_k is None else top_k
        if not 1 <= k <= self.config.max_top_k:
            raise InvalidRequestError(
                f"top_k must be between 1 and {self.config.max_top_k}", code=InvalidRequestError.TOP_K_OUT_OF_RANGE
            )
        return question, k

    def _collections(self, collections: str | Sequence[str], *, local_only: bool = False) -> list[str] | None:
        """The named collections, each checked to exist. ``local_only``: None instead of asking the
        store about a collection the manifest does not know (the store may be a server)."""
        names = list(dict.fromkeys([collections] if isinstance(collections, str) else collections))
        if not names:
            raise InvalidRequestError("name at least one collection", code=InvalidRequestError.COLLECTION_MISSING)
        # Collections with live documents in the manifest exist (a cheap local read); ask the store for the rest.
        known = {c for c, count, _ in self.manifest.version(names) if count} if self.manifest is not None else set()
        for name in names:
            if name in known:
                continue
            if local_only:
                return None
            if not self.store.exists(name):
                raise CollectionNotFoundError(
                    f"collection {name!r} does not exist; ingest documents into it first "
                    f"(kb ingest PATH --collection {name!r})"
                )
        return names

    def _choose(self, requested: str | None, request_id: str) -> str:
        """The answer prompt for this request: the one it names, else the A/B split's pick, else the default."""
        try:
            chosen = self.selector.choose("answer", self.config.default_prompt, request_id, requested=requested)
            variables = set(self.prompts.get(chosen).variables)
        except PromptLookupError as exc:
            raise PromptNotFoundError(str(exc)) from exc
        if variables != ANSWER_VARIABLES:  # judge@v1, condense@v1: real prompts, but they cannot answer
            raise InvalidRequestError(
                f"prompt {chosen!r} is not an answer prompt (it takes {sorted(variables)}, an answer prompt takes "
                f"{sorted(ANSWER_VARIABLES)}); name one such as {self.config.default_prompt!r} (see: kb prompts list)",
                code=InvalidRequestError.PROMPT_NOT_ANSWER,
            )
        return chosen

    def _prompt(self, ref: str | None) -> Prompt:
        try:
            return self.prompts.get(ref or self.config.default_prompt)
        except PromptLookupError as exc:
            raise PromptNotFoundError(str(exc)) from exc

    def search(
        self, query: str, collections: Sequence[str], options: SearchOptions = SearchOptions()
    ) -> list[SearchHit]:
        """Ranked chunks with each retriever's score: POST /search and ``kb search``."""
        if options.mode is not None and options.mode not in MODES:
            raise InvalidRequestError(f"mode must be one of {', '.join(MODES)}", code=InvalidRequestError.MODE_INVALID)
        names = self._collections(collections)
        assert names is not None
        query, k = self._validate(query, options.top_k)
        return self.retriever.search(query, names, k, mode=options.mode, filters=options.filters)

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

    def plan(self, question: str, collections: str | Sequence[str], options: AskOptions = AskOptions()) -> Plan:
        """Validate, condense a follow-up, retrieve and render: all that precedes the model call."""
        plan = self._plan(question, collections, options)
        assert plan is not None
        return plan

    def cached_answer(
        self, question: str, collections: str | Sequence[str], options: AskOptions = AskOptions()
    ) -> Answer | None:
        """The answer cache's answer to a new question (no ``history``), or None: then call ``answer``.

        Touches only memory and the local manifest, never the vector store, the model or the
        database (the cache hit's ledger row is deferred), so the API may call it on its event loop.
        """
        if options.history or self.answer_cache is None:
            return None
        with tracing.span("kb.answer_cache.lookup") as span:
            plan = self._plan(question, collections, options, cached_only=True)
            answer = None if plan is None else self._from_cache(plan)
            if span is not None:  # the event loop's fast path: nothing built while tracing is off
                span.set_attribute("kb.answer_cache.hit", answer is not None)
                if answer is not None:
                    span.set_attributes(_answer_attributes(answer))
            return answer

    def _plan(
        self, question: str, collections: str | Sequence[str], options: AskOptions, *, cached_only: bool = False
    ) -> Plan | None:
        """``plan``; with ``cached_only``, None unless the answer cache has the answer."""
        started = time.perf_counter()
        request_id = options.request_id or tracing.current_trace_id() or uuid.uuid4().hex  # kb ask: its trace
        use_cache, principal, support_policy = options.use_cache, options.principal, options.support_policy
        question, k = self._validate(question, options.top_k)
        if support_policy is not None and support_policy not in POLICIES:
            raise InvalidRequestError(
                f"support_policy must be one of {', '.join(POLICIES)}", code=InvalidRequestError.POLICY_INVALID
            )
        names = self._collections(collections, local_only=cached_only)
        if names is None:
            return None
        prompt_file = self._prompt(self._choose(options.prompt, request_id))
        scope = tuple(sorted(names))
        with tracing.span("kb.condense", {"kb.history_turns": len(options.history)}) as span:
            condensed = self.condenser.condense(
                question, options.history, request_id=request_id, scope=scope, key=principal
            )
            tracing.set_attributes(span, {"kb.condense.method": condensed.method})
        if condensed.question != question:
            log.info("request %s: follow-up condensed by %s", request_id, condensed.method)
        policy = support_policy or self.config.support.policy
        cache_key = self._cache_key(condensed.question, scope, prompt_file.id, k, policy) if use_cache else None
        if cache_key is not None and self.answer_cache is not None:
            cached = self.answer_cache.get(cache_key)
            if cached is not None:
                plan = Plan(request_id, started, question, condensed.question, names, prompt_file.id, [], None, 0.0)
                plan.cached, plan.principal, plan.support_policy = cached, principal, policy
                return plan
        if cached_only:
            return None
        found = self.retriever.search(condensed.question, names, k)
        hits = self._pack([h.as_hit() for h in found])
        best = max((h.evidence for h in found[: len(hits)]), default=0.0)
        plan = Plan(request_id, started, question, condensed.question, names, prompt_file.id, hits, None, best)
        plan.cache_key, plan.principal, plan.support_policy = cache_key, principal, policy
        if best < self.config.min_evidence:
            log.info("request %s: best evidence in %s is %.3f < floor %.3f: refusing", request_id, names, best,
                     self.config.min_evidence)  # fmt: skip
            return plan
        sources = "\n\n".join(passage_label(i, h) for i, h in enumerate(hits, start=1)) or "(no sources found)"
        sources = escape_fence(sources, _FENCE)
        rendered = prompt_file.render(question=condensed.question, sources=sources)
        plan.request = ChatRequest(
            messages=(Message("system", rendered.system), Message("user", rendered.user)),
            params=self.config.params,
            prompt_id=rendered.prompt_id,
            documents=tuple(SourcePassage(i, h.text) for i, h in enumerate(hits, start=1)),
            query=condensed.question,
            request_id=request_id,
            use_cache=use_cache,
            collection=",".join(names),
            key=principal,
            scope=scope,
        )
        return plan

    def _cache_key(self, question: str, scope: tuple[str, ...], prompt_id: str, k: int, policy: str) -> str | None:
        if self.answer_cache is None or self.manifest is None or self.config.params.temperature != 0:
            return None
        return answer_key(
            question=" ".join(question.split()), scope=scope, prompt=prompt_id, k=k, policy=policy,
            model=[self.chat_model.provider, self.chat_model.model], rag=repr(self.config),
            retrieval=repr(self.retriever.config), corpus=self.manifest.version(list(scope)),
        )  # fmt: skip

    def _remember(self, plan: Plan, answer: Answer, completion: Completion | None) -> None:
        """Keep a finished answer for the next identical question (never a fallback provider's)."""
        if plan.cache_key is not None and self.answer_cache is not None and not (completion and completion.fallback):
            self.answer_cache.put(plan.cache_key, answer)

    def _from_cache(self, plan: Plan) -> Answer:
        assert plan.cached is not None
        return revive(plan.cached, plan.request_id, plan.started, self.hit_ledger, plan.collections, plan.principal)

    def answer(self, question: str, collections: str | Sequence[str], options: AskOptions = AskOptions()) -> Answer:
        """Answer from the named collections (one name or several); ``options.history`` makes the question
        a follow-up."""
        with tracing.span("kb.answer") as span:
            tracing.set_attributes(span, {"kb.question": tracing.text(question)})  # only if questions may be kept
            plan = self.plan(question, collections, options)
            if plan.cached is not None:
                answer = self._from_cache(plan)
            else:
                completion = self.chat_model.complete(plan.request) if plan.request is not None else None
                answer = finish(plan, completion, self.chat_model, self.verifier, self.judge)
                self._remember(plan, answer, completion)
            if span is not None:  # tracing on: not built otherwise (every answer passes here)
                span.set_attributes(_answer_attributes(answer))
            return answer

    def stream_answer(
        self, question: str, collections: str | Sequence[str], options: AskOptions = AskOptions()
    ) -> Iterator[AnswerEvent]:
        """``("token", text)`` events, then ``("done", Answer)``.

        Validation, retrieval and access errors are raised here, before the first event,
        so an HTTP caller can still answer them with a plain status code.
        """
        return self._stream(self.plan(question, collections, options))

    def _stream(self, plan: Plan) -> Iterator[AnswerEvent]:
        if plan.cached is not None:
            answer = self._from_cache(plan)
            yield "token", answer.answer
            yield "done", answer
            return
        if plan.request is None:
            answer = finish(plan, None, self.chat_model, self.verifier, self.judge)
            self._remember(plan, answer, None)
            yield "token", REFUSAL
            yield "done", answer
            return
        completion: Completion | None = None
        # flag streams as the model writes (less markers that name no passage); drop and refuse can only
        # know what to send once every sentence is checked, so their text comes in one piece at the end.
        markers = MarkerFilter(len(plan.hits)) if plan.support_policy in (None, "flag") else None
        for event in self.chat_model.stream(plan.request):
            if event.delta and markers is not None and (text := markers.feed(event.delta)):
                yield "token", text
            if event.completion is not None:
                completion = event.completion
        if completion is None:
            raise ProviderError("the provider's stream ended without a final answer")
        answer = finish(plan, completion, self.chat_model, self.verifier, self.judge)
        self._remember(plan, answer, completion)
        if markers is None:
            yield "token", answer.answer
        elif held := markers.flush():
            yield "token", held
        yield "done", answer


def _answer_attributes(answer: Answer) -> dict[str, tracing.AttributeValue]:
    return {
        "kb.collections": ",".join(answer.collections), "kb.prompt": answer.prompt, "kb.grounded": answer.grounded,
        "kb.answer_cache.hit": answer.cached, "kb.citations": len(answer.citations),
    }  # fmt: skip
