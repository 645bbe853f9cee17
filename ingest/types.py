"""What the ingestion pipeline passes around: the report it returns, where it reports progress,
and a document on its way into the stores."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ingest.chunking import Chunk
from vectorstore.manifest import DocumentRecord

T = TypeVar("T")
R = TypeVar("R")


class EmbedsDocuments(Protocol):
    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...


class Progress(Protocol):
    """Where the pipeline reports progress (a rich bar on a terminal, log lines otherwise)."""

    def start(self, total_files: int) -> None: ...

    def file_done(self, source: str, outcome: str, chunks: int) -> None: ...

    def embedded(self, chunks: int) -> None: ...


@dataclass
class IngestReport:
    collection: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_written: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Pending:
    source: str
    doc_id: str
    doc_hash: str
    size: int
    title: str
    chunks: list[Chunk]
    previous: DocumentRecord | None
    repair: bool = False  # unchanged, but chunks are missing from the store: write them again


@dataclass
class Outcome:
    source: str
    kind: str  # skipped | failed | unchanged | queued
    reason: str = ""
    pending: Pending | None = None
    previous: DocumentRecord | None = None
    path: Path | None = None  # unchanged files: to read again if their chunks turn out to be missing


def prefetch(pool: ThreadPoolExecutor, items: list[T], fn: Callable[[T], R], ahead: int) -> Iterator[R]:
    """``map`` with at most ``ahead`` results in flight, so memory stays bounded on big folders."""
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
