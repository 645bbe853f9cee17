"""RagService, as a specification: what it decides before the model is called (``plan``), what it never
does, and in which order its choices are made. On the ingested sample handbook, with the real stores,
the real embedding model and the offline provider."""

from __future__ import annotations

import pytest

from app.bootstrap import Components
from app.errors import InvalidRequestError
from app.llm.base import REFUSAL
from app.rag.citations import passage_label
from app.rag.conversation import Turn
from app.rag.options import AskOptions, SearchOptions
from app.settings import PromptSettings
from app.tokens import count_tokens

QUESTION = "How many days of annual leave do I get?"


def test_plan_does_everything_before_the_model_call_and_calls_no_model(handbook_components: Components) -> None:
    rag = handbook_components.rag
    plan = rag.plan(QUESTION, "handbook", AskOptions(request_id="plan-only", use_cache=False))
    assert plan.request is not None and plan.hits and plan.prompt_id == "answer@v2"
    assert plan.request.request_id == "plan-only" and plan.request.prompt_id == "answer@v2"
    assert plan.request.documents[0].text == plan.hits[0].text  # passage [1] is the best hit
    assert "[1]" in plan.request.messages[1].content  # the passages are numbered in the prompt
    assert [r for r in handbook_components.ledger.rows() if r["request_id"] == "plan-only"] == []


def test_passages_fill_the_token_budget_in_rank_order_and_stop_at_the_first_that_does_not_fit(
    handbook_components: Components, embedder
) -> None:  # type: ignore[no-untyped-def]
    found = handbook_components.rag.search(QUESTION, ["handbook"], SearchOptions(top_k=5))
    costs = [count_tokens(passage_label(i, h.as_hit())) for i, h in enumerate(found, start=1)]
    budget = costs[0] + costs[1] + 1  # room for the first two passages and not the third
    settings = handbook_components.settings.model_copy(update={"prompts": PromptSettings(context_token_budget=budget)})
    budgeted = Components(settings, embedder=embedder)
    try:
        plan = budgeted.rag.plan(QUESTION, "handbook", AskOptions(use_cache=False))
    finally:
        budgeted.close()
    assert len(found) == 5 and [h.id for h in plan.hits] == [h.id for h in found[:2]]


def test_below_the_relevance_floor_the_answer_is_the_refusal_and_no_model_is_called(
    handbook_components: Components,
) -> None:
    rag = handbook_components.rag
    answer = rag.answer("Who won the football world cup in 1998?", "handbook", AskOptions(request_id="floor"))
    plan = rag.plan("Who won the football world cup in 1998?", "handbook", AskOptions(use_cache=False))
    assert plan.request is None and plan.best_evidence < rag.config.min_evidence
    assert answer.answer == REFUSAL and answer.grounded is False and answer.citations == []
    assert [r for r in handbook_components.ledger.rows() if r["request_id"] == "floor"] == []


def test_the_prompt_a_request_names_wins_over_the_default(handbook_components: Components) -> None:
    rag = handbook_components.rag
    assert rag.answer(QUESTION, "handbook", AskOptions(prompt="answer@v1")).prompt == "answer@v1"
    assert rag.answer(QUESTION, "handbook").prompt == "answer@v2"


def test_a_follow_up_is_never_answered_from_the_answer_cache(handbook_components: Components) -> None:
    rag = handbook_components.rag
    rag.answer(QUESTION, "handbook")
    assert rag.cached_answer(QUESTION, ["handbook"]) is not None  # the same new question: a hit
    earlier = (Turn("What is the probation period?", "6 months [1]."),)
    assert rag.cached_answer(QUESTION, ["handbook"], AskOptions(history=earlier)) is None


def test_stream_answer_raises_a_bad_request_before_the_first_event(handbook_components: Components) -> None:
    """So that an HTTP caller can still answer with a status code instead of a broken stream."""
    with pytest.raises(InvalidRequestError) as caught:
        handbook_components.rag.stream_answer("   ", "handbook")  # not iterated: the call itself raises
    assert caught.value.code == InvalidRequestError.QUESTION_EMPTY


def test_a_stream_is_tokens_then_one_done_answer_whose_text_they_spell(handbook_components: Components) -> None:
    events = list(handbook_components.rag.stream_answer(QUESTION, "handbook", AskOptions(use_cache=False)))
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"token"}
    done = events[-1][1]
    assert "".join(str(text) for _, text in events[:-1]) == done.answer  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("options", "code"),
    [
        (SearchOptions(mode="fuzzy"), InvalidRequestError.MODE_INVALID),  # type: ignore[arg-type]
        (SearchOptions(top_k=0), InvalidRequestError.TOP_K_OUT_OF_RANGE),
        (SearchOptions(top_k=21), InvalidRequestError.TOP_K_OUT_OF_RANGE),  # max_top_k is 20
    ],
)
def test_search_options_are_checked(handbook_components: Components, options: SearchOptions, code: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        handbook_components.rag.search(QUESTION, ["handbook"], options)
    assert caught.value.code == code


def test_an_unknown_support_policy_is_refused(handbook_components: Components) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        handbook_components.rag.answer(QUESTION, "handbook", AskOptions(support_policy="ignore"))  # type: ignore[arg-type]
    assert caught.value.code == InvalidRequestError.POLICY_INVALID
