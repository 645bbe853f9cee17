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

# A page number: digits ("12", "Page 3 of 40") or a lower-case roman numeral (front matter); an upper-case
# "V" or "X" alone on a line is an index letter or an axis label.
_PAGE_NUMBER = re.compile(r"^(?:(?:page\s*)?\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?|[ivxlcdm]{1,6})$")
_HYPHENATED = re.compile(r"(?<=[a-z])-\n(?=[a-z])")
_COMPOUND = re.compile(r"\b[a-z]+-[a-z]+\b")


def _normal(line: str) -> str:
    """A line with its numbers blanked: "Chapter 2: Naming 7" and "Chapter 2: Naming 8" are the same header."""
    text = " ".join(line.split()).lower().translate(_QUOTES)
    return re.sub(r"\d+", "#", text)


_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
# Section numbering in front of a title: "2.1", "A.2", "IV.", "Appendix B", "Chapter 3:".
_NUMBERING = re.compile(r"^(?:(?:appendix|chapter|part|section)\s+)?(?:#|[a-z]|[ivx]+)(?:\.#)*\.?:?\s+")


def section_title(line: str) -> str:
    """A heading without its numbering: the outline says "ASN.1 syntax" where the page says "2.1 ASN.1 syntax"."""
    return _NUMBERING.sub("", _normal(line), count=1).strip()


_title = section_title


def _edges(lines: list[str]) -> tuple[list[int], list[int]]:
    """Where a running header or footer may be (line indexes): the first and the last line, and the one after
    (before) a bare page number ("3" then "Chapter 1: Intro"). A page's second line is content otherwise."""
    text = [i for i, line in enumerate(lines) if line.strip()]
    top, bottom = text[:1], text[-1:]
    if len(text) > 2 and _PAGE_NUMBER.match(lines[text[0]].strip()):
        top.append(text[1])
    if len(text) > 2 and _PAGE_NUMBER.match(lines[text[-1]].strip()):
        bottom.append(text[-2])
    return top, bottom


def running_lines(pages: list[list[str]]) -> set[str]:
    """Normalised lines found at the top or bottom of pages: of at least 3 pages ("Shared MIME-info Database"),
    or of two pages in a row (a chapter's own header, "Chapter 2: ASN.1 structure handling 3", on a chapter
    of three pages)."""
    seen: Counter[str] = Counter()
    previous: tuple[set[str], set[str]] = (set(), set())
    twice_in_a_row: set[str] = set()
    for lines in pages:
        top_at, bottom_at = _edges(lines)
        top, bottom = {_normal(lines[i]) for i in top_at}, {_normal(lines[i]) for i in bottom_at}
        seen.update(top | bottom)
        # same edge, and a header's length: "Step 2" / "Step 3" opening two pages is content
        twice_in_a_row |= {line for line in (top & previous[0]) | (bottom & previous[1]) if len(line.split()) >= 3}
        previous = (top, bottom)
    frequent = {line for line, count in seen.items() if count >= 3 and _header_like(line, count, len(pages))}
    return frequent | twice_in_a_row


_NUMBERED = re.compile(
    r"^(?:(\d{1,5})\s+\S.*|.*\S\s+(\d{1,5}))$"
)  # "2 .Device", "array 27": a header with the page number


def page_number_offset(pages: list[list[str]]) -> int | None:
    """The printed page number minus the page's position, when page edges carry it inside a header that
    changes from page to page (R's reference manual: "2 .Device" then ".Devices 3", the topic and the page):
    such a line is found at an edge of at least a third of the pages with the same offset."""
    offsets: Counter[int] = Counter()
    for position, lines in enumerate(pages, start=1):
        top, bottom = _edges(lines)
        found = {
            int(m.group(1) or m.group(2)) - position
            for i in {*top, *bottom}
            if (m := _NUMBERED.match(lines[i].strip()))
        }
        offsets.update(found)
    if not offsets:
        return None
    offset, count = offsets.most_common(1)[0]
    return offset if count >= 3 and count * 3 >= len(pages) else None


def _numbered_header(line: str, printed: int | None, titles: frozenset[str]) -> bool:
    """A short line carrying the page's printed number; not a section's own title ("1 Introduction" opening
    page 1) nor a footnote ("3 currently, top-level files..." at the foot of page 3)."""
    match = _NUMBERED.match(line.strip()) if printed is not None else None
    if match is None or int(match.group(1) or match.group(2)) != printed:
        return False
    return len(line.split()) <= 8 and not line.rstrip().endswith(".") and _title(line) not in titles


def _header_like(line: str, count: int, pages: int) -> bool:
    """Whether a line repeated at page edges reads as a running header rather than repeated content: it has
    words (Maxima's "(%o1)" output labels and bare numbers like "2.5" are content), and a single word
    ("Note", "Tip" of an admonition) must open or close at least half the pages."""
    words = re.findall(r"[a-z]{2,}", line)
    if not words:
        return bool(_PAGE_NUMBER.match(line.replace("#", "1")))
    return len(line.split()) >= 2 or count * 2 >= pages


