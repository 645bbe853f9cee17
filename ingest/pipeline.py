"""Ingest files into a collection: load → chunk → skip unchanged → embed → upsert → drop stale.

A document is identified by collection + source path (relative to the folder given),
so re-running the same command leaves the same store: unchanged files are skipped
by content hash, changed files get their new chunks upserted and their old chunks
deleted. One bad file is reported and the batch goes on.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.errors import IngestError
from ingest.chunking import Chunk, Chunker
from ingest.loaders import LOADERS, load
from vectorstore.store import VectorStore

log = logging.getLogger(__name__)


class EmbedsDocuments(Protocol):
    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...


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
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def document_id(collection: str, source: str) -> str:
    return hashlib.sha1(f"{collection}\x00{source}".encode()).hexdigest()[:16]


def iter_files(paths: Iterable[Path]) -> Iterator[tuple[Path, str]]:
    """Yield (file, source) pairs; source is relative to the folder given, or the file name."""
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
            raise IngestError(f"{root} does not exist", code="path_not_found", http_status=404)


class IngestPipeline:
    def __init__(
        self,
        store: VectorStore,
        embedder: EmbedsDocuments,
        chunker: Chunker,
        *,
        max_file_bytes: int = 50 * 1024 * 1024,
    ):
        self.store = store
        self.embedder = embedder
        self.chunker = chunker
        self.max_file_bytes = max_file_bytes

    def ingest(
        self,
        paths: Iterable[Path],
        collection: str,
        on_file: Callable[[str, str], None] | None = None,
    ) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport(collection=collection)
        for path, source in iter_files(paths):
            if path.suffix.lower() not in LOADERS:
                report.skipped.append({"source": source, "reason": f"unsupported type {path.suffix or '(none)'}"})
                continue
            try:
                outcome = self._ingest_file(path, source, collection, report)
            except IngestError as exc:
                log.warning("failed %s: %s", source, exc.message)
                report.failed.append({"source": source, "error": exc.message})
                outcome = "failed"
            if on_file:
                on_file(source, outcome)
        report.seconds = round(time.perf_counter() - started, 3)
        log.info(
            "ingested into %r: %d added, %d updated, %d unchanged, %d failed, %d chunks embedded in %.1fs",
            collection,
            report.added,
            report.updated,
            report.unchanged,
            len(report.failed),
            report.chunks_embedded,
            report.seconds,
        )
        return report

    def _ingest_file(self, path: Path, source: str, collection: str, report: IngestReport) -> str:
        size = path.stat().st_size
        if size > self.max_file_bytes:
            raise IngestError(
                f"{source} is {size / 1e6:.1f} MB, over the {self.max_file_bytes / 1e6:.0f} MB limit "
                "(KB_LIMITS__MAX_FILE_MB)"
            )
        data = path.read_bytes()
        doc_hash = hashlib.sha256(data).hexdigest()
        doc_id = document_id(collection, source)
        existing = self.store.get_metadatas(collection, {"document_id": doc_id})
        if existing and all(m.get("doc_hash") == doc_hash for m in existing.values()):
            report.unchanged += 1
            return "unchanged"

        loaded = load(path, data)
        chunks = self.chunker.chunk(doc_id, loaded.sections)
        if not chunks:
            raise IngestError(f"{source} produced no text chunks")
        vectors = self.embedder.embed_documents([c.embedding_text() for c in chunks])
        metadatas = [self._metadata(c, collection, source, doc_id, doc_hash, loaded.title) for c in chunks]
        self.store.upsert(collection, [c.id for c in chunks], vectors, [c.text for c in chunks], metadatas)
        stale = sorted(set(existing) - {c.id for c in chunks})
        self.store.delete(collection, stale)
        report.chunks_embedded += len(chunks)
        if existing:
            report.updated += 1
            return "updated"
        report.added += 1
        return "added"

    @staticmethod
    def _metadata(chunk: Chunk, collection: str, source: str, doc_id: str, doc_hash: str, title: str) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "collection": collection,
            "source": source,
            "document_id": doc_id,
            "doc_hash": doc_hash,
            "title": title,
            "chunk_index": chunk.index,
            "content_hash": chunk.content_hash,
        }
        if chunk.page is not None:
            meta["page"] = chunk.page
        if chunk.heading:
            meta["heading"] = chunk.heading
        return meta
