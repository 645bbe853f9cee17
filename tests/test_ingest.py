import shutil
from pathlib import Path

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
    assert (report.added, report.updated, report.unchanged, report.chunks_embedded) == (0, 0, 4, 0)
    assert _all_chunks(handbook_components, "handbook") == before


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
