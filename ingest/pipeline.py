"""Ingest files into a collection: incremental, idempotent, crash-safe, batched.

Per file: size check → content hash → unchanged (manifest says so) → skip; else
load → chunk (deterministic ids) → queue. Queued chunks of many documents are
embedded together (the embedding cache skips texts seen before), upserted in one
call, then each document is switched live in the manifest and its previous
version's chunks are deleted (see vectorstore/manifest.py for why this order is
atomic for readers and converges after a crash). One bad file is reported with
its reason and the batch goes on.

Each document is claimed in the manifest before its chunks are written and released
after its old version is swept (vectorstore/writers.py): a concurrent ingestion of the
same document waits for the claim instead of deleting this one's chunks. An unchanged
document whose chunks are missing from either index is written again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from app import tracing
from app.errors import IngestError, InvalidCollectionNameError
from ingest.chunking import Chunk, Chunker, section_vectors
from ingest.files import document_id, iter_files
from ingest.limits import FileLimits, check_chunks
from ingest.loaders import LOADERS, load
from ingest.repair import missing_chunks, sweep_abandoned, sweep_document, sweep_orphans
from ingest.types import EmbedsDocuments, IngestReport, Outcome, Pending, Progress, prefetch
from vectorstore.chunk_meta import ChunkMetadata
from vectorstore.lexical import LexicalIndex
from vectorstore.manifest import DocumentRecord, Manifest
from vectorstore.store import VectorStore, validate_collection_name
from vectorstore.writers import Claim, Heartbeat, LeaseLost, new_owner, wait_for

log = logging.getLogger(__name__)
_VERIFY_BATCH = 256  # unchanged files checked together
_EMBED_SLICE = 64  # chunks embedded between two progress reports
_TRACED_COUNTS = ("added", "updated", "unchanged", "deleted", "chunks_embedded")  # the run's span says them


class IngestPipeline:
    def __init__(
        self,
        store: VectorStore,
        embedder: EmbedsDocuments,
        chunker: Chunker,
        manifest: Manifest,
        *,
        max_file_bytes: int,
        batch_chunks: int,
        claim_ttl_s: float,
        lexical: LexicalIndex | None = None,
        limits: FileLimits | None = None,
        exclusive: Callable[[], AbstractContextManager[None]] | None = None,
    ):
        self.store = store
        self.embedder = embedder
        self.chunker = chunker
        self.manifest = manifest
        self.max_file_bytes = max_file_bytes
        self.batch_chunks = batch_chunks
        self.lexical = lexical  # BM25 side of hybrid search: written and swept with the vector store
        self.claim_ttl_s = claim_ttl_s  # a crashed writer's claims free up after this (renewed while alive)
        self.limits = limits or FileLimits()
        self.exclusive = exclusive or nullcontext  # embedded stores: one writing process at a time
        self._owner = ""
        self._deferred: list[Pending] = []
        self._unverified: list[Outcome] = []  # unchanged files whose chunks are checked in bulk

    def ingest(
        self, paths: Iterable[Path], collection: str, *, prune: bool = False, progress: Progress | None = None
    ) -> IngestReport:
        try:
            collection = validate_collection_name(collection)
        except ValueError as exc:
            raise InvalidCollectionNameError(str(exc)) from exc
        started = time.perf_counter()
        report = IngestReport(collection=collection)
        files = list(iter_files(paths))
        run_id = self.manifest.start_run(collection)
        if progress:
            progress.start(len(files))
        with tracing.span("kb.ingest", {"kb.collection": collection, "kb.files": len(files)}) as span:
            with self.exclusive():
                sweep_abandoned(self.store, self.manifest, self.lexical, collection)
                self._owner, self._deferred, self._unverified = new_owner(), [], []
                try:
                    with Heartbeat(self.manifest, self._owner, self.claim_ttl_s):
                        self._ingest_files(files, collection, report, progress)
                finally:  # a failed or cancelled run: what it still claims is swept by the next one
                    self._deferred, self._unverified = [], []
                    self.manifest.abandon_owner(self._owner)
                if prune:
                    self._prune(collection, {source for _, source in files}, report)
            if span is not None:
                span.set_attributes({f"kb.{k}": getattr(report, k) for k in _TRACED_COUNTS})
                span.set_attribute("kb.failed", len(report.failed))
        report.seconds = round(time.perf_counter() - started, 3)
        self.manifest.finish_run(run_id, "failed" if report.failed else "ok", report.as_dict())
        log.info(
            "ingest %r: %d added, %d updated, %d unchanged, %d deleted, %d skipped, %d failed, "
            "%d chunks embedded in %.1fs",
            collection, report.added, report.updated, report.unchanged, report.deleted, len(report.skipped),
            len(report.failed), report.chunks_embedded, report.seconds,
        )  # fmt: skip
        return report

    def _ingest_files(
        self, files: list[tuple[Path, str]], collection: str, report: IngestReport, progress: Progress | None
    ) -> None:
        queue: list[Pending] = []
        # Parse the next files in a worker thread while this one embeds (torch releases the GIL).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-parse") as pool:
            try:
                parent = tracing.current_context()  # the pool's thread does not inherit it
                examined = prefetch(
                    pool, files, lambda f: self._examine_traced(f[0], f[1], collection, parent), ahead=16
                )
                for outcome in examined:
                    self._record(outcome, collection, report, queue)
                    if outcome.kind in ("skipped", "failed") and progress:
                        progress.file_done(outcome.source, outcome.kind, 0)
                    if len(self._unverified) >= _VERIFY_BATCH:
                        self._verify(collection, report, queue, progress)
                    if sum(len(p.chunks) for p in queue) >= self.batch_chunks:
                        self._flush(collection, queue, report, progress)
                self._verify(collection, report, queue, progress)
            except BaseException:  # cancelled or failed: do not parse the files still queued
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        self._flush(collection, queue, report, progress)
        # Documents another writer was busy with: wait for each (holding no claim meanwhile, so two
        # runs waiting on each other's documents cannot deadlock), then write ours over theirs.
        for pending in self._deferred:
            log.info("waiting for another ingestion of %s in %r to finish", pending.source, collection)
            claim = wait_for(
                lambda p=pending: self._claim(collection, p),  # type: ignore[misc]
                on_wait=(lambda: progress.embedded(0)) if progress else None,  # a job's cancel check
            )
            if self._settle(collection, pending, claim.live_hash, claim.abandoned_hash):
                report.unchanged += 1
                if progress:
                    progress.file_done(pending.source, "unchanged", 0)
                continue
            self._flush(collection, [pending], report, progress, claimed=True)
        self._deferred = []

    def _claim(self, collection: str, pending: Pending) -> Claim:
        return self.manifest.claim(
            collection, pending.source, pending.doc_id, pending.doc_hash, self._owner, self.claim_ttl_s
        )

    def _examine_traced(self, path: Path, source: str, collection: str, parent: Any) -> Outcome:
        """``_examine`` as the document's span: its source, what it needs (outcome), its chunks or error."""
        if parent is None:
            return self._examine(path, source, collection)
        with tracing.span("kb.ingest.document", {"kb.source": source}, context=parent) as span:
            outcome = self._examine(path, source, collection)
            chunks = len(outcome.pending.chunks) if outcome.pending is not None else None
            tracing.set_attributes(span, {"kb.outcome": outcome.kind, "kb.chunks": chunks,
                                          "kb.reason": outcome.reason or None})  # fmt: skip
            return outcome

    def _examine(self, path: Path, source: str, collection: str, *, repair: bool = False) -> Outcome:
        """Decide what a file needs and do the parsing; touches no shared state but reads the manifest.

        ``repair``: the file is unchanged but its chunks are missing from the store: parse it anyway."""
        if path.suffix.lower() not in LOADERS:
            return Outcome(source, "skipped", f"unsupported type {path.suffix or '(none)'}")
        try:
            size = path.stat().st_size
            if size > self.max_file_bytes:
                raise IngestError(
                    f"{source} is {size / 1e6:.1f} MB, over the {self.max_file_bytes / 1e6:.0f} MB limit "
                    "(raise KB_LIMITS__MAX_FILE_MB to ingest it)"
                )
            data = path.read_bytes()
            doc_hash = hashlib.sha256(self.chunker.signature.encode() + data).hexdigest()
            previous = self.manifest.get(collection, source)
            if previous is not None and previous.doc_hash == doc_hash and not repair:
                return Outcome(source, "unchanged", previous=previous, path=path)
            doc_id = document_id(collection, source)
            loaded = load(path, data, self.limits)
            chunks = self.chunker.chunk(doc_id, loaded.sections, doc_hash, loaded.title)
            check_chunks(len(chunks), source, self.limits)
            if not chunks:
                raise IngestError(f"{source} produced no text chunks")
        except IngestError as exc:
            return Outcome(source, "failed", exc.message)
        except OSError as exc:
            return Outcome(source, "failed", f"cannot read {source}: {exc.strerror or exc}")
        except Exception as exc:  # a parser bug on one odd file must not end the batch
            log.exception("unexpected error parsing %s", source)
            return Outcome(source, "failed", f"{source} could not be parsed ({type(exc).__name__}: {exc})")
        pending = Pending(source, doc_id, doc_hash, size, loaded.title, chunks, previous, repair)
        return Outcome(source, "queued", pending=pending)

    def _complete(self, collection: str, record: DocumentRecord) -> bool:
        """Every chunk the manifest lists for the live version is in both indexes (a by-id lookup)."""
        return not missing_chunks(self.store, self.lexical, collection, [record])

    def _record(self, outcome: Outcome, collection: str, report: IngestReport, queue: list[Pending]) -> None:
        if outcome.kind == "skipped":
            report.skipped.append({"source": outcome.source, "reason": outcome.reason})
        elif outcome.kind == "failed":
            log.warning("cannot ingest %s: %s", outcome.source, outcome.reason)
            report.failed.append({"source": outcome.source, "error": outcome.reason})
        elif outcome.kind == "unchanged":
            self._unverified.append(outcome)
        elif outcome.pending is not None:
            queue.append(outcome.pending)

    def _verify(self, collection: str, report: IngestReport, queue: list[Pending], progress: Progress | None) -> None:
        """Unchanged files, checked in bulk (two by-id lookups): is every chunk of the live version in both
        indexes? One that lost chunks (a lost race, a restored backup) is parsed and written again."""
        batch, self._unverified = self._unverified, []
        missing = missing_chunks(self.store, self.lexical, collection, [o.previous for o in batch if o.previous])
        for outcome in batch:
            previous = outcome.previous
            assert previous is not None and outcome.path is not None
            if previous.source not in missing:
                self._unchanged(collection, previous, report, progress)
                continue
            log.warning("%s in %r is missing chunks in the store: writing it again", outcome.source, collection)
            self._record(
                self._examine(outcome.path, outcome.source, collection, repair=True), collection, report, queue
            )

    def _unchanged(
        self, collection: str, previous: DocumentRecord, report: IngestReport, progress: Progress | None
    ) -> None:
        if not previous.clean:  # a crash came before the old version was deleted
            claim = self.manifest.claim(
                collection, previous.source, previous.document_id, previous.doc_hash, self._owner, self.claim_ttl_s
            )
            if claim.held and (claim.live_hash == previous.doc_hash or claim.abandoned_hash):
                current = self.manifest.get(collection, previous.source)  # else: the writer holding it sweeps
                self._sweep(collection, previous.document_id, set(current.chunk_ids) if current else set())
                self.manifest.release(collection, previous.source, self._owner, clean=current is not None)
            elif claim.held:
                self.manifest.release(collection, previous.source, self._owner)
        report.unchanged += 1
        if progress:
            progress.file_done(previous.source, "unchanged", 0)

    def _flush(
        self,
        collection: str,
        queue: list[Pending],
        report: IngestReport,
        progress: Progress | None,
        *,
        claimed: bool = False,
    ) -> None:
        if not claimed:
            queue[:] = self._claim_queue(collection, queue, report, progress)
        if not queue:
            return
        try:
            self._write(collection, queue, report, progress)
        except BaseException:
            for pending in queue:  # what was written is swept by the next run (the claim names it)
                self.manifest.abandon(collection, pending.source, self._owner)
            raise
        finally:
            queue.clear()

    def _claim_queue(
        self, collection: str, queue: list[Pending], report: IngestReport, progress: Progress | None
    ) -> list[Pending]:
        """Claim each queued document; busy ones wait for the end of the run, settled ones count as unchanged."""
        claimed: list[Pending] = []
        for pending in queue:
            claim = self._claim(collection, pending)
            if not claim.held:
                self._deferred.append(pending)
            elif self._settle(collection, pending, claim.live_hash, claim.abandoned_hash):
                report.unchanged += 1
                if progress:
                    progress.file_done(pending.source, "unchanged", 0)
            else:
                claimed.append(pending)
        return claimed

    def _settle(self, collection: str, pending: Pending, live_hash: str | None, abandoned: str | None) -> bool:
        """Under the claim: sweep what a dead writer left, and say whether our version is live already."""
        current = self.manifest.get(collection, pending.source)
        if abandoned is not None:
            self._sweep(collection, pending.doc_id, set(current.chunk_ids) if current else set())
        pending.previous = current
        if current is None or live_hash != pending.doc_hash or pending.repair:
            return False
        if not self._complete(collection, current):  # another writer switched it live, then lost chunks
            pending.repair = True
            return False
        if not current.clean:
            self._sweep(collection, pending.doc_id, set(current.chunk_ids))
        self.manifest.release(collection, pending.source, self._owner, clean=True)
        return True

    def _write(self, collection: str, queue: list[Pending], report: IngestReport, progress: Progress | None) -> None:
        attributes = {"kb.documents": len(queue), "kb.chunks": sum(len(p.chunks) for p in queue)}
        with tracing.span("kb.ingest.write", attributes) as span:
            self._write_batch(collection, queue, report, progress, span)

    def _write_batch(
        self, collection: str, queue: list[Pending], report: IngestReport, progress: Progress | None, span: Any
    ) -> None:
        """Embed, store and index a batch of documents, then make each live (an event on the batch's span)."""
        chunks = [c for p in queue for c in p.chunks]
        sent_before = getattr(self.embedder, "embedded", None)
        vectors: list[list[float]] = []
        # in slices, reporting each: a job's cancel check runs there, and a batch of 256 chunks can take
        # longer than the seconds a cancel may wait on a busy 2-core machine
        for start in range(0, len(chunks), _EMBED_SLICE):
            part = chunks[start : start + _EMBED_SLICE]
            vectors += self.embedder.embed_documents([c.embedding_text() for c in part])
            if progress:
                progress.embedded(len(part))
        sent_after = getattr(self.embedder, "embedded", None)
        metadatas = [self._metadata(c, collection, p) for p in queue for c in p.chunks]
        self.store.upsert(collection, [c.id for c in chunks], vectors, [c.text for c in chunks], metadatas)
        if self.lexical is not None:
            self.lexical.upsert(
                collection, [c.id for c in chunks], [c.text for c in chunks], metadatas,
                index_texts=[c.embedding_text() for c in chunks],
                section_vectors=section_vectors(chunks, vectors),
            )  # fmt: skip
        # Count what the model actually embedded; cached vectors (unchanged chunks) are free.
        fresh = sent_after - sent_before if sent_before is not None and sent_after is not None else len(chunks)
        report.chunks_embedded += fresh
        report.chunks_written += len(chunks)
        for pending in queue:
            ids = tuple(c.id for c in pending.chunks)
            record = DocumentRecord(
                collection, pending.source, pending.doc_id, pending.doc_hash, ids, pending.size, pending.title,
                time.time(),
            )  # fmt: skip
            try:
                self.manifest.switch(record, self._owner)  # readers see the new version from here on
            except LeaseLost as exc:  # we stalled past the claim's expiry: the writer that took over wins
                log.warning("not switching %s in %r live: %s", pending.source, collection, exc)
                report.failed.append({"source": pending.source, "error": f"another ingestion took over ({exc})"})
                continue
            self._sweep_replaced(collection, pending, set(ids))
            self.manifest.release(collection, pending.source, self._owner, clean=True)
            if span is not None:
                span.add_event("kb.document_live", {"kb.source": pending.source, "kb.chunks": len(ids)})
            if pending.previous is None:
                report.added += 1
            else:
                report.updated += 1
            if progress:
                progress.file_done(pending.source, "updated" if pending.previous else "added", len(ids))

    def _sweep_replaced(self, collection: str, pending: Pending, keep: set[str]) -> None:
        """After the switch: delete the version it replaced. A clean previous version's chunks are exactly the
        ids its manifest row lists (leftovers of crashed attempts were swept under the claim, in _settle), so
        Chroma is asked by id: its metadata scan (``where document_id``) takes seconds per document at a million
        chunks, holding the GIL, and stalled every query of a server ingesting (docs/benchmarks.md, "Scale").
        A previous version not swept clean (a crash came first) still gets the full scan."""
        previous = pending.previous
        if previous is not None and not previous.clean:
            self._sweep(collection, pending.doc_id, keep)
            return
        stale = sorted(set(previous.chunk_ids) - keep) if previous is not None else []
        self.store.delete(collection, stale)
        if self.lexical is not None:
            self.lexical.sweep_document(collection, pending.doc_id, keep)

    def _sweep(self, collection: str, doc_id: str, keep: set[str]) -> None:
        """Delete every chunk of the document that is not in the live set (old versions, crash leftovers)."""
        sweep_document(self.store, self.lexical, collection, doc_id, keep)

    def _prune(self, collection: str, present: set[str], report: IngestReport) -> None:
        """Remove documents whose files are gone, and chunks no manifest row or writer vouches for."""
        for record in self.manifest.documents(collection):
            if record.source in present:
                continue
            claim = self.manifest.claim(
                collection, record.source, record.document_id, record.doc_hash, self._owner, self.claim_ttl_s
            )
            if not claim.held:  # another run is writing it right now: its file exists somewhere
                continue
            self._sweep(collection, record.document_id, set())
            self.manifest.remove(collection, record.source)
            self.manifest.release(collection, record.source, self._owner)
            report.deleted += 1
        sweep_orphans(self.store, self.manifest, self.lexical, collection)

    @staticmethod
    def _metadata(chunk: Chunk, collection: str, pending: Pending) -> ChunkMetadata:
        meta: ChunkMetadata = {
            "collection": collection,
            "source": pending.source,
            "document_id": pending.doc_id,
            "doc_hash": pending.doc_hash,
            "title": pending.title,
            "chunk_index": chunk.index,
            "content_hash": chunk.content_hash,
        }
        if chunk.page is not None:
            meta["page"] = chunk.page
        if chunk.heading:
            meta["heading"] = chunk.heading
        if chunk.section:
            meta["section"] = chunk.section
            meta["section_chunks"] = chunk.section_chunks
        return meta
