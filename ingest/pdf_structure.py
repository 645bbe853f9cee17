"""What a PDF's text layer hides: its outline, its running headers and footers, its hyphenation.

A manual's pages carry lines that are not content: "Chapter 2: ASN.1 structure handling 3" at the
top of every page of a chapter, "Shared MIME-info Database" and a page number on every page. Kept,
they crowd every chunk with the same words, and taking the page's first line as its heading named
most pages after the running header. The outline (bookmarks) says which section each page belongs
to, so a chunk's heading is its section path ("2 ASN.1 structure handling > Naming"); and a word
hyphenated at a line end ("man-\\nagement") must be found by a search for the whole word.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)

EDGE_LINES = 2  # a running header or footer sits within the first or last two lines of a page
_PAGE_NUMBER = re.compile(r"^(?:page\s*)?(?:\d{1,4}|[ivxlcdm]{1,6})(?:\s*(?:of|/)\s*\d{1,4})?$", re.I)
_HYPHENATED = re.compile(r"(?<=[a-z])-\n(?=[a-z])")


def _normal(line: str) -> str:
    """A line with its numbers blanked: "Chapter 2: Naming 7" and "Chapter 2: Naming 8" are the same header."""
    return re.sub(r"\d+", "#", " ".join(line.split()).lower())


def _title(line: str) -> str:
    """A heading without its numbering: the outline says "ASN.1 syntax" where the page says "2.1 ASN.1 syntax"."""
    return re.sub(r"^(?:#[.#]*\s*)+", "", _normal(line))


def running_lines(pages: list[list[str]]) -> set[str]:
    """Normalised lines found at the top or bottom of pages: of at least 3 pages ("Shared MIME-info Database"),
    or of two pages in a row (a chapter's own header, "Chapter 2: ASN.1 structure handling 3", on a chapter
    of three pages)."""
    seen: Counter[str] = Counter()
    previous: tuple[set[str], set[str]] = (set(), set())
    twice_in_a_row: set[str] = set()
    for lines in pages:
        top = {_normal(line) for line in lines[:EDGE_LINES] if line.strip()}
        bottom = {_normal(line) for line in lines[-EDGE_LINES:] if line.strip()}
        seen.update(top | bottom)
        # same edge, and a header's length: "Step 2" / "Step 3" opening two pages is content
        twice_in_a_row |= {line for line in (top & previous[0]) | (bottom & previous[1]) if len(line.split()) >= 3}
        previous = (top, bottom)
    frequent = {line for line, count in seen.items() if count >= 3 and _header_like(line, count, len(pages))}
    return frequent | twice_in_a_row


def _header_like(line: str, count: int, pages: int) -> bool:
    """Whether a line repeated at page edges reads as a running header rather than repeated content: it has
    words (Maxima's "(%o1)" output labels and bare numbers like "2.5" are content), and a single word
    ("Note", "Tip" of an admonition) must open or close at least half the pages."""
    words = [w for w in re.findall(r"[a-z]{2,}", line)]
    if not words:
        return bool(_PAGE_NUMBER.match(line.replace("#", "1")))
    return len(line.split()) >= 2 or count * 2 >= pages


def clean_page(lines: list[str], running: set[str]) -> str:
    """The page's text without its running headers, footers and page numbers, hyphenation undone."""
    keep = list(lines)
    for index in [*range(min(EDGE_LINES, len(keep))), *range(max(0, len(keep) - EDGE_LINES), len(keep))]:
        line = keep[index].strip()
        if line and (_normal(line) in running or _PAGE_NUMBER.match(line)):
            keep[index] = ""
    text = "\n".join(line for line in keep if line.strip())
    return _HYPHENATED.sub("", text)


def outline(reader: Any) -> list[tuple[int, str, str]]:
    """The outline's entries in reading order: (page, title, path such as "Installing > Partitioning").
    Empty when the PDF has none or it cannot be read (a broken bookmark costs headings, never the document)."""
    entries: list[tuple[int, str, str]] = []

    def walk(items: list[Any], path: tuple[str, ...]) -> None:
        last: tuple[str, ...] = path
        for item in items:
            if isinstance(item, list):
                walk(item, last)
                continue
            title = " ".join(str(getattr(item, "title", "") or "").split())
            try:
                page = reader.get_destination_page_number(item) + 1
            except Exception:
                continue
            if title and page > 0:
                last = (*path, title)
                entries.append((page, title, " > ".join(last)))

    try:
        walk(list(reader.outline), ())
    except Exception as exc:
        log.info("PDF outline unreadable (%s): headings from page text", exc)
        return []
    return entries


def split_at_sections(text: str, starting: list[tuple[str, str]], current: str | None) -> list[tuple[str | None, str]]:
    """A page's text cut where the sections that start on it begin (a line that reads as the entry's title),
    each part with its section path; the part before the first is the section ``current`` at the page's
    top. A title not found in the text starts at the page's top (the outline says it is on this page)."""
    lines = text.splitlines()
    cuts: list[tuple[int, str]] = []
    at = 0
    for title, path in starting:
        wanted = _title(title)
        found = next((i for i in range(at, len(lines)) if wanted and _title(lines[i]).startswith(wanted)), None)
        if found is None:
            if not cuts or cuts[-1][0] == 0:
                cuts = [(0, path)]
            continue
        cuts.append((found, path))
        at = found + 1
    parts: list[tuple[str | None, str]] = []
    bounds: list[tuple[int, str | None]] = [(0, current), *cuts] if not cuts or cuts[0][0] > 0 else list(cuts)
    carried = ""  # a part that is only its title ("2 ASN.1 structure handling") opens the next one
    for (start, section), (end, _) in zip(bounds, [*bounds[1:], (len(lines), None)], strict=True):
        body = "\n".join(lines[start:end]).strip()
        if not body:
            continue
        if "\n" not in body and end < len(lines):
            carried += body + "\n"
            continue
        parts.append((section, carried + body))
        carried = ""
    if carried:
        parts.append((bounds[-1][1], carried.strip()))
    return parts
