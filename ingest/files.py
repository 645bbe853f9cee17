"""Which files an ingest run sees, and the stable identity of each document."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from app.errors import IngestError


def document_id(collection: str, source: str) -> str:
    """A document is collection + source path; the id is stable across runs and machines."""
    return hashlib.sha1(f"{collection}\x00{source}".encode()).hexdigest()[:16]


def iter_files(paths: Iterable[Path]) -> Iterator[tuple[Path, str]]:
    """Yield (file, source) pairs; source is relative to the folder given, or the file name.

    Hidden files and folders (``.git``, ``.DS_Store``) are skipped.
    """
    for root in paths:
        if root.is_dir():
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                rel = path.relative_to(root)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                yield path, rel.as_posix()
        elif root.is_file():
            yield root, root.name
        else:
            raise IngestError(f"{root} does not exist", code=IngestError.PATH_NOT_FOUND, http_status=404)
