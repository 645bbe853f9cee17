"""Turn a file into text sections that remember where they came from (page, heading).

Each loader returns ``Section``s; chunking never crosses a section, so every chunk
has one exact page (PDF) or heading path (Markdown, HTML). Loaders raise
``IngestError`` with a reason a person can act on; the pipeline reports it and
goes on with the rest of the batch.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from app.errors import IngestError
from ingest.limits import FileLimits, check_chunks, check_pages, check_text_size, check_zip
from ingest.pdf_structure import (
    clean_page,
    compounds,
    document_title,
    outline,
    page_number_offset,
    running_lines,
    section_title,
    split_at_sections,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Section:
    text: str
    page: int | None = None
    heading: str | None = None
    # False for a page of a PDF without an outline (its heading is only its first line): retrieval ranks
    # its chunks on their own; a page mixes topics and its mean vector measured worse than none
    is_section: bool = True


@dataclass(frozen=True)
class LoadedDocument:
    title: str
    sections: list[Section]


class _Sections:
    """Collects text under the current heading path (levels 1-6) for the heading-aware loaders."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self._stack: list[tuple[int, str]] = []
        self._buffer: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.flush()
        self._stack = [(lvl, h) for lvl, h in self._stack if lvl < level]
        self._stack.append((level, text))

    def text(self, text: str) -> None:
        self._buffer.append(text)

    def flush(self) -> list[Section]:
        body = "\n".join(self._buffer).strip()
        if body:
            self.sections.append(Section(text=body, heading=" > ".join(h for _, h in self._stack) or None))
        self._buffer.clear()
        return self.sections


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path.name} is not valid UTF-8 text (byte {exc.start}); re-save it as UTF-8") from exc


def load_pdf(data: bytes, path: Path, limits: FileLimits = FileLimits()) -> LoadedDocument:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise IngestError(f"{path.name} is an encrypted PDF; remove the password and retry")
        check_pages(len(reader.pages), path.name, limits)
        pages = [(page.extract_text() or "").strip().splitlines() for page in reader.pages]
        entries = outline(reader)
        sections = _pdf_sections(pages, entries)
        metadata = reader.metadata
        title = (
            document_title(metadata.get("/Title") if metadata else None, entries, pages[0] if pages else [])
            or path.stem
        )
    except IngestError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise IngestError(f"{path.name} is not a readable PDF ({exc})") from exc
    if not sections:
        raise IngestError(f"{path.name} has no extractable text (a scanned PDF?); run OCR on it first")
    return LoadedDocument(title=title, sections=sections)


def _pdf_sections(pages: list[list[str]], entries: list[tuple[int, str, str]]) -> list[Section]:
    """Each page's text without running headers and footers, cut where outline sections begin; a part's
    heading is its section path, or (no outline) the page's first line."""
    running = running_lines(pages)
    hyphenated = compounds(pages)
    # only with an outline: its titles are what keeps "1 Introduction" opening page 1 from looking like a header
    offset = page_number_offset(pages) if entries else None
    titles = frozenset(section_title(title) for _, title, _ in entries)
    starting: dict[int, list[tuple[str, str]]] = {}
    for page, title, section in entries:
        starting.setdefault(page, []).append((title, section))
    sections: list[Section] = []
    current: str | None = None
    for number, lines in enumerate(pages, start=1):
        text = clean_page(lines, running, hyphenated, None if offset is None else number + offset, titles)
        here = starting.get(number, [])
        for i, (path, body) in enumerate(split_at_sections(text, here, current) if text else []):
            if i == 0 and sections and sections[-1].page == number - 1 and path == current:
                body = _continue_paragraph(sections, body)
                if not body:
                    continue
            first_line = body.splitlines()[0].strip()
            heading = path if entries else (first_line if 0 < len(first_line) <= 100 else None)
            sections.append(Section(text=body, page=number, heading=heading, is_section=bool(entries)))
        if here:
            current = here[-1][1]
    return sections


_CODE = re.compile(r"<-|[{};]|\w\(|^\s*[#>$%]", re.M)  # R, C, shell: a listing continues, not a sentence


def _continue_paragraph(sections: list[Section], body: str) -> str:
    """A sentence cut by a page break is kept whole, cited at the page where it starts: when the previous
    page ends mid-sentence and this one opens in lower case, the opening up to the end of its first sentence
    moves to the previous page's last part. Returns what stays on this page."""
    previous = sections[-1]
    if previous.text.rstrip().endswith((".", "!", "?", ":")) or not body[:1].islower():
        return body
    match = re.search(r"[.!?:](?=\s|$)", body[:400])  # a sentence's tail, not a code listing's next page
    if match is None or _CODE.search(body[: match.end()]):
        return body
    cut = match.end()
    sections[-1] = replace(previous, text=f"{previous.text}\n{body[:cut].strip()}")
    return body[cut:].strip()


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def load_markdown(data: bytes, path: Path, limits: FileLimits = FileLimits()) -> LoadedDocument:
    text = _decode(data, path)
    collector = _Sections()
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        match = None if in_fence else _MD_HEADING.match(line)
        if match:
            collector.heading(len(match.group(1)), match.group(2).strip())
        else:
            collector.text(line)
    sections = collector.flush()
    title = next((s.heading.split(" > ")[0] for s in sections if s.heading), path.stem)
    return LoadedDocument(title=title, sections=sections)


