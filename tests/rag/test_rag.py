import pytest

from app.bootstrap import Components
from app.errors import CollectionNotFoundError, InvalidRequestError, PromptNotFoundError
from app.llm.base import REFUSAL
from app.rag.options import AskOptions


@pytest.mark.parametrize(
    ("question", "source", "page", "fact"),
    [
        ("How many days of annual leave do I get?", "handbook.pdf", 2, "27 days"),
        ("How long is the probation period?", "handbook.pdf", 3, "6 months"),
        ("How long must my password be?", "handbook.pdf", 4, "14 characters"),
        ("Where do I report a phishing email?", "handbook.pdf", 5, "security@fernhill.example"),
        ("How quickly do I have to acknowledge a page when on call?", "oncall.md", None, "15 minutes"),
        ("What is the on-call allowance?", "oncall.md", None, "300 EUR"),
        ("How much can I spend on a hotel per night?", "expenses.html", None, "180 EUR"),
        ("What is the guest Wi-Fi network called?", "office-faq.txt", None, "Fernhill-Guest"),
    ],
)
def test_answers_cite_the_right_source_and_page(
    handbook_components: Components, question: str, source: str, page: int | None, fact: str
) -> None:
    answer = handbook_components.rag.answer(question, "handbook")
    assert fact in answer.answer
    assert answer.grounded
    first = answer.citations[0]
    assert (first.source, first.page) == (source, page)
    assert f"[{first.n}]" in answer.answer
    assert fact in first.snippet or fact in answer.answer
    assert answer.prompt == "answer@v2"


def test_every_marker_maps_to_a_citation(handbook_components: Components) -> None:
    answer = handbook_components.rag.answer("What are the rules for annual leave carry-over?", "handbook")
    import re

    markers = {int(m) for m in re.findall(r"\[(\d+)\]", answer.answer)}
    assert markers == {c.n for c in answer.citations}


def test_unanswerable_question_is_refused_honestly(handbook_components: Components) -> None:
    answer = handbook_components.rag.answer("Who won the football world cup in 1998?", "handbook")
    assert answer.answer == REFUSAL
    assert answer.citations == []
    assert answer.grounded is False


def test_answers_are_logged_and_cached(handbook_components: Components) -> None:
    rag = handbook_components.rag
    first = rag.answer("What is the daily meal allowance?", "handbook", AskOptions(request_id="req-1"))
    second = rag.answer("What is the daily meal allowance?", "handbook", AskOptions(request_id="req-2"))
    assert (first.cached, second.cached) == (False, True)
    assert second.answer == first.answer and second.usage["cost_usd"] == 0.0
    rows = {r["request_id"]: r for r in handbook_components.ledger.rows()}
    assert rows["req-1"]["cached"] == 0 and rows["req-2"]["cached"] == 1
    assert rows["req-1"]["prompt"] == "answer@v2"
    assert rows["req-1"]["prompt_tokens"] == first.usage["prompt_tokens"] > 50
    bypass = rag.answer("What is the daily meal allowance?", "handbook", AskOptions(use_cache=False))
    assert bypass.cached is False


@pytest.mark.parametrize(
    ("kwargs", "error", "code"),
    [
        ({"question": "  ", "collections": "handbook"}, InvalidRequestError, "question_empty"),
        ({"question": "x" * 5000, "collections": "handbook"}, InvalidRequestError, "question_too_long"),
        ({"question": "hi there", "collections": "nope"}, CollectionNotFoundError, "collection_not_found"),
        ({"question": "hi there", "collections": "handbook", "top_k": 0}, InvalidRequestError, "top_k_out_of_range"),
        (
            {"question": "hi there", "collections": "handbook", "prompt": "answer@v99"},
            PromptNotFoundError,
            "prompt_not_found",
        ),
    ],
)
def test_bad_requests_get_specific_errors(
    handbook_components: Components, kwargs: dict, error: type, code: str
) -> None:
    with pytest.raises(error) as info:
        question, collections = kwargs.pop("question"), kwargs.pop("collections")
        handbook_components.rag.answer(question, collections, AskOptions(**kwargs))
    assert info.value.code == code


def test_snippet_shows_the_supporting_passage_not_the_chunk_start() -> None:
    from app.rag.citations import supporting_snippet

    passage = (
        "HR Policy: Time Off\nAnnual leave. Full-time employees receive 27 days.\n"
        "Sick leave. Tell your manager before 10:00 on the first day of absence."
    )
    snippet = supporting_snippet(passage, "Tell your manager before 10:00 when ill.")
    assert snippet.startswith("Sick leave. Tell your manager before 10:00")
    assert supporting_snippet(passage, "").startswith("HR Policy")
