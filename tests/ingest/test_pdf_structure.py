"""PDF structure on real manuals (Debian's libtasn1 and shared-mime-info documentation): the outline
names each part of a page, running headers, footers and page numbers are in no chunk, and a word
hyphenated at a line end is found whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bootstrap import Components
from app.rag.options import SearchOptions
from ingest.loaders import load
from ingest.pdf_structure import (
    clean_page,
    compounds,
    document_title,
    page_number_offset,
    running_lines,
    split_at_sections,
)
from tests.real_pdfs import MANUALS

LIBTASN1, MIME_SPEC = MANUALS


@pytest.fixture(scope="module")
def manuals() -> dict[str, Path]:
    missing = [str(m) for m in MANUALS if not m.is_file()]
    if missing:
        pytest.skip(f"real PDF manuals not installed: {', '.join(missing)} (make test installs them as root)")
    return {m.stem: m for m in MANUALS}


def test_the_outline_names_the_section_of_each_part_of_a_page(manuals: dict[str, Path]) -> None:
    doc = load(LIBTASN1, LIBTASN1.read_bytes())
    page6 = [(s.heading, s.text.splitlines()[0]) for s in doc.sections if s.page == 6]
    # page 6 ends section 2.1 (continued from page 5) and starts 2.2: two parts, each with its path
    assert page6 == [
        ("2 ASN.1 structure handling > ASN.1 syntax", "• UTF8String;"),
        ("2 ASN.1 structure handling > Naming", "2.2 Naming"),
    ]
    assert all(s.is_section for s in doc.sections)  # outline sections: ranked as sections (section vectors)
    mime = load(MIME_SPEC, MIME_SPEC.read_bytes())
    assert [s.heading for s in mime.sections if s.page == 2] == [
        "1. Introduction > 1.3. Language used in this specification",
        "2. Unified system",
        "2. Unified system > 2.1. Directory layout",
    ]


def test_running_headers_footers_and_page_numbers_are_in_no_chunk(manuals: dict[str, Path]) -> None:
    mime = load(MIME_SPEC, MIME_SPEC.read_bytes())
    header = "Shared MIME-info Database"  # the first line of all 17 pages (the title page's title is that line)
    assert not [s.page for s in mime.sections for line in s.text.splitlines() if line == header]
    assert any(header in s.text for s in mime.sections)  # where the text itself names the spec, it stays
    assert all(s.text.splitlines()[-1].strip() != str(s.page) for s in mime.sections)
    libtasn1 = load(LIBTASN1, LIBTASN1.read_bytes())
    assert not [s.page for s in libtasn1.sections if "Chapter 2: ASN.1 structure handling" in s.text]
    # the chapter's own title, at the top of its first page, stays: it is content, not a running header
    assert any(s.text.startswith("2 ASN.1 structure handling\n") for s in libtasn1.sections)


def test_a_sentence_cut_by_a_page_break_is_kept_whole_at_the_page_it_starts(manuals: dict[str, Path]) -> None:
    assert _page_text(MIME_SPEC, 2).endswith("Information found in a\n2")  # the PDF cuts it (2: the page number)
    mime = load(MIME_SPEC, MIME_SPEC.read_bytes())
    (whole,) = [s for s in mime.sections if "Information found in a\ndirectory is added" in s.text]
    assert whole.page == 2 and whole.text.endswith("to overwrite parts of a mimetype definition.")
    assert not any(s.page == 3 and s.text.startswith("directory is added") for s in mime.sections)


def test_running_lines_need_three_pages_or_two_in_a_row() -> None:
    pages = [["Manual", "Intro text", "1"], ["Manual", "More text", "2"], ["Manual", "Last words", "3"]]
    assert running_lines(pages) == {"manual", "#"}
    assert running_lines([["A title", "body"], ["Other", "Step 2"], ["A title", "Step 3"]]) == set()
    chapter = [["Chapter 2: Naming things 7", "a"], ["Chapter 2: Naming things 8", "b"], ["Chapter 3: Other 9", "c"]]
    assert running_lines(chapter) == {"chapter #: naming things #"}
    assert clean_page(["Manual", "Text on two", "lines with a hyphen-", "ated word.", "3"], {"manual"}) == (
        "Text on two\nlines with a hyphenated word."
    )


def test_repeated_content_at_page_edges_is_not_a_running_header() -> None:
    """Seen in the Maxima book and the Debian Reference: output labels, numbers and admonition words repeat
    at page edges but are content."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    pages = [["(%o1)", "Note" if i % 3 == 0 else words[i], f"{words[i]} {words[-i]} text", "2.5"] for i in range(10)]
    assert running_lines(pages) == set()  # "Note" opens 4 of 10 pages: an admonition, not a header
    assert running_lines([["Note", f"t{i}"] for i in range(4)]) == {"note"}  # on every page: a header


def test_a_pdf_without_a_metadata_title_takes_its_title_page_or_outline_root(manuals: dict[str, Path]) -> None:
    assert load(LIBTASN1, LIBTASN1.read_bytes()).title == "Libtasn1"  # no /Title: the title page's first line
    entries = [(1, "Guide", "Guide"), (2, "Install", "Guide > Install"), (5, "Use", "Guide > Use")]
    assert document_title("  Real  Title ", entries, ["Cover"]) == "Real Title"
    assert document_title(None, entries, ["Cover"]) == "Guide"  # the outline's single root
    two_roots = [(1, "Install", "Install"), (5, "Use", "Use")]
    assert document_title(None, two_roots, ["Employee Handbook", "2026"]) == "Employee Handbook"
    for first_line in ("12", "iv", "Page 3 of 40", "This page opens with a sentence.", "x" * 90, "---"):
        assert document_title(None, two_roots, [first_line]) is None  # the loader names it after its file
    assert document_title(None, [], []) is None


