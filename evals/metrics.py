"""Metric functions: pure, small, each testable with hand-computed values.

Retrieval metrics take the ranked list of retrieved chunks (their source and page) and the
expected sources of a case. Each expected source counts once, at the rank of the first chunk
that matches it (an expected source without a page matches any page of that document), so
five chunks of one right page are one hit, not five.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_MARKER = re.compile(r"\s*\[(\d{1,3})\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class Ranked:
    """One retrieved chunk, in rank order."""

    source: str
    page: int | None = None
    chunk_id: str = ""
    text: str = ""


@dataclass(frozen=True)
class Expected:
    source: str
    page: int | None = None


def matches(chunk: Ranked, expected: Expected) -> bool:
    return chunk.source == expected.source and (expected.page is None or chunk.page == expected.page)


def first_ranks(ranked: Sequence[Ranked], expected: Sequence[Expected]) -> list[int | None]:
    """For each expected source, the 1-based rank of the first chunk matching it (None: not retrieved)."""
    return [next((i for i, c in enumerate(ranked, start=1) if matches(c, e)), None) for e in expected]


def hit_at_k(ranked: Sequence[Ranked], expected: Sequence[Expected], k: int) -> float:
    return float(any(r is not None and r <= k for r in first_ranks(ranked, expected)))


def recall_at_k(ranked: Sequence[Ranked], expected: Sequence[Expected], k: int) -> float:
    ranks = first_ranks(ranked, expected)
    return sum(r is not None and r <= k for r in ranks) / len(ranks) if ranks else 0.0


def mrr(ranked: Sequence[Ranked], expected: Sequence[Expected], k: int = 10) -> float:
    found = [r for r in first_ranks(ranked, expected) if r is not None and r <= k]
    return 1.0 / min(found) if found else 0.0


def ndcg_at_k(ranked: Sequence[Ranked], expected: Sequence[Expected], k: int = 10) -> float:
    """Binary relevance; each expected source gains 1/log2(rank+1) at its first rank."""
    if not expected:
        return 0.0
    dcg = sum(1.0 / math.log2(r + 1) for r in first_ranks(ranked, expected) if r is not None and r <= k)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(expected), k) + 1))
    return dcg / ideal


def strip_markers(text: str) -> str:
    return _MARKER.sub("", text)


def markers(text: str) -> list[int]:
    """Every citation marker in order, repeats included."""
    return [int(m) for m in _MARKER.findall(text)]


def normalize(text: str) -> str:
    """Case, Unicode quotes/dashes and whitespace folded, for substring checks."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = re.sub(r"[\u2010-\u2015]", "-", text)
    return " ".join(text.split())


def contains(text: str, needle: str) -> bool:
    return normalize(needle) in normalize(text)


def fact_coverage(answer: str, facts: Sequence[Sequence[str]]) -> float:
    """Share of facts present in the answer; a fact is a list of accepted alternatives."""
    if not facts:
        return 0.0
    plain = strip_markers(answer)
    return sum(any(contains(plain, alt) for alt in alts) for alts in facts) / len(facts)


def missing_facts(answer: str, facts: Sequence[Sequence[str]]) -> list[str]:
    plain = strip_markers(answer)
    return [alts[0] for alts in facts if not any(contains(plain, alt) for alt in alts)]


def answer_tokens(text: str) -> list[str]:
    """SQuAD-style normalization: lower case, no punctuation, no articles, no markers."""
    text = normalize(strip_markers(text))
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    return _ARTICLES.sub(" ", text).split()


def token_f1(answer: str, reference: str) -> float:
    pred, gold = answer_tokens(answer), answer_tokens(reference)
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def citation_validity(answer: str, passages: int) -> float | None:
    """Share of markers that point at a passage the model was given ([1]..[passages]); None: no markers."""
    found = markers(answer)
    if not found:
        return None
    return sum(1 <= n <= passages for n in found) / len(found)


def citation_precision(cited_texts: Sequence[str], supporting: Sequence[str]) -> float | None:
    """Share of cited chunks that contain any of the supporting texts; None: nothing cited or nothing to look for."""
    if not cited_texts or not supporting:
        return None
    return sum(any(contains(t, s) for s in supporting) for t in cited_texts) / len(cited_texts)


def groundedness(best_similarities: Sequence[float], threshold: float) -> float | None:
    """Share of answer sentences whose best similarity to the retrieved text reaches ``threshold``."""
    if not best_similarities:
        return None
    return sum(s >= threshold for s in best_similarities) / len(best_similarities)


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), as numpy's default; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
