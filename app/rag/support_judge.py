"""An optional second opinion on sentence support, from the answering model (``KB_SUPPORT__JUDGE``).

The offline check (support.py) is exact on numbers, names and negation, and decided on verbatim or
unrelated sentences; between those it weighs word overlap and embeddings, and can be wrong about a
paraphrase. With a generative provider, the sentences whose score falls within ``band`` of the
threshold (and that no exact part already rules out) can be put to the model through the gateway in
one call with the versioned ``verify@v1`` prompt: its answer decides them. The call is ledgered like
any other (request id ``<id>.verify``, so its cost shows apart), cached like any other, and a failed
call leaves the offline verdicts as they were.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence

from app.errors import KbError
from app.llm.base import ChatModel, ChatRequest, GenerationParams, Message
from app.rag.support import SentenceSupport
from app.text import escape_fence
from prompts.registry import PromptRegistry
from vectorstore.store import Hit

log = logging.getLogger(__name__)

VERIFY_PROMPT = "verify@v1"
_LINE = re.compile(r"^\W*(\d{1,2})\s*[:.)\-]\s*(yes|no)\b", re.I | re.M)
_FENCE = re.compile(r"<\s*/?\s*(?:pair|sentence|passage)\b[^>]*>", re.I)


def parse_decisions(text: str) -> dict[int, bool]:
    """``{pair number: supported}`` from "1: yes" lines; a pair the reply does not decide is absent."""
    return {int(m.group(1)): m.group(2).lower() == "yes" for m in _LINE.finditer(text)}


class SupportJudge:
    def __init__(
        self, chat_model: ChatModel, prompts: PromptRegistry, prompt_ref: str = VERIFY_PROMPT, *,
        band: float = 0.25, max_pairs: int = 8,
    ):  # fmt: skip
        self.chat_model = chat_model
        self.prompt = prompts.get(prompt_ref)
        self.band = band
        self.max_pairs = max_pairs

    def refine(
        self, sentences: list[SentenceSupport], hits: Sequence[Hit], *, threshold: float, context: ChatRequest | None
    ) -> tuple[list[SentenceSupport], int]:
        """The sentences with the model's verdict on the undecided ones, and how many it decided."""
        undecided = [
            i for i, s in enumerate(sentences)
            if s.claim and s.span is not None and s.span.mismatch is None and abs(s.score - threshold) < self.band
        ][: self.max_pairs]  # fmt: skip
        if not undecided:
            return sentences, 0
        pairs = []
        for k, i in enumerate(undecided, start=1):
            span = sentences[i].span
            assert span is not None
            passage = escape_fence(hits[span.n - 1].text, _FENCE)
            sentence = escape_fence(sentences[i].text, _FENCE)
            pairs.append(f'<pair n="{k}">\n<sentence>{sentence}</sentence>\n<passage>{passage}</passage>\n</pair>')
        rendered = self.prompt.render(pairs="\n\n".join(pairs))
        hints = self.prompt.model_hints
        request = ChatRequest(
            messages=(Message("system", rendered.system), Message("user", rendered.user)),
            params=GenerationParams(float(hints.get("temperature", 0.0)), int(hints.get("max_tokens", 120))),
            prompt_id=rendered.prompt_id,
            request_id=f"{context.request_id}.verify" if context else "",
            use_cache=context.use_cache if context else True,
            collection=context.collection if context else None,
            key=context.key if context else None,
            scope=context.scope if context else (),
        )
        try:
            decisions = parse_decisions(self.chat_model.complete(request).text)
        except KbError as exc:
            log.warning("request %s: support judge failed (%s); keeping the offline verdicts", request.request_id,
                        exc.code)  # fmt: skip
            return sentences, 0
        out = list(sentences)
        for k, i in enumerate(undecided, start=1):
            if k not in decisions:
                continue
            yes = decisions[k]
            s = out[i]
            score = max(s.score, threshold) if yes else min(s.score, round(threshold - 0.01, 4))
            best = s.span
            spans = [dataclasses.replace(x, supports=yes, score=score) if x is best else x for x in s.spans]
            out[i] = dataclasses.replace(
                s,
                supported=yes,
                score=score,
                reason="supported" if yes else "weak",
                judge="yes" if yes else "no",
                spans=spans,
            )
        return out, sum(1 for k in range(1, len(undecided) + 1) if k in decisions)
