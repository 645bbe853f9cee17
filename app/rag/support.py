"""Does the cited passage say what the sentence says? Sentence-level support for every answer.

A model's ``[n]`` markers are claims too: the wrong passage, an off-by-one number, a marker that
points nowhere. Each answer sentence is checked against each passage it cites, offline and without
a second model call:

1. The passage is cut into windows of one or two sentences; the window sharing most of the
   sentence's content words and word pairs is the candidate span.
2. Numbers, names and negation must match exactly inside that window: "27 days" is not supported by
   "25 days", "SQLite" not by a passage about PostgreSQL, "is not" not by "is". A mismatch caps the
   score far below the threshold, whatever the overlap.
3. Where word overlap alone is undecided (a paraphrase), the embedding model compares the sentence
   with the window (one batched call per answer; verbatim and unrelated sentences skip it).

The result per sentence: the markers it carries, a score in [0, 1], ``supported``, why not, and the
supporting span (quote, character offsets inside the passage text, page) of each cited passage. A
sentence that states something without a marker is unsupported; a marker that names no retrieved
passage is removed from the text. Measured in bench/support.py (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from app.rag.claims import (
    Claim,
    analyse,
    answer_sentences,
    is_claim,
    markers,
    missing_names,
    missing_numbers,
    normalize_markers,
    passage_sentences,
    strip_markers,
)
from app.settings import SupportSettings
from vectorstore.store import Hit

Policy = Literal["flag", "drop", "refuse"]
POLICIES: tuple[Policy, ...] = ("flag", "drop", "refuse")
# Multipliers for what overlap cannot see; each alone puts a perfect overlap below any sane threshold.
NUMBER_MISMATCH, NAME_MISMATCH, NEGATION_MISMATCH = 0.25, 0.45, 0.4
# Overlap outside this band decides alone; inside it the embedding model has a say.
UNDECIDED = (0.25, 0.9)
# Of a sentence or a window, for the embedding model: the time of a call grows with its longest text
# (a 700-character sentence of code took 36 ms where two short ones take 7), and the first 200
# characters say what a sentence is about; with 4 texts a worst-case answer adds 15 ms p95 (bench/support.py).
EMBEDDED_CHARS = 200


@runtime_checkable
class EmbedsTexts(Protocol):
    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...


@dataclass(frozen=True)
class CitedSpan:
    """One cited passage's best window for one sentence, and how well it supports it."""

    n: int
    chunk_id: str
    source: str
    page: int | None
    start: int  # offsets inside the passage text (the citation's ``text``)
    end: int
    quote: str
    score: float
    supports: bool
    mismatch: str | None = None  # "number", "name" or "negation" when exact parts disagree

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SentenceSupport:
    text: str
    start: int  # offsets inside the answer text as returned
    end: int
    citations: list[int]
    claim: bool  # False: nothing a source must back ("See below:")
    supported: bool
    score: float
    reason: str  # supported | no_claim | no_citation | invalid_citation | weak | number | name | negation
    spans: list[CitedSpan] = field(default_factory=list)
    suggested: CitedSpan | None = None  # no marker: a retrieved passage that would have supported it
    judge: str | None = None  # "yes"/"no": decided by the optional model judge (support_judge.py)

    @property
    def span(self) -> CitedSpan | None:
        """The best supporting span among the cited passages."""
        return max(self.spans, key=lambda s: s.score, default=None)

    def as_dict(self) -> dict[str, Any]:
        best = self.span
        data = {k: v for k, v in self.__dict__.items() if k not in ("spans", "suggested")}
        data["span"] = best.as_dict() if best is not None else None
        data["spans"] = [s.as_dict() for s in self.spans]
        data["suggested"] = self.suggested.as_dict() if self.suggested is not None else None
        return data


@dataclass
class _Window:
    start: int
    end: int
    claim: Claim
    negations: int  # in the window's sentence that shares most with the answer sentence


