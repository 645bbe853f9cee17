import shutil
from pathlib import Path

import pytest

from app.bootstrap import Components
from tests.conftest import EXAMPLES


def _all_chunks(components: Components, collection: str) -> dict[str, dict]:
    return components.store.get_metadatas(collection, {"collection": collection})


def test_sample_set_chunks_carry_their_metadata(handbook_components: Components) -> None:
    chunks = _all_chunks(handbook_components, "handbook")
    assert len(chunks) == handbook_components.store.count("handbook") > 10
    sources = {m["source"] for m in chunks.values()}
    assert sources == {"handbook.pdf", "oncall.md", "expenses.html", "office-faq.txt"}
    pdf_pages = {m["page"] for m in chunks.values() if m["source"] == "handbook.pdf"}
    assert pdf_pages == {1, 2, 3, 4, 5}
    for meta in chunks.values():
        assert {"collection", "source", "document_id", "chunk_index", "content_hash", "doc_hash"} <= set(meta)


def test_reingest_is_idempotent(handbook_components: Components) -> None:
    before = _all_chunks(handbook_components, "handbook")
    report = handbook_components.ingest_pipeline.ingest([EXAMPLES], "handbook")
    assert (report.added, report.updated, report.unchanged, report.chunks_written) == (0, 0, 4, 0)
    assert _all_chunks(handbook_components, "handbook") == before


def test_a_new_extraction_or_chunk_size_re_extracts_unchanged_files(handbook_components: Components) -> None:
    """A store ingested before a loader/chunking change (or with another chunk size) is brought up to date by
    the next `kb ingest`: the extraction signature is part of each document's version, and the update
    replaces the old chunks whole (no leftovers)."""
    c = handbook_components
    resized = Components(c.settings.model_copy(update={"chunking": c.settings.chunking.model_copy(
        update={"chunk_tokens": 120})}), embedder=c.embedder)  # fmt: skip
    try:
        report = resized.ingest_pipeline.ingest([EXAMPLES], "handbook")
        assert (report.added, report.updated, report.unchanged) == (0, 4, 0)
        chunks = _all_chunks(resized, "handbook")
        assert len(chunks) == resized.store.count("handbook") == resized.lexical.count("handbook")
        assert len({m["doc_hash"] for m in chunks.values()}) == 4  # one live version per document
        again = resized.ingest_pipeline.ingest([EXAMPLES], "handbook")
        assert (again.updated, again.unchanged) == (0, 4)
    finally:
        resized.close()


@pytest.mark.parametrize("lost_from", ["chroma", "bm25"])
def test_an_unchanged_document_missing_chunks_is_written_again(handbook_components: Components, lost_from: str) -> None:
    """Chunks lost after a document went live (a lost race, a restored backup) heal on the next run."""
    components = handbook_components
    record = components.manifest.get("handbook", "oncall.md")
    assert record is not None
    lost = list(record.chunk_ids[:2])
    if lost_from == "chroma":
        components.store.delete("handbook", lost)
    else:
        components.lexical.delete_ids("handbook", lost)
    report = components.ingest_pipeline.ingest([EXAMPLES], "handbook")
    assert (report.updated, report.unchanged, report.failed) == (1, 3, [])
    assert components.store.existing_ids("handbook", list(record.chunk_ids)) == set(record.chunk_ids)
    assert set(components.lexical.texts("handbook", list(record.chunk_ids))) == set(record.chunk_ids)
    again = components.ingest_pipeline.ingest([EXAMPLES], "handbook")
    assert (again.updated, again.unchanged) == (0, 4)


