"""From one answer to a case's metrics, and from cases to a variant's metrics.

Which cases a metric averages over: retrieval metrics over answerable cases with expected
sources; fact coverage, token F1 and false refusals over answerable cases; refusal accuracy
over unanswerable ones; citation and groundedness metrics over the answers that cite. A
metric with no case to average is ``None`` ("not measured"), never a made-up 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from app.rag.claims import analyse
from app.rag.support import SentenceSupport
from app.text import split_sentences
from evals import metrics as m
from evals.suite import Case


@dataclass(frozen=True)
class MetricDef:
    key: str
    label: str
    higher_is_better: bool = True
    unit: str = ""  # "" for a share in [0, 1], "ms", "$"


METRICS: tuple[MetricDef, ...] = (
    MetricDef("pass_rate", "cases passed"),
    MetricDef("hit_at_k", "hit@k"),
    MetricDef("recall_at_k", "recall@k"),
    MetricDef("mrr", "MRR@10"),
    MetricDef("ndcg_at_10", "nDCG@10"),
    MetricDef("fact_coverage", "fact coverage"),
    MetricDef("token_f1", "token F1"),
    MetricDef("citation_validity", "citation validity"),
    MetricDef("citation_precision", "citation precision"),
    MetricDef("groundedness", "groundedness"),
    MetricDef("support_recall", "citation recall (sentences backed by their citations)"),
    MetricDef("support_precision", "citation precision (citations that back their sentence)"),
    MetricDef("supported_share", "sentences shown as supported"),
    MetricDef("number_mismatch_rate", "number mismatches", higher_is_better=False),
    MetricDef("refusal_accuracy", "refusal accuracy"),
    MetricDef("false_refusal_rate", "false refusal rate", higher_is_better=False),
    MetricDef("judge_faithfulness", "judge: faithfulness"),
    MetricDef("judge_relevance", "judge: relevance"),
    MetricDef("cost_total_usd", "cost, total", higher_is_better=False, unit="$"),
    MetricDef("cost_per_case_usd", "cost per case", higher_is_better=False, unit="$"),
    MetricDef("latency_p50_ms", "latency p50", higher_is_better=False, unit="ms"),
    MetricDef("latency_p95_ms", "latency p95", higher_is_better=False, unit="ms"),
)
METRIC_KEYS = {d.key: d for d in METRICS}
QUALITY = [d.key for d in METRICS if not d.unit]
# Per-case metrics averaged into the variant's metric of the same name.
_AVERAGED = ("hit_at_k", "recall_at_k", "mrr", "ndcg_at_10", "fact_coverage", "token_f1", "citation_validity",
             "citation_precision", "groundedness", "support_recall", "support_precision", "supported_share",
             "number_mismatch_rate", "judge_faithfulness", "judge_relevance")  # fmt: skip


class EmbedsDocuments(Protocol):
    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...


class Grounding:
    """Best cosine similarity of each answer sentence to a sentence of the retrieved passages.

    Sentence against sentence, not against whole passages: on the handbook, supported answer
    sentences (verbatim or paraphrased) score 0.62-0.99 against their source sentence and
    made-up ones on the same topic 0.26-0.58, while against whole passages the two ranges
    overlap (0.33-0.73 vs 0.25-0.53). Similarity catches unsupported claims, not a wrong
    number in a supported sentence: fact coverage and the judge are for that.
    """

    def __init__(self, embedder: EmbedsDocuments):
        self.embedder = embedder
        self._vectors: dict[str, np.ndarray] = {}

    def _embed(self, texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if new:
            for text, vec in zip(new, self.embedder.embed_documents(new), strict=True):
                arr = np.asarray(vec, dtype=np.float32)
                self._vectors[text] = arr / (np.linalg.norm(arr) or 1.0)
        return np.stack([self._vectors[t] for t in texts])

    def best_similarities(self, answer: str, passages: Sequence[str]) -> list[float]:
        sentences = split_sentences(m.strip_markers(answer)) or [m.strip_markers(answer).strip()]
        sentences = [s for s in sentences if s]
        units = [s for p in passages for s in (split_sentences(p) or [p.strip()]) if s]
        if not sentences or not units:
            return [0.0] * len(sentences)
        sims = self._embed(sentences) @ self._embed(units).T
        return [round(float(x), 4) for x in sims.max(axis=1)]


def support_scores(sentences: Sequence[SentenceSupport], support: dict[str, Any]) -> dict[str, float | None]:
    """ALCE-style citation recall and precision with the support check as the judge, per answer.

    Recall: the answer's claims (those the policy dropped or withheld included) that their citations back.
    Precision: the citations that back their sentence on their own; one that adds nothing to a
    sentence another citation backs does not count (ALCE's "irrelevant" citation), nor does any
    citation of a sentence nothing backs. Number mismatches: sentences whose cited passages have
    other numbers, among the claims with a number. None where there is nothing to count.
    """
    claims = [s for s in sentences if s.claim]
    dropped = int(support.get("dropped") or 0)
    # From the summary where there is one: a refused answer's withheld sentences count too.
    claimed = int(support.get("claims", len(claims)))
    unsupported = int(support.get("unsupported", sum(not s.supported for s in claims)))
    pairs = [span for s in claims for span in s.spans]
    with_numbers = [s for s in claims if analyse(s.text).numbers]
    return {
        "support_recall": (claimed - unsupported) / (claimed + dropped) if claimed or dropped else None,
        "support_precision": sum(span.supports for span in pairs) / len(pairs) if pairs else None,
        "supported_share": sum(s.supported for s in sentences) / len(sentences) if sentences else None,
        "number_mismatch_rate": (
            sum(s.reason == "number" for s in with_numbers) / len(with_numbers) if with_numbers else None
        ),
    }


def score_case(
    case: Case,
    answer: str,
    refused: bool,
    ranked: Sequence[m.Ranked],
    passages: int,
    cited: Sequence[m.Ranked],
    similarities: Sequence[float] | None,
    *,
    k: int,
    threshold: float,
) -> tuple[dict[str, float | None], list[str]]:
    """The case's metrics and, if it failed, why (an empty list means it passed).

    An answerable case passes when it is answered, holds every expected fact, every marker
    points at a passage the model was given, and it cites at least one expected source.
    """
    expected = [m.Expected(s.source, s.page) for s in case.sources]
    scores: dict[str, float | None] = dict.fromkeys(_AVERAGED)
    failures: list[str] = []
    if case.unanswerable:
        if not refused:
            failures.append("answered a question the documents don't cover")
        return scores, failures
    if expected:
        scores.update(
            hit_at_k=m.hit_at_k(ranked, expected, k), recall_at_k=m.recall_at_k(ranked, expected, k),
            mrr=m.mrr(ranked, expected, 10), ndcg_at_10=m.ndcg_at_k(ranked, expected, 10),
        )  # fmt: skip
    facts = case.fact_alternatives()
    if facts:
        scores["fact_coverage"] = m.fact_coverage(answer, facts)
    if case.reference:
        scores["token_f1"] = m.token_f1(answer, case.reference)
    if refused:
        failures.append("refused")
        return scores, failures
    scores["citation_validity"] = m.citation_validity(answer, passages)
    supporting = case.supporting_texts()
    if supporting:
        scores["citation_precision"] = m.citation_precision([c.text for c in cited], supporting)
    elif expected and cited:  # only sources given: a precise citation is one of an expected source
        scores["citation_precision"] = sum(any(m.matches(c, e) for e in expected) for c in cited) / len(cited)
    if similarities is not None:
        scores["groundedness"] = m.groundedness(similarities, threshold)
    failures += [f"missing fact {f!r}" for f in m.missing_facts(answer, facts)]
    invalid = sorted({n for n in m.markers(answer) if not 1 <= n <= passages})
    failures += [f"citation [{n}] points at no retrieved passage" for n in invalid]
    if expected and cited and not any(m.matches(c, e) for c in cited for e in expected):
        failures.append("cites none of the expected sources")
    return scores, failures


def aggregate(cases: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """A variant's metrics from its case results (see the module doc for who counts where)."""
    out: dict[str, float | None] = {d.key: None for d in METRICS}
    if not cases:
        return out
    for key in _AVERAGED:
        out[key] = m.mean(c["metrics"].get(key) for c in cases)
    answerable = [c for c in cases if not c["unanswerable"]]
    unanswerable = [c for c in cases if c["unanswerable"]]
    if answerable:
        out["false_refusal_rate"] = sum(c["refused"] for c in answerable) / len(answerable)
    if unanswerable:
        out["refusal_accuracy"] = sum(c["refused"] for c in unanswerable) / len(unanswerable)
    out["pass_rate"] = sum(c["passed"] for c in cases) / len(cases)
    costs = [c["cost_usd"] for c in cases]
    if all(c is not None for c in costs):
        out["cost_total_usd"] = float(sum(costs))
        out["cost_per_case_usd"] = float(sum(costs)) / len(cases)
    latencies = [c["latency_ms"] for c in cases if c["latency_ms"] is not None]
    out["latency_p50_ms"] = m.percentile(latencies, 50)
    out["latency_p95_ms"] = m.percentile(latencies, 95)
    return out


def format_value(key: str, value: float | None) -> str:
    if value is None:
        return "—"
    unit = METRIC_KEYS[key].unit if key in METRIC_KEYS else ""
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "$":
        return f"${value:.4f}" if value < 1 else f"${value:.2f}"
    return f"{value:.3f}"
