import io
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from app.errors import IngestError
from ingest.loaders import load
from tests.conftest import EXAMPLES


def test_pdf_keeps_page_numbers() -> None:
    path = EXAMPLES / "handbook.pdf"
    doc = load(path, path.read_bytes())
    assert [s.page for s in doc.sections] == [1, 2, 3, 4, 5]
    assert "27 days of paid annual leave" in doc.sections[1].text
    assert doc.sections[3].heading == "IT and Security Policy: Accounts and Devices"
    assert doc.title == "Fernhill Analytics Employee Handbook"
    assert not any(s.is_section for s in doc.sections)  # no outline: pages, each chunk ranked on its own


def test_markdown_keeps_heading_path() -> None:
    path = EXAMPLES / "oncall.md"
    doc = load(path, path.read_bytes())
    headings = {s.heading for s in doc.sections}
    assert "Engineering On-Call Guide > Responding to pages" in headings
    page_section = next(s for s in doc.sections if "15 minutes" in s.text)
    assert page_section.heading == "Engineering On-Call Guide > Responding to pages"


def test_html_strips_scripts_and_navigation() -> None:
    path = EXAMPLES / "expenses.html"
    doc = load(path, path.read_bytes())
    text = "\n".join(s.text for s in doc.sections)
    assert "must not be indexed" not in text
    assert "Intranet home" not in text
    assert doc.title == "Fernhill Analytics Expense Policy"
    hotel = next(s for s in doc.sections if "180 EUR" in s.text)
    assert hotel.heading == "Expense Policy > Meals and travel"


def test_text_blocks_get_their_headings() -> None:
    path = EXAMPLES / "office-faq.txt"
    doc = load(path, path.read_bytes())
    assert doc.title == "Fernhill Analytics office FAQ"
    wifi = next(s for s in doc.sections if "Fernhill-Guest" in s.text)
    assert wifi.heading == "Wi-Fi"


def _encrypted_pdf() -> bytes:
    writer = PdfWriter(clone_from=PdfReader(EXAMPLES / "handbook.pdf"))
    writer.encrypt("secret")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("locked.pdf", _encrypted_pdf(), "encrypted PDF"),
        ("broken.pdf", b"%PDF-1.7\n this is not really a pdf", "not a readable PDF"),
        ("junk.pdf", bytes(range(256)) * 10, "not a readable PDF"),
        ("empty.md", b"", "empty"),
        ("latin1.txt", "caf\u00e9".encode("latin-1"), "not valid UTF-8"),
        ("binary.txt", b"abc\x00def", "binary"),
        ("photo.jpg", b"\xff\xd8\xff", "unsupported file type"),
    ],
)
def test_bad_input_gets_a_specific_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(IngestError, match=reason):
        load(Path(name), data)


def test_pdf_without_text_says_to_ocr_it() -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buf = io.BytesIO()
    writer.write(buf)
    with pytest.raises(IngestError, match="no extractable text"):
        load(Path("scan.pdf"), buf.getvalue())


def test_nul_characters_are_dropped_from_every_format() -> None:
    """PostgreSQL refuses NUL in text columns: one stray byte would fail the whole run there."""
    doc = load(Path("notes.md"), b"# Ti\x00tle\n\nSome\x00 text about leave.\n")
    assert "\x00" not in doc.title
    assert all("\x00" not in s.text and "\x00" not in (s.heading or "") for s in doc.sections)
    assert "Some text about leave." in " ".join(s.text for s in doc.sections)