def _lexical(sentence: Claim, window: Claim) -> float:
    if not sentence.terms:
        return 0.0
    words = len(sentence.terms & window.terms) / len(sentence.terms)
    if not sentence.bigrams:
        return words
    return 0.8 * words + 0.2 * len(sentence.bigrams & window.bigrams) / len(sentence.bigrams)


def _windows(text: str, sentence: Claim) -> list[_Window]:
    spans = passage_sentences(text) or [(0, len(text))]
    claims = [analyse(text[s:e]) for s, e in spans]
    windows = []
    for i, (start, _) in enumerate(spans):
        for j in (i, i + 1) if i + 1 < len(spans) else (i,):
            parts = claims[i : j + 1]
            closest = max(parts, key=lambda c: len(sentence.terms & c.terms))
            windows.append(_Window(start, spans[j][1], analyse(text[start : spans[j][1]]), closest.negations))
    return windows


def _mismatch(sentence: Claim, window: _Window) -> str | None:
    if missing_numbers(sentence, window.claim):
        return "number"
    if missing_names(sentence, window.claim):
        return "name"
    if sentence.negations != window.negations:
        return "negation"
    return None


_PENALTY = {None: 1.0, "number": NUMBER_MISMATCH, "name": NAME_MISMATCH, "negation": NEGATION_MISMATCH}


def _best_window(sentence: Claim, text: str) -> tuple[_Window, float, str | None]:
    """The window with the highest overlap after exact-part penalties (ties: the shorter one)."""
    best: tuple[float, int, _Window, float, str | None] | None = None
    for window in _windows(text, sentence):
        lexical = _lexical(sentence, window.claim)
        mismatch = _mismatch(sentence, window)
        key = (lexical * _PENALTY[mismatch], -(window.end - window.start), window, lexical, mismatch)
        if best is None or key[:2] > best[:2]:
            best = key
    assert best is not None
    return best[2], best[3], best[4]


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    return dot / norm if norm else 0.0


