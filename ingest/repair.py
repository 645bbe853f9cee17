"""Sweeping what crashes and lost races leave in the stores, and checking a collection is whole.

Chunks are written before their version goes live, so a writer killed in between leaves
chunks no manifest row vouches for. Readers never show them, but they cost space and
can crowd real candidates out of a search, so they are swept:
- at the start of every ingestion and server start: the versions named by claims whose
  writer is gone (cheap: one filtered delete per abandoned document);
- by ``kb collections repair``: a full scan for chunks of any version that is not live
  (left by a crash of an older kb, or by a writer that lost its claim), plus a list of
  live documents whose chunks are missing (the next ``kb ingest`` of their files rewrites them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vectorstore.lexical import LexicalIndex
from vectorstore.manifest import DocumentRecord, Manifest
from vectorstore.store import VectorStore
from vectorstore.writers import new_owner

log = logging.getLogger(__name__)
_TTL_S = 60.0


def sweep_document(
    store: VectorStore, lexical: LexicalIndex | None, collection: str, document_id: str, keep: Iterable[str]
) -> int:
    """Delete every chunk of the document outside ``keep`` (the live version's ids) from both indexes."""
    keep = set(keep)
    stale = sorted(set(store.get_ids(collection, {"document_id": document_id})) - keep)
    store.delete(collection, stale)
    if lexical is not None:
        lexical.sweep_document(collection, document_id, keep)
    return len(stale)


def missing_chunks(
    store: VectorStore, lexical: LexicalIndex | None, collection: str, records: Sequence[DocumentRecord]
) -> dict[str, int]:
    """source → chunks of its live version missing from either index (two by-id lookups for all of them)."""
    ids = [cid for r in records for cid in r.chunk_ids]
    if not ids:
        return {}
    in_store = store.existing_ids(collection, ids)
    in_lexical = lexical.present(collection, ids) if lexical is not None else in_store
    counts = {r.source: sum(cid not in in_store or cid not in in_lexical for cid in r.chunk_ids) for r in records}
    return {source: n for source, n in counts.items() if n}


def sweep_abandoned(
    store: VectorStore, manifest: Manifest, lexical: LexicalIndex | None, collection: str | None = None
) -> int:
    """Sweep the never-live versions of writers that are gone; returns chunks deleted."""
    deleted = swept_docs = 0
    for row in manifest.abandoned(collection):
        owner = new_owner()
        claim = manifest.claim(row.collection, row.source, row.document_id, row.doc_hash, owner, _TTL_S)
        if not claim.held:  # another writer took it over meanwhile: it sweeps
            continue
        current = manifest.get(row.collection, row.source)
        keep = current.chunk_ids if current else ()
        count = sweep_document(store, lexical, row.collection, row.document_id, keep)
        manifest.release(row.collection, row.source, owner, clean=current is not None)
        deleted += count
        swept_docs += 1
        log.info(
            "swept %d chunks of %s in %r that a stopped ingestion (%s) never made live",
            count, row.source, row.collection, row.owner,
        )  # fmt: skip
    if swept_docs:
        log.warning(
            "swept %d chunks of %d documents that stopped ingestions never made live%s",
            deleted, swept_docs, f" in {collection!r}" if collection else "",
        )  # fmt: skip
    return deleted


def sweep_orphans(store: VectorStore, manifest: Manifest, lexical: LexicalIndex | None, collection: str) -> int:
    """Delete chunks of versions that are neither live nor being written; returns chunks deleted.

    The reads are ordered so that a concurrent writer's chunks are never taken for orphans: a
    chunk in the snapshot was written after its writer claimed the document, and the claim is
    released only after the version went live, so it shows in the claims read next or in the
    manifest read last.
    """
    snapshot = {
        cid: (m.get("document_id"), m.get("doc_hash")) for cid, m in store.get_metadatas(collection, {}).items()
    }
    in_lexical = lexical.versions(collection) if lexical is not None else {}
    writing = {(w.document_id, w.doc_hash) for w in manifest.writers(collection)}
    live = {(r.document_id, r.doc_hash) for r in manifest.documents(collection)}
    orphans = [cid for cid, key in snapshot.items() if key not in live and key not in writing]
    store.delete(collection, orphans)
    if lexical is not None:
        lexical.delete_ids(
            collection, [cid for cid, key in in_lexical.items() if key not in live and key not in writing]
        )
    return len(orphans)


@dataclass
class RepairReport:
    collection: str
    abandoned_chunks_swept: int = 0
    orphan_chunks_swept: int = 0
    incomplete: list[dict[str, Any]] = field(default_factory=list)  # live documents missing chunks

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def repair(store: VectorStore, manifest: Manifest, lexical: LexicalIndex | None, collection: str) -> RepairReport:
    """Sweep everything readers cannot see, and list live documents whose chunks are missing."""
    report = RepairReport(collection)
    report.abandoned_chunks_swept = sweep_abandoned(store, manifest, lexical, collection)
    report.orphan_chunks_swept = sweep_orphans(store, manifest, lexical, collection)
    records = manifest.documents(collection)
    missing = missing_chunks(store, lexical, collection, records)
    report.incomplete = [
        {"source": r.source, "chunks": len(r.chunk_ids), "missing": missing[r.source]}
        for r in records
        if r.source in missing
    ]
    return report
