"""Real PDF manuals from Debian's documentation packages, cut into small real PDFs for tests.

``make test`` installs the packages (scripts/system-deps.sh). Cutting keeps each page as it
is (its text layer, fonts, hyphenation and running headers), so the pieces are real PDFs
of real manuals, only shorter: an ingestion test of twenty of them takes seconds, not minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

MANUALS = (
    Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf"),  # 36 pages
    Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"),  # 17 pages
)


@dataclass(frozen=True)
class Probe:
    """A line of one page of a cut PDF: asking for it must find that file and page."""

    source: str
    page: int
    text: str


def cut_manuals(folder: Path, count: int = 20) -> tuple[list[Path], list[Probe]]:
    """``count`` PDFs of consecutive pages of the manuals, and one probe line per PDF."""
    missing = [str(m) for m in MANUALS if not m.is_file()]
    if missing:
        pytest.skip(f"real PDF manuals not installed: {', '.join(missing)} (make test installs them as root)")
    readers = [PdfReader(m) for m in MANUALS]
    total = sum(len(r.pages) for r in readers)
    parts: list[tuple[Path, PdfReader, range]] = []  # each PDF: consecutive pages of one manual
    for i, (manual, reader) in enumerate(zip(MANUALS, readers, strict=True)):
        n = len(reader.pages)
        share = count - len(parts) if i == len(MANUALS) - 1 else max(1, round(count * n / total))
        parts += [(manual, reader, range(k * n // share, (k + 1) * n // share)) for k in range(share)]
    folder.mkdir(parents=True, exist_ok=True)
    paths, probes = [], []
    for manual, reader, pages in parts:
        writer = PdfWriter()
        for i in pages:
            writer.add_page(reader.pages[i])
        path = folder / f"{manual.stem}-p{pages[0] + 1:02d}-{pages[-1] + 1:02d}.pdf"
        with path.open("wb") as out:
            writer.write(out)
        paths.append(path)
        lines = [
            (sum(w.isalpha() for w in line.split()), page, line.strip())
            for page, i in enumerate(pages, start=1)
            for line in (reader.pages[i].extract_text() or "").splitlines()
        ]
        best = max((c for c in lines if c[0] >= 6), default=None)  # most words: no table-of-contents dots
        if best is not None:
            probes.append(Probe(path.name, best[1], best[2]))
    return paths, probes
