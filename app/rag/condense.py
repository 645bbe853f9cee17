"""Turn a follow-up ("And for contractors?") into a standalone question before retrieval.

Retrieval sees one query, so a follow-up must carry its context. A generative
provider rewrites it with the versioned ``condense`` prompt; the offline
``extractive`` provider cannot, so a deterministic rule does: a question that
opens like a continuation ("and", "what about"), leans on a pronoun ("is it
paid?") or has almost no content words of its own is joined to the previous
standalone question. If the model fails or returns something unusable, the rule
answers instead: a follow-up must never fail because condensing did.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import KbError
from app.llm.base import ChatModel, ChatRequest, GenerationParams, Message
from app.rag.conversation import Turn
from app.text import escape_fence, terms
from prompts.registry import PromptRegistry

log = logging.getLogger(__name__)

RULE = "rule"
_LEAD = re.compile(r"^\s*(?:(?:and|but|so|also|ok(?:ay)?|then)\b[\s,]*)+|^\s*(?:what|how)\s+about\b\s*", re.I)
_PRONOUNS = frozenset(["it", "its", "they", "them", "their", "that", "this", "those", "these", "there"])
_PREPOSITIONS = frozenset(["for", "in", "at", "on", "with", "during", "after", "before", "about", "by", "to", "from"])
_ANSWER_CHARS = 400  # of each earlier answer shown to the model: enough to resolve a reference
# History must not close the prompt's <conversation> fence and speak outside it: its tags are escaped.
_FENCE = re.compile(r"<\s*/?\s*conversation\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Condensed:
    question: str
    method: str  # "rule", "unchanged" or the prompt id (condense@v1)


def rule_condense(question: str, previous: str) -> str:
    """The deterministic rewrite: join a dependent follow-up to the previous standalone question."""
    question = question.strip()
    lead = _LEAD.match(question)
    body = _LEAD.sub("", question).strip(" ,?.!")
    words = re.findall(r"[A-Za-z']+", body.lower())
    dependent = bool(lead) or any(w in _PRONOUNS for w in words) or len(terms(body)) <= 1
    if not dependent or not previous.strip():
        return question
    base = previous.strip().rstrip("?.! ")
    if not body:
        return previous.strip()
    if lead and words and words[0] in _PREPOSITIONS:
        return f"{base} {body}?"  # "How long is probation" + "for contractors"
    if lead:
        return f"{base}, regarding {body}?"
    return f"{base}? {question}"  # a pronoun: keep both, retrieval sees the referent's words


class Condenser:
    def __init__(self, chat_model: ChatModel, prompts: PromptRegistry, prompt_ref: str):
        self.chat_model = chat_model
        self.prompt = prompts.get(prompt_ref)

    @property
    def generative(self) -> bool:
        return self.chat_model.provider != "extractive"

    def condense(
        self,
        question: str,
        history: Sequence[Turn],
        *,
        request_id: str = "",
        scope: tuple[str, ...] = (),
        key: str | None = None,
    ) -> Condensed:
        if not history:
            return Condensed(question, "unchanged")
        previous = history[-1].resolved
        if not self.generative:
            rewritten = rule_condense(question, previous)
            return Condensed(rewritten, RULE if rewritten != question else "unchanged")
        try:
            rewritten = self._ask_model(question, history, request_id, scope, key)
        except KbError as exc:
            log.warning("request %s: condensing with %s failed (%s); using the rule", request_id, self.prompt.id,
                        exc.code)  # fmt: skip
            return Condensed(rule_condense(question, previous), RULE)
        if not rewritten or len(rewritten) > 4 * len(question) + 400:
            return Condensed(rule_condense(question, previous), RULE)
        return Condensed(rewritten, self.prompt.id)

    def _ask_model(
        self, question: str, history: Sequence[Turn], request_id: str, scope: tuple[str, ...], key: str | None
    ) -> str:
        lines = []
        for turn in history:
            lines.append(f"User: {turn.question}")
            lines.append(f"Assistant: {turn.answer[:_ANSWER_CHARS]}")
        history_text = escape_fence("\n".join(lines), _FENCE)
        rendered = self.prompt.render(history=history_text, question=question)
        hints = self.prompt.model_hints
        request = ChatRequest(
            messages=(Message("system", rendered.system), Message("user", rendered.user)),
            params=GenerationParams(temperature=0.0, max_tokens=int(hints.get("max_tokens", 96))),
            prompt_id=rendered.prompt_id,
            query=question,
            request_id=request_id,
            collection=",".join(scope) or None,
            scope=scope,
            key=key,
        )
        text = self.chat_model.complete(request).text.strip().strip('"').strip()
        return text.splitlines()[0].strip() if text else ""