class Verifier:
    """Checks an answer's sentences against the passages they cite (``hits``, numbered from 1)."""

    def __init__(self, embedder: EmbedsTexts | None = None, config: SupportSettings | None = None):
        self.embedder = embedder
        self.config = config or SupportSettings()  # the defaults are the settings'

    def check(self, answer: str, hits: Sequence[Hit]) -> tuple[str, list[SentenceSupport]]:
        """The answer without markers that name no retrieved passage (``[1, 2]`` written ``[1][2]``), and the
        support of each of its sentences (offsets inside that text)."""
        answer = normalize_markers(answer, 999)  # lists expanded first: their markers then end a sentence
        pieces: list[str] = []
        pending = []
        cursor = 0
        for start, end in self._sentences(answer, hits):
            pieces.append(answer[cursor:start])
            raw = answer[start:end]
            text = normalize_markers(raw, len(hits)).strip()
            invalid = text != raw.strip() and not markers(text)
            at = sum(map(len, pieces))
            pieces.append(text)
            cursor = end
            claim = analyse(text)
            cited = markers(text)
            scored = [(n, *_best_window(claim, hits[n - 1].text)) for n in cited]
            pending.append((at, at + len(text), text, claim, cited, scored, invalid))
        pieces.append(answer[cursor:])
        similarity = self._similarities(pending, hits)
        results = []
        for index, (start, end, text, claim, cited, scored, invalid) in enumerate(pending):
            spans = []
            for n, window, lexical, mismatch in scored:
                score = lexical
                if (index, n) in similarity:
                    score = 0.5 * lexical + 0.5 * similarity[(index, n)]
                spans.append(self._span(n, hits[n - 1], window, score * _PENALTY[mismatch], mismatch))
            verdict = self._verdict(text, start, end, claim, cited, spans, invalid)
            if verdict.claim and not cited:
                verdict = dataclasses.replace(verdict, suggested=self._suggest(claim, hits))
            results.append(verdict)
        return "".join(pieces), results

    @staticmethod
    def _sentences(answer: str, hits: Sequence[Hit]) -> list[tuple[int, int]]:
        """The answer's sentences; a lead-in the next sentence's cited passage holds verbatim ("Annual leave."
        before the sentence under that heading, as the extractive provider quotes it) belongs to that sentence,
        any other sentence stands alone ("Dogs are allowed." is a claim of its own)."""
        spans = answer_sentences(answer)
        merged: list[tuple[int, int]] = []
        i = 0
        while i < len(spans):
            start, end = spans[i]
            lead = answer[start:end]
            nxt = spans[i + 1] if i + 1 < len(spans) else None
            if nxt and len(lead) <= 40 and not markers(lead) and "\n" not in answer[end : nxt[0]]:
                cited = [n for n in markers(answer[nxt[0] : nxt[1]]) if 1 <= n <= len(hits)]
                if any(lead.rstrip(".!?:") in hits[n - 1].text for n in cited):
                    merged.append((start, nxt[1]))
                    i += 2
                    continue
            merged.append((start, end))
            i += 1
        return merged

    def _span(self, n: int, hit: Hit, window: _Window, score: float, mismatch: str | None) -> CitedSpan:
        page = hit.metadata.get("page")
        return CitedSpan(
            n=n, chunk_id=hit.id, source=str(hit.metadata.get("source", "")),
            page=int(page) if page is not None else None, start=window.start, end=window.end,
            quote=hit.text[window.start : window.end], score=round(score, 4),
            supports=score >= self.config.threshold, mismatch=mismatch,
        )  # fmt: skip

    def _suggest(self, claim: Claim, hits: Sequence[Hit]) -> CitedSpan | None:
        """For a sentence without a marker: the retrieved passage that would support it, by the
        offline check (word overlap and exact parts only), if one does. Shown, never cited for it."""
        best: CitedSpan | None = None
        for n, hit in enumerate(hits, start=1):
            window, lexical, mismatch = _best_window(claim, hit.text)
            span = self._span(n, hit, window, lexical * _PENALTY[mismatch], mismatch)
            if span.supports and (best is None or span.score > best.score):
                best = span
        return best

    def _verdict(
        self, text: str, start: int, end: int, claim: Claim, cited: list[int], spans: list[CitedSpan], invalid: bool
    ) -> SentenceSupport:
        best = max(spans, key=lambda s: s.score, default=None)
        score = best.score if best is not None else 0.0
        claimed = is_claim(claim, text)
        if not claimed:
            reason, supported = "no_claim", True
        elif best is None:
            reason, supported = ("invalid_citation" if invalid else "no_citation"), False
        elif best.supports:
            reason, supported = "supported", True
        else:
            reason, supported = best.mismatch or "weak", False
        return SentenceSupport(text, start, end, cited, claimed, supported, score, reason, spans)

    def _similarities(self, pending: list[Any], hits: Sequence[Hit]) -> dict[tuple[int, int], float]:
        """Embedding similarity (rescaled to [0, 1]) for the undecided (sentence, passage) pairs, one batch."""
        if self.embedder is None or not self.config.embedding:
            return {}
        pairs: list[tuple[float, int, int, str, str]] = []
        for index, (_, _, text, _, _, scored, _) in enumerate(pending):
            for n, window, lexical, mismatch in scored:
                if mismatch is None and UNDECIDED[0] <= lexical < UNDECIDED[1]:
                    quote = hits[n - 1].text[window.start : window.end][:EMBEDDED_CHARS]
                    sentence = strip_markers(text)[:EMBEDDED_CHARS]
                    pairs.append((abs(lexical - self.config.threshold), index, n, sentence, quote))
        pairs = sorted(pairs)[: self.config.max_embedded // 2]
        if not pairs:
            return {}
        texts = list(dict.fromkeys(t for *_, s, w in pairs for t in (s, w)))
        vectors = dict(zip(texts, self.embedder.embed_documents(texts), strict=True))
        # MiniLM cosines of unrelated sentences sit near 0.1, of paraphrases above 0.7.
        return {
            (index, n): min(1.0, max(0.0, (_cosine(vectors[s], vectors[w]) - 0.3) / 0.5)) for _, index, n, s, w in pairs
        }
