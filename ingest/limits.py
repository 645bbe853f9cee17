"""Bounds on the work one file may cause, checked before the expensive step they protect.

A file within the size limit can still cost unbounded memory or CPU: a 1.6 MB DOCX whose
one zip member expands to 1.5 GiB, an 8 MB PDF of 50,000 pages, a Markdown file of a
million headings. Each bound is checked as early as it can be (zip headers before any
member is read, the page count before any page is extracted, the raw size of a text
format before it is parsed) and refuses the file with a reason that names the limit and
the setting that raises it; the rest of the batch goes on.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from app.errors import IngestError


@dataclass(frozen=True)
class FileLimits:
    max_pages: int = 5_000
    max_text_chars: int = 20_000_000
    max_chunks: int = 50_000
    max_unzipped_bytes: int = 100 * 1024 * 1024
    max_compression_ratio: float = 100.0


def too_much(name: str, what: str, setting: str) -> IngestError:
    return IngestError(f"{name} {what}; raise KB_LIMITS__{setting} to ingest it", code=IngestError.FILE_OVER_LIMIT)


def check_zip(data: bytes, name: str, limits: FileLimits) -> None:
    """Refuse a zip (DOCX) whose members would expand beyond the limits, from its headers alone.

    The declared sizes are enough: Python's zipfile never inflates a member past its declared size
    (a member that lies fails its CRC check and is refused as unreadable).
    """
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise IngestError(f"{name} is not a readable DOCX file ({exc})") from exc
    total = sum(m.file_size for m in members)
    if total > limits.max_unzipped_bytes:
        raise too_much(
            name,
            f"would expand to {total / 2**20:.0f} MB, over the {limits.max_unzipped_bytes / 2**20:.0f} MB limit "
            "(a zip bomb?)",
            "MAX_UNZIPPED_MB",
        )
    for m in members:
        if m.file_size > 1024 * 1024 and m.file_size > limits.max_compression_ratio * max(m.compress_size, 1):
            raise too_much(
                name,
                f"has a part ({m.filename}) compressed {m.file_size / max(m.compress_size, 1):.0f}:1, over the "
                f"{limits.max_compression_ratio:.0f}:1 limit (a zip bomb?)",
                "MAX_COMPRESSION_RATIO",
            )


def check_text_size(amount: int, name: str, limits: FileLimits, unit: str = "characters") -> None:
    """Text formats are checked on their raw bytes before parsing, every format on its text after."""
    if amount > limits.max_text_chars:
        raise too_much(
            name,
            f"holds {amount / 1e6:.1f} million {unit} of text, over the {limits.max_text_chars / 1e6:.0f} million "
            "limit",
            "MAX_TEXT_MB_PER_FILE",
        )


def check_pages(pages: int, name: str, limits: FileLimits) -> None:
    if pages > limits.max_pages:
        raise too_much(name, f"has {pages:,} pages, over the {limits.max_pages:,} page limit", "MAX_PAGES_PER_FILE")


def check_chunks(chunks: int, name: str, limits: FileLimits) -> None:
    if chunks > limits.max_chunks:
        raise too_much(
            name, f"makes {chunks:,} chunks, over the {limits.max_chunks:,} chunk limit", "MAX_CHUNKS_PER_FILE"
        )
