"""Hybrid retrieval with real parts: bm25s index in SQLite, Chroma, the manifest, the ingest pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from app.bootstrap import Components
from app.llm.base import REFUSAL
from app.rag.options import AskOptions
from app.rag.retrieval import SearchFilters
from app.settings import RetrievalSettings
from ingest.files import document_id
from tests.conftest import EXAMPLES
from vectorstore.lexical import LexicalIndex


def _meta(doc: str) -> dict[str, str]:
    return {"document_id": doc, "source": f"{doc}.md", "doc_hash": "h"}


def test_lexical_index_stems_persists_and_sweeps(tmp_path: Path) -> None:
    path = tmp_path / "lexical.sqlite3"
    index = LexicalIndex(path)
    index.upsert("c", ["a1", "a2"], ["Passwords are rotated yearly.", "The cafeteria opens at noon."], [_meta("a")] * 2)
    index.upsert("c", ["b1"], ["Rotating a password is mandatory."], [_meta("b")])

    hits = index.search("c", "How do I rotate my password?", 5)
    assert {h.id for h in hits} == {"a1", "b1"}  # "rotated"/"rotating" and "passwords" stem to the query's terms
    assert all(h.score > 0 and h.coverage == pytest.approx(1.0) for h in hits)
    assert index.search("c", "how is the", 5) == []  # stop words only: no evidence at all
    assert [h.id for h in index.search("c", "password cafeteria", 5, SearchFilters(("b.md",)))] == ["b1"]

    other = LexicalIndex(path)  # another process: the index is persisted, and writes show up in both
    assert {h.id for h in other.search("c", "rotate password", 5)} == {"a1", "b1"}
    other.upsert("c", ["b2"], ["The cafeteria menu changes weekly."], [_meta("b")])
    assert {h.id for h in index.search("c", "cafeteria", 5)} == {"a2", "b2"}

    assert index.sweep_document("c", "b", keep={"b2"}) == 1  # the old version of document b goes
    assert index.retain_documents("c", {"b"}) == 2  # orphans of unknown document a go
    assert [h.id for h in index.search("c", "cafeteria password", 5)] == ["b2"]
    index.delete_collection("c")
    assert index.count("c") == 0 and other.search("c", "cafeteria", 5) == []


def test_hybrid_hits_carry_both_retrievers_scores(handbook_components: Components) -> None:
    c = handbook_components
    assert c.lexical.count("handbook") == c.store.count("handbook") > 0  # ingestion filled both indexes
    hits = c.retriever.search("What is the guest Wi-Fi network called?", ["handbook"], 5)
    top = hits[0]
    assert top.metadata["source"] == "office-faq.txt" and "Fernhill-Guest" in top.text
    assert top.dense_rank == 1 and top.lexical_rank == 1 and top.dense is not None and top.dense > 0.5
    assert top.lexical is not None and top.lexical > 0 and top.coverage == pytest.approx(1.0)
    assert all(h.dense is not None and h.lexical is not None for h in hits)  # each candidate scored by both
    lexical = c.retriever.search("Fernhill-Guest", ["handbook"], 5, mode="lexical")
    assert lexical[0].metadata["source"] == "office-faq.txt" and lexical[0].dense is None


def test_hybrid_search_reads_metadata_from_bm25_and_texts_for_the_returned_hits_only(
    handbook_components: Components,
) -> None:
    c = handbook_components
    query = "How many days of annual leave do I get?"
    hits = c.retriever.search(query, ["handbook"], 5)
    stored = c.store.get_records("handbook", [h.id for h in hits])
    assert hits and all((h.text, h.metadata) == stored[h.id] for h in hits)  # as Chroma holds them

    # A chunk the BM25 index lacks (an index behind the vector store) is still found, with
    # Chroma's metadata and text.
    top = hits[0]
    c.lexical.delete_ids("handbook", [top.id])
    found = {h.id: h for h in c.retriever.search(query, ["handbook"], 5)}[top.id]
    assert (found.text, found.metadata) == stored[top.id]
    assert found.lexical == 0.0  # no BM25 evidence for it any more


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_filters_apply_inside_every_retriever(handbook_components: Components, mode: str) -> None:
    def search(query: str, filters: SearchFilters) -> list:  # type: ignore[type-arg]
        return handbook_components.retriever.search(query, ["handbook"], 10, mode=mode, filters=filters)  # type: ignore[arg-type]

    by_source = search("allowance per day", SearchFilters(("expenses.html",)))
    assert by_source and {h.metadata["source"] for h in by_source} == {"expenses.html"}
    pages = search("leave password probation", SearchFilters(page_min=3, page_max=4))
    assert pages and {h.metadata["page"] for h in pages} <= {3, 4}


def test_updates_and_deletes_reach_the_lexical_index(handbook_components: Components, tmp_path: Path) -> None:
    c = handbook_components
    docs = tmp_path / "docs"
    shutil.copytree(EXAMPLES, docs)
    faq = docs / "office-faq.txt"
    faq.write_text(faq.read_text().replace("Fernhill-Guest", "Fernhill-Visitors"))
    report = c.ingest_pipeline.ingest([docs], "handbook")
    assert (report.updated, report.unchanged) == (1, 3)
    assert c.lexical.count("handbook") == c.store.count("handbook")

    def lexical_sources(query: str) -> list[str]:
        return [h.metadata["source"] for h in c.retriever.search(query, ["handbook"], 5, mode="lexical")]

    assert lexical_sources("Fernhill-Visitors")[0] == "office-faq.txt"
    assert all("Fernhill-Guest" not in h.text for h in c.retriever.search("Fernhill-Guest", ["handbook"], 5))

    # A chunk the manifest does not vouch for (a crash leftover of another version) is never served.
    doc = document_id("handbook", "office-faq.txt")
    c.lexical.upsert("handbook", ["leftover"], ["the swordfish protocol"], [{"document_id": doc, "doc_hash": "old"}])
    assert lexical_sources("swordfish protocol") == []

    c.admin.delete_document("handbook", "office-faq.txt")
    assert "office-faq.txt" not in lexical_sources("Fernhill-Visitors network password")
    assert c.lexical.count("handbook") == c.store.count("handbook")


def test_near_duplicate_chunks_are_not_returned_twice(handbook_components: Components, tmp_path: Path) -> None:
    c = handbook_components
    docs = tmp_path / "dup"
    docs.mkdir()
    for name in ("a.md", "b.md"):
        shutil.copy(EXAMPLES / "oncall.md", docs / name)
    c.ingest_pipeline.ingest([docs], "dup")
    question = "How quickly do I have to acknowledge a page when on call?"
    hits = c.retriever.search(question, ["dup"], 4)
    assert len({h.text for h in hits}) == len(hits)  # one copy of each passage
    off = c.retriever.search(question, ["dup"], 4, config=RetrievalSettings(mmr_lambda=1.0, duplicate_cosine=1.01))
    assert len({h.text for h in off}) < len(off)  # without suppression the copies crowd the top


def test_weak_evidence_is_refused_without_calling_the_model(handbook_components: Components) -> None:
    c = handbook_components
    rag = c.rag
    assert rag.answer("Where do I report a phishing email?", "handbook").grounded  # weak cosine, strong words
    strict = Components(
        c.settings.model_copy(update={"retrieval": RetrievalSettings(min_evidence=0.99)}), embedder=c.embedder
    )
    try:
        answer = strict.rag.answer(
            "How many days of annual leave do I get?", "handbook", AskOptions(request_id="floor-1")
        )
        assert answer.answer == REFUSAL and answer.grounded is False and answer.citations == []
        assert "floor-1" not in {r["request_id"] for r in strict.ledger.rows()}
    finally:
        strict.close()


def test_hybrid_ranks_a_chunk_with_its_sections_mean_vector(handbook_components: Components) -> None:
    c = handbook_components
    query = "How many days of annual leave do I get?"
    hits = c.retriever.search(query, ["handbook"], 10)
    qvec = np.asarray(c.embedder.embed_query(query), dtype=np.float32)
    ids, _, metas = c.store.get_all("handbook")
    sectioned = [h for h in hits if h.metadata.get("section")]
    assert sectioned and any(not h.metadata.get("section") for h in hits)  # Markdown/HTML sections; PDF pages
    for h in sectioned:
        # the section vector ingestion kept is the normalized mean of the section's chunk vectors
        members = [cid for cid, m in zip(ids, metas, strict=True) if m.get("section") == h.metadata["section"]]
        assert len(members) == h.metadata["section_chunks"]
        mean = np.stack(list(c.store.get_embeddings("handbook", members).values())).mean(axis=0)
        assert h.section == pytest.approx(float(mean @ qvec) / float(np.linalg.norm(mean)), abs=2e-3)  # float16
    cfg = c.retriever.config
    top = max((h.lexical or 0.0) for h in hits)
    for h in hits:  # cosine + BM25 share + the section's cosine − the length prior; a page is a section of one
        expected = (h.dense or 0) + cfg.bm25_weight * (h.lexical or 0) / top
        if h.metadata.get("section"):
            expected += cfg.section_weight * h.section - cfg.section_length_penalty * np.log(
                h.metadata["section_chunks"]
            )
        else:
            assert h.section is None
            expected += cfg.section_weight * (h.dense or 0)
        assert h.score == pytest.approx(expected, abs=1e-6)
    unweighted = c.retriever.search(query, ["handbook"], 5, config=cfg.model_copy(update={"section_weight": 0.0}))
    assert all(h.section is None for h in unweighted)


def test_chunks_without_a_section_vector_rank_as_sections_of_one(handbook_components: Components) -> None:
    """A store ingested before section vectors (or one document of it) is not pushed down by the others."""
    from sqlalchemy import update

    from vectorstore.tables import bump, chunks, versions, write_tx

    c = handbook_components
    question = "Who approves expenses?"
    before = c.retriever.search(question, ["handbook"], 5)
    assert before[0].metadata["source"] == "expenses.html"
    with write_tx(c.db) as conn:  # expenses.html as an older kb wrote it: no section vectors
        conn.execute(update(chunks).where(chunks.c.metadata.like('%"expenses.html"%')).values(section_vector=None))
        bump(conn, versions, "version", "handbook")
    after = c.retriever.search(question, ["handbook"], 5)
    assert after[0].metadata["source"] == "expenses.html" and after[0].section is None
    # its own cosine stands in for the section's: the score moves a little, not by the whole section term
    assert after[0].score == pytest.approx(before[0].score, abs=0.15)


def test_a_section_vector_of_another_length_is_ignored_not_fatal(handbook_components: Components) -> None:
    from sqlalchemy import update

    from vectorstore.tables import bump, chunks, versions, write_tx

    c = handbook_components
    heads = [cid for cid, v in c.lexical.section_vectors("handbook", c.store.get_all("handbook")[0]).items()]
    with write_tx(c.db) as conn:  # another model's 768-dimension vector on one section
        conn.execute(update(chunks).where(chunks.c.chunk_id == heads[0]).values(section_vector=bytes(768 * 2)))
        bump(conn, versions, "version", "handbook")
    for mode in ("hybrid", "lexical"):
        assert c.retriever.search("annual leave days", ["handbook"], 5, mode=mode)  # type: ignore[arg-type]
    assert c.lexical.section_cosines("handbook", heads, np.ones(5, dtype=np.float32)) == {}  # wrong dimension
