"""The committed sample PDF must match its source text page by page (tests cite page numbers)."""

import sys

from pypdf import PdfReader

from tests.conftest import EXAMPLES, ROOT


def test_handbook_pdf_pages_match_the_source() -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from handbook_source import PAGES
    finally:
        sys.path.remove(str(ROOT / "examples"))
    reader = PdfReader(EXAMPLES / "handbook.pdf")
    assert len(reader.pages) == len(PAGES) >= 4
    for page, (heading, paragraphs) in zip(reader.pages, PAGES, strict=True):
        text = " ".join((page.extract_text() or "").split())
        assert heading in text
        for paragraph in paragraphs:
            assert " ".join(paragraph.split())[:60] in text