def compounds(pages: list[list[str]]) -> set[str]:
    """Hyphenated words the document writes inside a line ("command-line"): a line-end hyphen inside one of
    them is the word's own, not the typesetter's."""
    return {m.group(0) for lines in pages for line in lines for m in _COMPOUND.finditer(line.lower())}


def clean_page(
    lines: list[str],
    running: set[str],
    keep_hyphens: frozenset[str] | set[str] = frozenset(),
    printed: int | None = None,
    titles: frozenset[str] = frozenset(),
) -> str:
    """The page's text without its running headers, footers and page numbers, hyphenation undone (not in an
    option such as "--no-site-file" nor in a compound the document writes with its hyphen elsewhere).
    ``printed``: the page's printed number, when the document's headers carry it (``page_number_offset``);
    ``titles``: the outline's titles (``_title`` form), which are content wherever they are.
    A page made only of such lines keeps them: its content is what repeats."""
    top, bottom = _edges(lines)
    gone = {
        i
        for i in {*top, *bottom}
        if _normal(lines[i]) in running
        or _PAGE_NUMBER.match(lines[i].strip())
        or _numbered_header(lines[i], printed, titles)
    }
    keep = [line for i, line in enumerate(lines) if i not in gone]
    if not any(line.strip() for line in keep):
        keep = list(lines)
    text = "\n".join(line for line in keep if line.strip())
    return _HYPHENATED.sub(lambda m: _unhyphenate(text, m, keep_hyphens), text)


def _unhyphenate(text: str, match: re.Match[str], keep_hyphens: frozenset[str] | set[str]) -> str:
    before = re.search(r"(\S*)$", text[: match.start()])
    after = re.match(r"[a-z]+", text[match.end() :])
    head = before.group(1) if before else ""
    if head.startswith("-") or f"{head.lower()}-{after.group(0) if after else ''}".lstrip("(\"'") in keep_hyphens:
        return "-"
    return ""


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


def document_title(metadata_title: object, entries: list[tuple[int, str, str]], first_page: list[str]) -> str | None:
    """The PDF's title: its metadata's, else the outline's single root entry, else a title page's first line
    (short, with letters, not a sentence or a page number); None when none of them gives one."""
    title = " ".join(str(metadata_title or "").split())
    if title:
        return title
    roots = {path.split(" > ")[0] for _, _, path in entries}
    if len(roots) == 1 and len(entries) > 1:
        return roots.pop()
    first = " ".join(first_page[0].split()) if first_page else ""
    if 2 <= len(first) <= 80 and any(c.isalpha() for c in first) and not first.endswith((".", ",", ";")):
        return None if _PAGE_NUMBER.match(first.lower()) else first
    return None


def _finds(lines: list[str], at: int, title: str) -> int | None:
    """The line from ``at`` on where a section titled ``title`` begins: the line reads as the title without
    its numbering, or does with the next line (a title wrapped over two), or starts with a section number
    and the title ("3.2.1 if", not the prose "If the statement..." for the outline's "if")."""
    wanted = _title(title)
    if not wanted:
        return None
    for i in range(at, len(lines)):
        normal = _normal(lines[i])
        bare = _NUMBERING.sub("", normal, count=1).strip()
        if bare == wanted or (bare != normal and bare.startswith(wanted)):
            return i
        if i + 1 < len(lines) and wanted.startswith(bare) and bare and _title(f"{lines[i]} {lines[i + 1]}") == wanted:
            return i
    return None


def split_at_sections(text: str, starting: list[tuple[str, str]], current: str | None) -> list[tuple[str | None, str]]:
    """A page's text cut where the sections that start on it begin (a line that reads as the entry's title),
    each part with its section path; the part before the first is the section ``current`` at the page's top.
    A title not found in the text cuts nothing: its section begins somewhere the text does not show."""
    lines = text.splitlines()
    cuts: list[tuple[int, str | None]] = []
    at = 0
    for title, path in starting:
        found = _finds(lines, at, title)
        if found is not None:
            cuts.append((found, path))
            at = found + 1
    if not cuts or cuts[0][0] > 0:
        cuts.insert(0, (0, current))
        opened_by_title = [False] + [True] * (len(cuts) - 1)
    else:
        opened_by_title = [True] * len(cuts)
    parts: list[tuple[str | None, str]] = []
    carried = ""  # a part that is only its title ("2 ASN.1 structure handling") opens the next one
    ends = [start for start, _ in cuts[1:]] + [len(lines)]
    for (start, section), end, titled in zip(cuts, ends, opened_by_title, strict=True):
        body = "\n".join(lines[start:end]).strip()
        if not body:
            continue
        if titled and "\n" not in body and end < len(lines):
            carried += body + "\n"
            continue
        parts.append((section, carried + body))
        carried = ""
    if carried:
        parts.append((cuts[-1][1], carried.strip()))
    return parts
