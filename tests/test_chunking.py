from app.llm.tokens import count_tokens
from ingest.chunking import Chunker
from ingest.loaders import Section


def test_chunks_respect_token_size_and_keep_page_and_heading() -> None:
    text = " ".join(f"Sentence number {i} talks about policy item {i}." for i in range(200))
    chunker = Chunker(chunk_tokens=60, overlap_tokens=10)
    chunks = chunker.chunk("doc1", [Section(text=text, page=7, heading="Policies")])
    assert len(chunks) > 5
    assert all(count_tokens(c.text) <= 60 for c in chunks)
    assert {c.page for c in chunks} == {7}
    assert {c.heading for c in chunks} == {"Policies"}
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_chunk_ids_are_deterministic_and_content_addressed() -> None:
    sections = [Section(text="Alpha beta gamma. " * 50, page=1), Section(text="Delta epsilon. " * 50, page=2)]
    first = Chunker(50, 5).chunk("doc1", sections)
    again = Chunker(50, 5).chunk("doc1", sections)
    assert [c.id for c in first] == [c.id for c in again]
    assert len({c.id for c in first}) == len(first)
    changed = Chunker(50, 5).chunk("doc1", [Section(text="Changed text. " * 50, page=1), sections[1]])
    assert first[0].id != changed[0].id


def test_chunks_never_cross_sections() -> None:
    chunks = Chunker(200, 20).chunk("d", [Section("page one text", page=1), Section("page two text", page=2)])
    assert [(c.text, c.page) for c in chunks] == [("page one text", 1), ("page two text", 2)]
