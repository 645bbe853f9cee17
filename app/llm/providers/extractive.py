"""The offline default provider: answer with the retrieved sentences themselves.

No model, no network, deterministic. It scores every sentence of the numbered
sources by how much of the question's (IDF-weighted) vocabulary it covers, keeps
the best few above a floor, and cites each with its source number. When no
sentence covers enough of the question it says plainly that the documents don't
cover it, which is the honest answer a generative model should also give.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator

from app.llm.base import REFUSAL, ChatRequest, Completion, SourcePassage, StreamEvent, Usage
from app.text import split_sentences, terms
from app.tokens import count_tokens


class ExtractiveChatModel:
    """Implements ChatModel; ``min_coverage`` is the share of question weight a sentence must cover."""

    def __init__(self, *, max_sentences: int = 3, min_coverage: float = 0.3):
        self.max_sentences = max_sentences
        self.min_coverage = min_coverage

    @property
    def provider(self) -> str:
        return "extractive"

    @property
    def model(self) -> str:
        # Versioned so a change of the algorithm never serves answers cached from the old one.
        return "extractive-1"

    def answer_text(self, question: str, documents: tuple[SourcePassage, ...]) -> str:
        candidates = [(doc.n, rank, s) for rank, doc in enumerate(documents) for s in split_sentences(doc.text)]
        q_terms = set(terms(question))
        if not candidates or not q_terms:
            return REFUSAL
        sentence_terms = [set(terms(s)) for _, _, s in candidates]  # each sentence analysed once
        df = Counter(t for ts in sentence_terms for t in ts)
        idf = {t: math.log(1 + len(candidates) / (1 + df[t])) for t in q_terms}
        total = sum(idf.values())
        scored = []
        for (n, rank, sentence), sentence_vocabulary in zip(candidates, sentence_terms, strict=True):
            covered = q_terms & sentence_vocabulary
            coverage = sum(idf[t] for t in covered) / total
            scored.append((coverage - 0.01 * rank, coverage, n, sentence))
        scored.sort(key=lambda item: -item[0])
        # Keep only sentences nearly as good as the best one: partial matches add noise, not facts.
        floor = max(self.min_coverage, 0.7 * max(item[1] for item in scored))
        chosen: list[tuple[int, str]] = []
        for _, coverage, n, sentence in scored:
            if coverage < floor or len(chosen) >= self.max_sentences:
                break
            if all(sentence != s for _, s in chosen):
                chosen.append((n, sentence))
        if not chosen:
            return REFUSAL
        return " ".join(f"{sentence.rstrip()} [{n}]" for n, sentence in chosen)

    def complete(self, request: ChatRequest) -> Completion:
        question = request.query or next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        text = self.answer_text(question, request.documents)
        prompt_tokens = sum(count_tokens(m.content) for m in request.messages)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=count_tokens(text))
        return Completion(text=text, usage=usage, provider=self.provider, model=self.model)

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        completion = self.complete(request)
        for word in re.findall(r"\S+\s*", completion.text):
            yield StreamEvent(delta=word)
        yield StreamEvent(completion=completion)
