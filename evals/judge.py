"""LLM-as-judge: faithfulness and relevance of an answer, graded by a generative model.

Used only when the variant's provider is generative (the extractive provider copies
sentences and cannot grade). The judge's prompt is a versioned file like every other
(``prompts/judge/v1.yaml``); its calls are logged in the usage ledger under the case's
request id plus ``.judge``, so their cost is reported apart from the answers' cost.
Grades 1..5 are mapped to 0..1; an unreadable reply scores ``None`` (not measured).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import KbError
from app.llm.base import ChatModel, ChatRequest, GenerationParams, Message
from prompts.registry import PromptRegistry

log = logging.getLogger(__name__)

JUDGE_PROMPT = "judge@v1"
_OBJECT = re.compile(r"\{.*?\}", re.S)


@dataclass(frozen=True)
class Verdict:
    faithfulness: float | None
    relevance: float | None
    reason: str = ""


def _grade(value: object) -> float | None:
    try:
        grade = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return round((min(max(grade, 1.0), 5.0) - 1.0) / 4.0, 4)


def parse_verdict(text: str) -> Verdict:
    """The first JSON object in the reply with 1..5 grades; anything else grades nothing."""
    for match in _OBJECT.finditer(text):
        try:
            data = json.loads(match.group(0))
        except ValueError:
            continue
        if isinstance(data, dict) and ("faithfulness" in data or "relevance" in data):
            return Verdict(_grade(data.get("faithfulness")), _grade(data.get("relevance")), str(data.get("reason", "")))
    return Verdict(None, None, "unreadable judge reply")


def is_generative(chat_model: ChatModel) -> bool:
    return chat_model.provider != "extractive"


class Judge:
    def __init__(self, chat_model: ChatModel, prompts: PromptRegistry, prompt_ref: str = JUDGE_PROMPT):
        self.chat_model = chat_model
        self.prompt = prompts.get(prompt_ref)

    @property
    def prompt_id(self) -> str:
        return self.prompt.id

    def grade(
        self, question: str, passages: Sequence[str], answer: str, *, request_id: str, use_cache: bool = True
    ) -> Verdict:
        sources = "\n\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1)) or "(no sources)"
        rendered = self.prompt.render(question=question, sources=sources, answer=answer)
        hints = self.prompt.model_hints
        request = ChatRequest(
            messages=(Message("system", rendered.system), Message("user", rendered.user)),
            params=GenerationParams(float(hints.get("temperature", 0.0)), int(hints.get("max_tokens", 200))),
            prompt_id=rendered.prompt_id,
            request_id=request_id,
            use_cache=use_cache,
            collection="eval-judge",
        )
        try:
            completion = self.chat_model.complete(request)
        except KbError as exc:
            log.warning("judge call %s failed: %s", request_id, exc.message)
            return Verdict(None, None, f"judge failed: {exc.code}")
        return parse_verdict(completion.text)
