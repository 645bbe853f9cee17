"""Collection and document management shared by the CLI and the admin API (``CollectionAdmin``).

Deletes go through the manifest as well as the vector store, so a deleted document
is gone for readers, for re-ingestion decisions and for listings alike.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from app.errors import CollectionNotFoundError, DocumentBusyError, DocumentNotFoundError, InvalidCollectionNameError
from ingest.files import document_id
from ingest.repair import sweep_document
from vectorstore.lexical import LexicalIndex
from vectorstore.manifest import Manifest
from vectorstore.store import CollectionMissing, VectorStore, validate_collection_name
from vectorstore.writers import new_owner

log = logging.getLogger(__name__)


def _missing(name: str) -> CollectionNotFoundError:
    return CollectionNotFoundError(f"collection {name!r} does not exist (see: kb collections list)")


class CollectionAdmin:
    """What an admin does to collections and documents, over the stores that hold them.

    Routes and CLI commands call this and nothing below it: a delete must reach the vector store, the
    BM25 index and the manifest together, under the document's claim, whoever asks for it."""

    def __init__(self, store: VectorStore, manifest: Manifest, lexical: LexicalIndex | None = None):
        self.store = store
        self.manifest = manifest
        self.lexical = lexical

    @staticmethod
    def checked_name(collection: str) -> str:
        """The collection name as stored, or a 422 saying what a name may hold."""
        try:
            return validate_collection_name(collection)
        except ValueError as exc:
            raise InvalidCollectionNameError(str(exc)) from exc

    def collections(self) -> list[dict[str, Any]]:
        counts = self.manifest.collections()
        return [
            {"name": c.name, "documents": counts.get(c.name, (0, 0))[0], "chunks": c.chunks}
            for c in self.store.list_collections()
        ]

    def documents(self, collection: str) -> list[dict[str, Any]]:
        if not self.store.exists(collection):
            raise _missing(collection)
        return [
            {
                "source": r.source,
                "document_id": r.document_id,
                "chunks": len(r.chunk_ids),
                "size_bytes": r.size_bytes,
                "title": r.title,
                "doc_hash": r.doc_hash,
                "updated_at": dt.datetime.fromtimestamp(r.updated_at, dt.UTC).isoformat(timespec="seconds"),
            }
            for r in self.manifest.documents(collection)
        ]

    def passages(self, collection: str, source: str, page: int | None = None) -> list[tuple[int | None, str]]:
        """A document's passages (page, text) in reading order, of its live version only; with ``page``, the
        passages that start on that page. What an MCP client reads as ``kb://collection/source#page=N``."""
        if not self.store.exists(collection):
            raise _missing(collection)
        record = self.manifest.get(collection, source)
        if record is None:
            raise DocumentNotFoundError(f"no document {source!r} in collection {collection!r}")
        found = sorted(self.store.get_records(collection, record.chunk_ids).values(),
                       key=lambda row: row[1].get("chunk_index", 0))  # fmt: skip
        chosen = [(meta.get("page"), text) for text, meta in found if page is None or meta.get("page") == page]
        if page is not None and not chosen:
            pages = sorted({meta["page"] for _, meta in found if "page" in meta})
            has = f"its pages are {pages[0]} to {pages[-1]}" if pages else "it has no pages"
            raise DocumentNotFoundError(f"no passage of {source!r} in {collection!r} starts on page {page} ({has})")
        return chosen

    def delete_document(self, collection: str, source: str) -> int:
        """Delete a document's chunks, then its manifest row; returns chunks deleted."""
        if not self.store.exists(collection):
            raise _missing(collection)
        manifest = self.manifest
        record = manifest.get(collection, source)
        if record is None:
            raise DocumentNotFoundError(f"no document {source!r} in collection {collection!r} (see: kb documents list)")
        owner = new_owner()  # an ingestion writing this document right now would rewrite it under our feet
        if not manifest.claim(collection, source, record.document_id, record.doc_hash, owner, 60.0).held:
            raise DocumentBusyError(
                f"{source!r} in {collection!r} is being ingested right now; delete it when that ingestion has finished"
            )
        try:
            deleted = sweep_document(self.store, self.lexical, collection, document_id(collection, source), ())
            manifest.remove(collection, source)
        finally:
            manifest.release(collection, source, owner)
        log.info("deleted document %r from %r (%d chunks)", source, collection, deleted)
        return deleted

    def delete_collection(self, collection: str) -> None:
        try:
            self.store.delete_collection(collection)
        except CollectionMissing as exc:
            raise _missing(collection) from exc
        if self.lexical is not None:
            self.lexical.delete_collection(collection)
        self.manifest.remove_collection(collection)
        log.info("deleted collection %r", collection)