def test_section_titles_are_matched_as_titles_not_as_prose() -> None:
    """Seen in the R manuals: appendix numbering, a one-word title that is also a word of the prose, a title
    the page does not show (its section begins where the text does not say: nothing is cut)."""
    page = "end of the previous answer.\nmore of it.\nA.2 Useful libraries\nnew text"
    assert split_at_sections(page, [("Useful libraries", "A > Useful libraries")], "A > Essential") == [
        ("A > Essential", "end of the previous answer.\nmore of it."),
        ("A > Useful libraries", "A.2 Useful libraries\nnew text"),
    ]
    prose = "x\nIf the statement is incomplete, lines are read.\nmore\n3.2.1 if\nThe if statement"
    assert [p for p, _ in split_at_sections(prose, [("if", "CS > if")], "CS")] == ["CS", "CS > if"]
    missing = split_at_sections("text of the page\nmore", [("Missing title", "A > Missing title")], "A")
    assert missing == [("A", "text of the page\nmore")]
    wrapped = "answer.\n7.31 How can I put error bars or confidence\nbands on my plot?\nUse arrows()."
    title = "How can I put error bars or confidence bands on my plot?"
    assert [p for p, _ in split_at_sections(wrapped, [(title, "FAQ > bars")], "FAQ")] == ["FAQ", "FAQ > bars"]


def test_what_looks_like_a_header_or_a_hyphen_but_is_content_stays() -> None:
    """The review's cases from the R reference manual and R-exts: a second line repeated on many pages is
    content, an option keeps its hyphens, a compound written with its hyphen elsewhere keeps it, and a
    document whose pages are all alike keeps its text."""
    names = ["array", "apply", "abs", "all", "any", "aov"]
    pages = [[f"{n} {i}", "See Also", f"{n} prose", "#include <R.h>", f"end of {n}"] for i, n in enumerate(names)]
    assert running_lines(pages) == set()  # only a page's first and last lines can be its header or footer
    hyphens = compounds([["a command-line tool"]])
    text = clean_page(
        ["Start R with --no-", "site-file or a command-", "line option; re-", "start it."], set(), hyphens
    )
    assert text == "Start R with --no-site-file or a command-line option; restart it."
    receipt = ["Thank you for your order.", "Please keep this receipt."]
    assert clean_page(receipt, running_lines([receipt] * 3)) == "Thank you for your order.\nPlease keep this receipt."


def test_a_new_section_is_not_pulled_onto_the_previous_page() -> None:
    from ingest.loaders import _pdf_sections

    pages = [["Arithmetic", "x %/% 5 is integer division and"], ["array Multi-way Arrays", "creates arrays.", "More."]]
    sections = _pdf_sections(pages, [(1, "Arithmetic", "Arithmetic"), (2, "array Multi-way Arrays", "array")])
    assert [(s.page, s.heading) for s in sections] == [(1, "Arithmetic"), (2, "array")]
    assert sections[1].text.startswith("array Multi-way Arrays")


def test_a_word_hyphenated_at_a_line_end_is_found_whole(
    manuals: dict[str, Path], settings_factory, embedder, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    assert "man-\nagement" in (LIBTASN1.read_bytes() and _page_text(LIBTASN1, 4))  # hyphenated in the PDF
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / LIBTASN1.name).write_bytes(LIBTASN1.read_bytes())
    components = Components(settings_factory(), embedder=embedder)
    try:
        assert components.ingest_pipeline.ingest([folder], "asn1").failed == []
        hits = components.rag.search("management", ["asn1"], SearchOptions(mode="lexical", top_k=5))
        assert hits and hits[0].metadata["page"] == 4 and "management" in hits[0].text
        assert hits[0].metadata["heading"] == "1 Introduction"
    finally:
        components.close()


def _page_text(path: Path, page: int) -> str:
    from pypdf import PdfReader

    return PdfReader(path).pages[page - 1].extract_text() or ""


def test_headers_that_change_every_page_but_carry_its_number_are_removed() -> None:
    """R's reference manual heads each page with the topic and the printed page number ("2 .Device",
    ".Devices 3"); footnotes and chapter titles that happen to start with the page's number are content."""
    topics = ["abbreviate", "agrep", "all.equal", "apply", "array", "as.Date", "attr", "basename", "bitwAnd"]
    pages = [
        [f"{n + 10} {topic}" if n % 2 else f"{topic} {n + 10}", f"{topic} does something useful.", f"See {topic}."]
        for n, topic in enumerate(topics, start=1)
    ]
    pages[3].append("14 a footnote that happens to carry the page's number as its mark.")
    pages[4][0] = "15 Introduction"  # a chapter's own title (the outline names it)
    offset = page_number_offset(pages)
    assert offset == 10
    cleaned = [
        clean_page(lines, running_lines(pages), printed=n + offset, titles=frozenset({"introduction"}))
        for n, lines in enumerate(pages, start=1)
    ]
    assert cleaned[0] == "abbreviate does something useful.\nSee abbreviate."
    assert cleaned[1].startswith("agrep does") and "12 agrep" not in cleaned[1]
    assert cleaned[3].endswith("14 a footnote that happens to carry the page's number as its mark.")
    assert cleaned[4].startswith("15 Introduction")
    assert page_number_offset([["Intro", "text"], ["more", "text 5"]]) is None  # no pattern: nothing removed
