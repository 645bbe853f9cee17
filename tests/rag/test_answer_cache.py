"""The answer cache: a repeated question skips retrieval, and any change to the scope's documents invalidates it."""

from __future__ import annotations

from pathlib import Path

from app import metrics
from app.bootstrap import Components
from app.rag.options import AskOptions

QUESTION = "What is the guest Wi-Fi network called?"


def hits() -> float:
    return metrics.ANSWER_CACHE_HITS._value.get()  # type: ignore[attr-defined]


def test_repeated_question_is_served_before_retrieval_and_logged(handbook_components: Components) -> None:
    rag = handbook_components.rag
    first = rag.answer(QUESTION, "handbook", AskOptions(request_id="a1", principal="alice"))
    before = hits()
    second = rag.answer(QUESTION, "handbook", AskOptions(request_id="a2", principal="alice"))
    assert hits() == before + 1
    assert second.cached and not first.cached and second.answer == first.answer
    assert second.request_id == "a2" and second.citations == first.citations and second.usage["cost_usd"] == 0.0
    rows = {r["request_id"]: r for r in handbook_components.ledger.rows()}
    assert rows["a2"]["cached"] == 1 and rows["a2"]["cost_usd"] == 0.0 and rows["a2"]["key"] == "alice"
    bypass = rag.answer(QUESTION, "handbook", AskOptions(use_cache=False))
    assert hits() == before + 1 and bypass.cached is False
    streamed = list(rag.stream_answer(QUESTION, "handbook"))
    assert streamed[0] == ("token", first.answer) and streamed[-1][1].cached and hits() == before + 2


def test_an_ingest_into_the_scope_invalidates_cached_answers(handbook_components: Components, tmp_path: Path) -> None:
    rag = handbook_components.rag
    assert "Fernhill-Guest" in rag.answer(QUESTION, "handbook").answer
    assert rag.answer(QUESTION, "handbook").cached
    folder = tmp_path / "update"
    folder.mkdir()
    (folder / "wifi.md").write_text("# Wi-Fi\n\nThe guest Wi-Fi network is now called Fernhill-Visitors.\n")
    handbook_components.ingest_pipeline.ingest([folder], "handbook")
    after = rag.answer(QUESTION, "handbook")
    assert after.cached is False and "Fernhill-Visitors" in after.answer


def test_an_ingest_by_another_process_invalidates_too(
    handbook_components: Components, tmp_path: Path, embedder
) -> None:  # type: ignore[no-untyped-def]
    """``kb ingest`` runs in its own process: its commits reach the server through SQLite's data_version."""
    rag = handbook_components.rag
    rag.answer(QUESTION, "handbook")
    assert rag.answer(QUESTION, "handbook").cached
    other = Components(handbook_components.settings, embedder=embedder)  # its own connections, as a CLI run has
    folder = tmp_path / "update"
    folder.mkdir()
    (folder / "wifi.md").write_text("# Wi-Fi\n\nThe guest Wi-Fi network is now called Fernhill-Lounge.\n")
    other.ingest_pipeline.ingest([folder], "handbook")
    other.close()
    after = rag.answer(QUESTION, "handbook")
    assert after.cached is False and "Fernhill-Lounge" in after.answer
