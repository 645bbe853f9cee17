"""Eval building blocks on hand-computed values: metrics, suite schema, gates, comparisons, judge replies."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from evals import metrics as m
from evals.beir import beir_source
from evals.compare import compare_variants
from evals.gate import Gate, check_gate, load_gate
from evals.judge import parse_verdict
from evals.runner import plan_variants
from evals.scoring import Grounding, aggregate, support_scores
from evals.suite import EvalError, Suite, load_suite
from evals.workspace import parse_sets, with_overrides

R = m.Ranked
E = m.Expected


def test_retrieval_metrics_by_hand() -> None:
    ranked = [R("a.pdf", 1), R("b.md"), R("a.pdf", 2), R("a.pdf", 2), R("c.txt")]
    expected = [E("a.pdf", 2), E("c.txt")]
    # a.pdf p.2 first at rank 3, c.txt at rank 5
    assert m.first_ranks(ranked, expected) == [3, 5]
    assert m.hit_at_k(ranked, expected, 2) == 0.0
    assert m.hit_at_k(ranked, expected, 3) == 1.0
    assert m.recall_at_k(ranked, expected, 3) == 0.5
    assert m.recall_at_k(ranked, expected, 5) == 1.0
    assert m.mrr(ranked, expected) == pytest.approx(1 / 3)
    dcg = 1 / math.log2(4) + 1 / math.log2(6)
    ideal = 1 / math.log2(2) + 1 / math.log2(3)
    assert m.ndcg_at_k(ranked, expected, 10) == pytest.approx(dcg / ideal)
    assert m.ndcg_at_k(ranked, expected, 4) == pytest.approx((1 / math.log2(4)) / ideal)


def test_expected_source_without_page_matches_any_page() -> None:
    ranked = [R("b.md"), R("a.pdf", 4)]
    assert m.mrr(ranked, [E("a.pdf")]) == 0.5
    assert m.ndcg_at_k(ranked, [E("a.pdf")]) == pytest.approx(1 / math.log2(3))
    assert m.mrr(ranked, [E("z.pdf")]) == 0.0 and m.recall_at_k([], [E("a")], 5) == 0.0


def test_answer_metrics_by_hand() -> None:
    answer = "Full-time staff get 27 days [1]. Carry-over ends on 31\u00a0March [2]."
    facts = [["27 days"], ["31 March"], ["5 days", "five days"]]
    assert m.fact_coverage(answer, facts) == pytest.approx(2 / 3)
    assert m.missing_facts(answer, facts) == ["5 days"]
    # pred: full time staff get 27 days carry over ends on 31 march (11 tokens after punctuation split)
    # gold: staff get 27 days of leave (6 tokens); common: staff get 27 days = 4
    f1 = m.token_f1(answer, "Staff get 27 days of leave.")
    pred, gold = len(m.answer_tokens(answer)), 6
    assert pred == 12
    assert f1 == pytest.approx(2 * (4 / pred) * (4 / gold) / (4 / pred + 4 / gold))
    assert m.token_f1("The answer.", "answer") == 1.0
    assert m.citation_validity("x [1] y [3] z [1]", passages=2) == pytest.approx(2 / 3)
    assert m.citation_validity("no markers", passages=2) is None
    assert m.citation_precision(["has 27 days here", "other text"], ["27 days"]) == 0.5
    assert m.citation_precision([], ["27 days"]) is None
    assert m.groundedness([0.9, 0.5, 0.61], threshold=0.6) == pytest.approx(2 / 3)


def test_support_metrics_by_hand() -> None:
    """ALCE-style: recall over claims (dropped ones too), precision over (sentence, citation) pairs."""
    from app.rag.support import CitedSpan, SentenceSupport

    def span(n: int, supports: bool) -> CitedSpan:
        return CitedSpan(n, f"c{n}", "s.md", None, 0, 1, "x", 0.9 if supports else 0.1, supports)

    sentences = [
        SentenceSupport("Leave is 27 days [1][2].", 0, 1, [1, 2], True, True, 0.9, "supported",
                        [span(1, True), span(2, False)]),  # [2] adds nothing: irrelevant
        SentenceSupport("It is 30 days [3].", 0, 1, [3], True, False, 0.1, "number", [span(3, False)]),
        SentenceSupport("Here is more:", 0, 1, [], False, True, 0.0, "no_claim"),
        SentenceSupport("Claims are paid monthly.", 0, 1, [], True, False, 0.0, "no_citation"),
    ]  # fmt: skip
    scores = support_scores(sentences, {"dropped": 1})
    assert scores["support_recall"] == pytest.approx(1 / 4)  # 1 backed of 3 claims + 1 dropped
    assert scores["support_precision"] == pytest.approx(1 / 3)  # 1 of 3 citations backs its sentence
    assert scores["supported_share"] == pytest.approx(2 / 4)  # what the reader sees: the lead-in counts
    assert scores["number_mismatch_rate"] == pytest.approx(1 / 2)  # of the two claims with a number
    assert support_scores([], {}) == dict.fromkeys(scores)


def test_percentile_and_mean() -> None:
    assert m.percentile([10, 20, 30, 40], 50) == 25
    assert m.percentile([10, 20, 30, 40], 95) == pytest.approx(38.5)
    assert m.percentile([], 50) is None
    assert m.mean([1.0, None, 0.0]) == 0.5 and m.mean([None]) is None


class FakeEmbedder:
    """Orthogonal unit vectors per known word: cosine is 1 for the same word, 0 otherwise."""

    WORDS = ("leave", "laptop", "lunch")

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [[float(w in t.lower()) for w in self.WORDS] for t in texts]


def test_groundedness_uses_the_best_passage_sentence() -> None:
    g = Grounding(FakeEmbedder())
    sims = g.best_similarities("Annual leave is long [1]. Lunch is free on Fridays [2].", ["You get leave. Ask IT."])
    assert sims == [1.0, 0.0]


def _case(cid: str, passed: bool, **over: Any) -> dict[str, Any]:
    base = {"id": cid, "question": f"q {cid}", "unanswerable": False, "refused": False, "passed": passed,
            "failures": [] if passed else ["refused"], "metrics": {"fact_coverage": 1.0 if passed else 0.0},
            "cost_usd": 0.01, "latency_ms": 10.0}  # fmt: skip
    return {**base, **over}


def test_aggregate_counts_each_metric_over_its_own_cases() -> None:
    cases = [
        _case("a", True),
        _case("b", False, refused=True, latency_ms=30.0),
        _case("c", True, unanswerable=True, refused=True, metrics={}),
        _case("d", False, unanswerable=True, metrics={}, cost_usd=None),
    ]
    out = aggregate(cases)
    assert out["fact_coverage"] == 0.5  # a and b only
    assert out["false_refusal_rate"] == 0.5 and out["refusal_accuracy"] == 0.5
    assert out["pass_rate"] == 0.5
    assert out["cost_total_usd"] is None  # one case's cost is unknown: no made-up total
    assert out["latency_p50_ms"] == 10.0 and out["token_f1"] is None


def test_gate_names_each_failing_metric() -> None:
    results = {"variants": [{"name": "v1", "metrics": {"fact_coverage": 0.7, "false_refusal_rate": 0.05}},
                            {"name": "v2", "metrics": {"fact_coverage": 0.9, "false_refusal_rate": 0.2}}]}  # fmt: skip
    gate = Gate.model_validate({"metrics": {"fact_coverage": {"min": 0.8}, "false_refusal_rate": {"max": 0.1}},
                                "variants": {"v2": {"judge_relevance": {"min": 0.5}}}})  # fmt: skip
    failures = [str(f) for f in check_gate(gate, results)]
    assert failures == [
        "v1: fact_coverage = 0.700, required >= 0.8",
        "v2: false_refusal_rate = 0.200, required <= 0.1",
        "v2: judge_relevance = not measured, required >= 0.5",
    ]
    with pytest.raises(ValueError, match="unknown metrics"):
        Gate.model_validate({"metrics": {"fact_covrage": {"min": 1}}})
    assert load_gate("ci").metrics  # the shipped CI gate loads by name


def test_compare_reports_deltas_and_flips() -> None:
    a = {"name": "v1", "metrics": {"pass_rate": 0.5, "latency_p50_ms": 100.0},
         "cases": [_case("x", True), _case("y", False), _case("gone", True)]}  # fmt: skip
    b = {"name": "v2", "metrics": {"pass_rate": 0.5, "latency_p50_ms": 150.0},
         "cases": [_case("x", False), _case("y", True), _case("new", True)]}  # fmt: skip
    cmp = compare_variants(a, b)
    deltas = {d.metric: d for d in cmp.deltas}
    assert deltas["pass_rate"].verdict == "same" and deltas["latency_p50_ms"].verdict == "worse"
    assert [c["id"] for c in cmp.regressions] == ["x"] and [c["id"] for c in cmp.fixes] == ["y"]
    assert cmp.only_before == ["gone"] and cmp.only_after == ["new"]


def test_suite_schema_is_strict(tmp_path: Path) -> None:
    base = {"name": "s", "cases": [{"id": "a", "question": "q?", "facts": ["x"]}]}
    Suite.model_validate(base)
    for bad in (
        {**base, "colection": "typo"},
        {"name": "s", "cases": [{"id": "a", "question": "q?", "facts": ["x"], "fact": ["y"]}]},
        {"name": "s", "cases": [{"id": "a", "question": "q?", "unanswerable": True, "facts": ["x"]}]},
        {"name": "s", "cases": [{"id": "a", "question": "q?"}]},  # nothing to check
        {"name": "s", "cases": [{"id": "a", "question": "q?", "facts": ["x"]}] * 2},
    ):
        with pytest.raises(ValueError):
            Suite.model_validate(bad)
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ncases:\n  - {id: a, question: q, facts: [x], sorces: [a.md]}\n")
    with pytest.raises(EvalError, match="sorces"):
        load_suite(path)


def test_shipped_handbook_suite_meets_the_issue() -> None:
    suite = load_suite("handbook")
    assert len(suite.cases) >= 30
    assert sum(c.unanswerable for c in suite.cases) >= 5
    assert sum(bool(c.turns) for c in suite.cases) >= 5
    assert suite.documents_path() == (Path(__file__).parents[2] / "examples" / "handbook").resolve()


def test_missing_dataset_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KB_EVAL_DATASETS", str(tmp_path / "nowhere"))
    suite = load_suite("r-manuals")
    with pytest.raises(EvalError, match="r-manuals") as err:
        suite.documents_path()
    assert err.value.code == "eval_documents_missing" and "KB_EVAL_DATASETS" in err.value.message


def test_variants_overrides_and_names() -> None:
    suite = load_suite("handbook")
    assert [v.name for v in plan_variants(suite, only=["default", "dense"])] == ["default", "dense"]
    specs = plan_variants(suite, ["answer@v1", "answer@v2"], ["extractive"], {"retrieval.top_k": 3})
    assert [s.name for s in specs] == ["answer@v1 extractive", "answer@v2 extractive"]
    assert specs[0].set == {"retrieval.top_k": 3}
    with pytest.raises(EvalError):
        plan_variants(suite, only=["nope"])
    assert parse_sets(["retrieval.top_k=3", "retrieval.mode=dense"]) == {
        "retrieval.top_k": 3,
        "retrieval.mode": "dense",
    }
    from app.settings import Settings

    settings = with_overrides(Settings(_env_file=None), {"retrieval.top_k": 3})  # type: ignore[call-arg]
    assert settings.retrieval.top_k == 3
    with pytest.raises(EvalError, match="unknown setting"):
        with_overrides(settings, {"retrieval.topk": 3})
    assert beir_source("R-FAQ.html#What-is-R_003f") == "R-FAQ/What-is-R_003f.md"


def test_judge_replies_are_parsed_or_not_measured() -> None:
    v = parse_verdict('Sure! {"faithfulness": 5, "relevance": 3, "reason": "ok"}')
    assert (v.faithfulness, v.relevance) == (1.0, 0.5)
    assert parse_verdict("I think it is fine").faithfulness is None
    assert parse_verdict('{"faithfulness": "high"}').faithfulness is None


def test_a_case_fails_for_each_reason_it_gives() -> None:
    from evals.scoring import score_case
    from evals.suite import Case

    case = Case(id="c", question="q?", facts=["27 days"], sources=[{"source": "a.pdf", "page": 2}])  # type: ignore[list-item]
    ranked = [R("b.md", None, "b1", "x"), R("a.pdf", 2, "a2", "You get 27 days.")]
    right = [R("a.pdf", 2, "a2", "You get 27 days.")]
    kw: dict[str, Any] = {"k": 5, "threshold": 0.6}
    scores, failures = score_case(case, "You get 27 days [2].", False, ranked, 2, right, [0.9], **kw)
    assert failures == [] and scores["mrr"] == 0.5 and scores["citation_precision"] == 1.0
    _, failures = score_case(case, "You get 20 days [1] [7].", False, ranked, 2, [ranked[0]], [0.9, 0.2], **kw)
    assert failures == ["missing fact '27 days'", "citation [7] points at no retrieved passage",
                        "cites none of the expected sources"]  # fmt: skip
    _, failures = score_case(case, "I don't know", True, ranked, 0, [], None, **kw)
    assert failures == ["refused"]
    sources_only = Case(id="s", question="q?", sources=[{"source": "a.pdf"}])  # type: ignore[list-item]
    scores, _ = score_case(sources_only, "x [1] y [2]", False, ranked, 2, ranked, [0.9], **kw)
    assert scores["citation_precision"] == 0.5  # one of two citations is of an expected source