_BLOCK_TAGS = ["p", "li", "td", "th", "pre", "blockquote", "dd", "dt", "figcaption", "footer"]


def load_html(data: bytes, path: Path, limits: FileLimits = FileLimits()) -> LoadedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(data, path), "html.parser")
    for tag in soup(["script", "style", "nav", "noscript", "template", "svg", "iframe"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else path.stem
    headings = ["h1", "h2", "h3", "h4", "h5", "h6"]
    collector = _Sections()
    body = soup.body or soup
    for el in body.find_all(headings + _BLOCK_TAGS):
        if el.name in headings:
            collector.heading(int(el.name[1]), el.get_text(" ", strip=True))
        elif not el.find_parent(_BLOCK_TAGS):  # nested blocks are read with their parent
            text = el.get_text(" ", strip=True)
            if text:
                collector.text(text)
    sections = collector.flush()
    if not sections:
        raise IngestError(f"{path.name} has no readable text")
    return LoadedDocument(title=title, sections=sections)


def _looks_like_heading(line: str) -> bool:
    return 0 < len(line) <= 60 and not line.endswith((".", ",", ";", ":", "!", "?"))


def load_text(data: bytes, path: Path, limits: FileLimits = FileLimits()) -> LoadedDocument:
    """Plain text: blank-line separated blocks; a short unpunctuated first line is the block's heading."""
    text = _decode(data, path).strip()
    if "\x00" in text:
        raise IngestError(f"{path.name} looks binary (NUL bytes), not text")
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    title = path.stem
    if blocks and "\n" not in blocks[0] and _looks_like_heading(blocks[0]):
        title = blocks.pop(0)
    sections = []
    for block in blocks:
        first, _, rest = block.partition("\n")
        if rest.strip() and _looks_like_heading(first.strip()):
            sections.append(Section(text=block, heading=first.strip()))
        else:
            sections.append(Section(text=block))
    return LoadedDocument(title=title, sections=sections)


def load_docx(data: bytes, path: Path, limits: FileLimits = FileLimits()) -> LoadedDocument:
    """Word documents: paragraphs under their heading path; tables as ' | '-joined rows."""
    import io
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    check_zip(data, path.name, limits)  # before python-docx inflates a single member
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise IngestError(f"{path.name} is not a readable DOCX file ({exc})") from exc
    collector = _Sections()
    for child in document.element.body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(child, document)
            text = paragraph.text.strip()
            style = (paragraph.style.name if paragraph.style is not None else "") or ""
            level = _docx_heading_level(style)
            if level and text:
                collector.heading(level, text)
            elif text:
                collector.text(text)
        elif tag == "tbl":
            for row in Table(child, document).rows:
                cells = [c.text.strip() for c in row.cells]
                if any(cells):
                    collector.text(" | ".join(cells))
    sections = collector.flush()
    core_title = (document.core_properties.title or "").strip()
    return LoadedDocument(title=core_title or path.stem, sections=sections)


def _docx_heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.match(r"Heading (\d)", style)
    return int(match.group(1)) if match else 0


LOADERS: dict[str, Callable[[bytes, Path, FileLimits], LoadedDocument]] = {
    ".docx": load_docx,
    ".pdf": load_pdf,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".html": load_html,
    ".htm": load_html,
    ".txt": load_text,
    ".text": load_text,
}


_TEXT_FORMATS = {".md", ".markdown", ".html", ".htm", ".txt", ".text"}


def _without_nul(doc: LoadedDocument) -> LoadedDocument:
    """NUL characters (binary junk in a Markdown file, some PDFs' extracted text) carry no meaning, and
    PostgreSQL refuses them in text columns: the whole run would fail on one stray byte."""
    if "\x00" not in doc.title and not any("\x00" in s.text or "\x00" in (s.heading or "") for s in doc.sections):
        return doc
    clean = [
        replace(s, text=s.text.replace("\x00", ""), heading=s.heading.replace("\x00", "") if s.heading else s.heading)
        for s in doc.sections
    ]
    return LoadedDocument(doc.title.replace("\x00", ""), clean)


def load(path: Path, data: bytes, limits: FileLimits = FileLimits()) -> LoadedDocument:
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise IngestError(f"{path.name}: unsupported file type {path.suffix or '(none)'}")
    if not data:
        raise IngestError(f"{path.name} is empty (0 bytes)")
    if path.suffix.lower() in _TEXT_FORMATS:  # parsing is what costs: refuse before it (1 byte ≥ 1 character)
        check_text_size(len(data), path.name, limits, unit="bytes")
    doc = _without_nul(loader(data, path, limits))
    if not any(s.text.strip() for s in doc.sections):
        raise IngestError(f"{path.name} contains no text")
    check_text_size(sum(len(s.text) for s in doc.sections), path.name, limits)
    check_chunks(len(doc.sections), path.name, limits)  # every section makes at least one chunk
    return doc
