import numpy as np

from app.tokens import count_tokens
from ingest.chunking import EXTRACTION, Chunker, section_vectors
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


def test_a_section_is_the_parts_under_one_heading_and_its_vector_is_their_mean() -> None:
    sections = [
        Section("Alpha beta gamma. " * 40, page=1, heading="Guide > Install"),
        Section("Delta epsilon zeta. " * 40, page=2, heading="Guide > Install"),  # the same section, next page
        Section("Eta theta iota. " * 40, page=2, heading="Guide > Use"),
        Section("no heading one", page=3),
        Section("no heading two", page=4),
        Section("A page of a PDF without an outline.", page=5, heading="Its first line", is_section=False),
    ]
    chunks = Chunker(60, 5).chunk("d", sections, "v1")
    install = [c for c in chunks if c.heading == "Guide > Install"]
    use = [c for c in chunks if c.heading == "Guide > Use"]
    assert len(install) > 2 and {c.section for c in install} == {install[0].id}
    assert {c.section for c in use} == {use[0].id}
    assert [c.section == c.id for c in chunks if c.heading is None] == [True, True]  # each part its own
    assert chunks[-1].section == ""  # a page is not a section: ranked on its own, no section vector

    vectors = np.random.default_rng(0).normal(size=(len(chunks), 8)).astype(np.float32)
    kept = section_vectors(chunks, vectors.tolist())
    assert set(kept) == {install[0].id, use[0].id, *(c.id for c in chunks if c.heading is None)}
    mean = vectors[[c.index for c in install]].mean(axis=0)
    assert np.allclose(kept[install[0].id], mean / np.linalg.norm(mean), atol=1e-6)


def test_the_extraction_signature_is_part_of_a_documents_version() -> None:
    # a document ingested before a loader/chunking change, or with other chunk sizes, is re-extracted
    assert Chunker(200, 30).signature != Chunker(100, 30).signature
    assert EXTRACTION in Chunker(200, 30).signature


def test_chunks_carry_the_document_title_and_section_path_in_what_is_embedded() -> None:
    sections = [Section("Press the red button.", page=3, heading="Installing > Partitioning"), Section("Body.")]
    chunks = Chunker(200, 20).chunk("d", sections, "v", title="Admin Guide")
    assert [c.embedding_text() for c in chunks] == [
        "Admin Guide > Installing > Partitioning\nPress the red button.",
        "Admin Guide\nBody.",
    ]
    assert chunks[0].heading == "Installing > Partitioning" and chunks[0].text == "Press the red button."
    # a path that starts with the title (a Markdown file's first heading) does not repeat it
    same = Chunker(200, 20).chunk("d", [Section("Text.", heading="Admin Guide > Setup")], "v", title="Admin Guide")
    assert same[0].embedding_text() == "Admin Guide > Setup\nText."
    # a title that is only a prefix of the path's first heading is still said ("R" and "Reading data")
    short = Chunker(200, 20).chunk("d", [Section("Text.", heading="Reading data")], "v", title="R")
    assert short[0].embedding_text() == "R > Reading data\nText."