def test_changed_file_replaces_its_chunks_without_leftovers(handbook_components: Components, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    shutil.copytree(EXAMPLES, folder)
    pipeline = handbook_components.ingest_pipeline
    pipeline.ingest([folder], "copy")
    old_ids = set(handbook_components.store.get_ids("copy", {"source": "oncall.md"}))

    text = (folder / "oncall.md").read_text()
    (folder / "oncall.md").write_text(text.replace("300 EUR per week", "350 EUR per week"))
    report = pipeline.ingest([folder], "copy")
    assert (report.updated, report.unchanged) == (1, 3)

    new = handbook_components.store.get_metadatas("copy", {"source": "oncall.md"})
    assert set(new) != old_ids
    assert len(new) == len(old_ids)  # replaced, not added
    docs = handbook_components.store._get("copy").get(ids=list(new))["documents"]
    assert any("350 EUR" in d for d in docs) and not any("300 EUR per week" in d for d in docs)


def test_one_bad_file_does_not_stop_the_batch(handbook_components: Components, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(EXAMPLES / "oncall.md", folder / "oncall.md")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "image.png").write_bytes(b"\x89PNG")
    report = handbook_components.ingest_pipeline.ingest([folder], "mixed")
    assert report.added == 1
    assert {f["source"] for f in report.failed} == {"broken.pdf", "empty.txt"}
    assert report.skipped == [{"source": "image.png", "reason": "unsupported type .png"}]
    assert handbook_components.store.get_ids("mixed", {"source": "oncall.md"})


def test_collection_names_users_choose_are_accepted(handbook_components: Components) -> None:
    pipeline = handbook_components.ingest_pipeline
    for name in ("hr", "Legal & Compliance", "HR"):
        report = pipeline.ingest([EXAMPLES / "office-faq.txt"], name)
        assert report.added == 1, name
    names = {c.name for c in handbook_components.store.list_collections()}
    assert {"hr", "HR", "Legal & Compliance", "handbook"} <= names


def _docx_bytes() -> bytes:
    import io

    import docx

    document = docx.Document()
    document.add_heading("Travel", level=1)
    document.add_paragraph("Book trains for journeys under 5 hours.")
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "EU per diem", "45 EUR"
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


def test_bad_inputs_are_reported_and_the_rest_is_ingested(handbook_components: Components, tmp_path: Path) -> None:
    import io

    from pypdf import PdfReader, PdfWriter

    folder = tmp_path / "batch"
    folder.mkdir()
    shutil.copy(EXAMPLES / "oncall.md", folder / "good.md")
    (folder / "travel.docx").write_bytes(_docx_bytes())
    writer = PdfWriter(clone_from=PdfReader(EXAMPLES / "handbook.pdf"))
    writer.encrypt("pw")
    buf = io.BytesIO()
    writer.write(buf)
    (folder / "encrypted.pdf").write_bytes(buf.getvalue())
    (folder / "corrupt.pdf").write_bytes((EXAMPLES / "handbook.pdf").read_bytes()[:400])
    (folder / "zero.txt").write_bytes(b"")
    (folder / "random.pdf").write_bytes(bytes(range(256)) * 40)
    (folder / "random.docx").write_bytes(bytes(range(256)) * 40)
    (folder / "latin1.txt").write_bytes("Caf\xe9 menu".encode("latin-1"))
    blank = PdfWriter()
    blank.add_blank_page(width=300, height=300)
    buf = io.BytesIO()
    blank.write(buf)
    (folder / "scanned.pdf").write_bytes(buf.getvalue())
    (folder / "huge.txt").write_bytes(b"a" * (2 * 1024 * 1024))
    handbook_components.ingest_pipeline.max_file_bytes = 1024 * 1024

    report = handbook_components.ingest_pipeline.ingest([folder], "batch")

    reasons = {f["source"]: f["error"] for f in report.failed}
    assert report.added == 2, report  # good.md and travel.docx
    assert "encrypted PDF" in reasons["encrypted.pdf"]
    assert "not a readable PDF" in reasons["corrupt.pdf"] and "not a readable PDF" in reasons["random.pdf"]
    assert "not a readable DOCX" in reasons["random.docx"]
    assert "empty" in reasons["zero.txt"] and "not valid UTF-8" in reasons["latin1.txt"]
    assert "no extractable text" in reasons["scanned.pdf"]
    assert "over the 1 MB limit" in reasons["huge.txt"]
    assert len(reasons) == 8
    docx_chunks = handbook_components.store.get_metadatas("batch", {"source": "travel.docx"})
    assert {m.get("heading") for m in docx_chunks.values()} == {"Travel"}


def test_prune_removes_documents_whose_files_are_gone(handbook_components: Components, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    shutil.copytree(EXAMPLES, folder)
    pipeline = handbook_components.ingest_pipeline
    pipeline.ingest([folder], "prune")
    (folder / "office-faq.txt").unlink()
    kept = pipeline.ingest([folder], "prune")
    assert kept.deleted == 0 and handbook_components.store.get_ids("prune", {"source": "office-faq.txt"})
    report = pipeline.ingest([folder], "prune", prune=True)
    assert (report.deleted, report.unchanged) == (1, 3)
    assert handbook_components.store.get_ids("prune", {"source": "office-faq.txt"}) == []
    assert [r.source for r in handbook_components.manifest.documents("prune")] == [
        "expenses.html",
        "handbook.pdf",
        "oncall.md",
    ]


def test_readers_never_see_an_unswitched_version(handbook_components: Components, tmp_path: Path) -> None:
    """Chunks upserted for a new version stay invisible until the manifest switches to it."""
    from ingest.chunking import Chunker
    from ingest.files import document_id
    from ingest.loaders import Section

    store, rag = handbook_components.store, handbook_components.rag
    doc_id = document_id("handbook", "oncall.md")
    new = Chunker().chunk(doc_id, [Section("On-call engineers receive an allowance of 999 EUR per week.")])
    vectors = handbook_components.embedder.embed_documents([c.text for c in new])
    meta = {"collection": "handbook", "source": "oncall.md", "document_id": doc_id, "doc_hash": "next-version"}
    store.upsert("handbook", [c.id for c in new], vectors, [c.text for c in new], [meta])  # crash before switch
    hits = [h.as_hit() for h in rag.retriever.search("What is the on-call allowance per week?", ["handbook"], 5)]
    assert hits and all("999 EUR" not in h.text for h in hits)
    assert any("300 EUR" in h.text for h in hits)


def test_identical_chunks_are_embedded_once(handbook_components: Components, tmp_path: Path) -> None:
    pipeline = handbook_components.ingest_pipeline
    first = pipeline.ingest([EXAMPLES / "oncall.md"], "emb-a")
    before = pipeline.embedder.embedded  # type: ignore[attr-defined]
    second = pipeline.ingest([EXAMPLES / "oncall.md"], "emb-b")
    assert first.chunks_written == second.chunks_written > 0
    assert second.chunks_embedded == 0
    assert pipeline.embedder.embedded == before  # type: ignore[attr-defined]  # all from the embedding cache


def test_documents_can_be_listed_and_deleted(handbook_components: Components) -> None:
    from app.errors import CollectionNotFoundError, DocumentNotFoundError

    store, manifest, admin = handbook_components.store, handbook_components.manifest, handbook_components.admin
    docs = {d["source"]: d for d in admin.documents("handbook")}
    assert set(docs) == {"handbook.pdf", "oncall.md", "expenses.html", "office-faq.txt"}
    assert docs["handbook.pdf"]["chunks"] == len(store.get_ids("handbook", {"source": "handbook.pdf"}))
    admin.delete_document("handbook", "oncall.md")
    assert store.get_ids("handbook", {"source": "oncall.md"}) == []
    with pytest.raises(DocumentNotFoundError):
        admin.delete_document("handbook", "oncall.md")
    admin.delete_collection("handbook")
    with pytest.raises(CollectionNotFoundError):
        admin.documents("handbook")
    assert manifest.documents("handbook") == []
