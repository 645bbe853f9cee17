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

from app.llm.base import ChatRequest, Completion, SourcePassage, StreamEvent, Usage
from app.llm.tokens import count_tokens

REFUSAL = "I don't know: the documents I can search don't cover this."

_STOPWORDS = frozenset(
    (
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "should",
        "so",
        "that",
        "the",
        "their",
        "them",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "am",
        "any",
        "get",
        "got",
        "much",
        "many",
        "per",
        "than",
        "then",
        "into",
        "about",
        "after",
        "before",
        "also",
        "must",
        "need",
        "needs",
        "may",
        "might",
        "could",
        "would",
        "shall",
        "not",
        "no",
        "yes",
        "tell",
        "know",
    )
)
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(*])")
_LIST_ITEM = re.compile(r"^\s*([-*+•]|\d+[.)])\s+")


def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def terms(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


def _looks_like_heading(line: str) -> bool:
    return len(line) <= 60 and not line.endswith((".", "!", "?", ")", ",", ";"))


def _unwrap(text: str) -> list[str]:
    """Re-join lines that a PDF or a text editor wrapped mid-sentence; keep list items apart."""
    blocks: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            blocks.append("")
            continue
        prev = blocks[-1] if blocks else ""
        wrapped = prev and not prev.endswith((".", "!", "?", ":")) and not _looks_like_heading(prev)
        if wrapped and not _LIST_ITEM.match(line):
            blocks[-1] += " " + line
        else:
            blocks.append(line)
    return [b for b in blocks if b]


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage; a short lead-in ("Phishing.") is kept with the sentence it labels."""
    sentences = []
    for block in _unwrap(text):
        block = _LIST_ITEM.sub("", block).replace("**", "")
        lead = ""
        for sentence in _SENTENCE_END.split(block):
            sentence = f"{lead} {sentence.strip()}".strip()
            lead = ""
            if len(sentence) <= 20:
                lead = sentence
            elif not _looks_like_heading(sentence):
                sentences.append(sentence)
    return sentences


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
        df = Counter(t for _, _, s in candidates for t in set(terms(s)))
        idf = {t: math.log(1 + len(candidates) / (1 + df[t])) for t in q_terms}
        total = sum(idf.values())
        scored = []
        for n, rank, sentence in candidates:
            covered = q_terms & set(terms(sentence))
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
