"""Per-collection BM25 index (bm25s, Snowball stemming, English stop words), kept beside Chroma.

Why this shape: bm25s builds a static sparse matrix, so "incremental" is split in two.
The expensive, per-text part (tokenizing and stemming) happens once, at ingestion, for the
chunks of changed documents only, and the stemmed tokens are persisted in the SQL database next
to the chunk's text and metadata (vectorstore/tables.py). The global part (IDF and the sparse
matrix, with per-chunk filter columns: a snapshot, vectorstore/lexical_build.py) is rebuilt from those
rows when the collection's version row moves (every write bumps it): in-process on the next query for
a small collection (~0.5 s per 10k chunks), in the background for a large one while the previous
snapshot keeps answering (vectorstore/lexical_rebuild.py); never per query. The version lives in the
database, so a server notices writes made by a ``kb ingest`` process or by another host too, and every
host builds its matrix from the same rows: the same answers.

Ingestion writes chunks here before the manifest switch and sweeps them with the vector
store's, so both indexes hold the same chunk ids; readers apply the manifest's live-version
filter to lexical hits exactly as to dense ones.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS
from sqlalchemy import ColumnElement, Engine, func, select

from vectorstore.chunk_meta import ChunkMetadata, as_metadata, parsed_metadata
from vectorstore.filters import SearchFilters
from vectorstore.lexical_build import Snapshot, current_version
from vectorstore.lexical_delta import Delta, Segment
from vectorstore.lexical_rebuild import Rebuilds
from vectorstore.lexical_scores import Scored, query_idf, score_snapshot
from vectorstore.tables import BATCH, LEXICAL_TABLES, bump, chunks, open_engine, upsert, versions, write_tx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LexicalHit:
    id: str
    text: str
    metadata: ChunkMetadata
    score: float  # raw BM25 score (unbounded, comparable within one query only)
    coverage: float  # share of the query's IDF weight whose terms occur in the chunk, in [0, 1]


class LexicalIndex:
    """BM25 over the chunks of each collection; thread-safe, one instance per process."""

    def __init__(
        self,
        target: Engine | str | Path,
        *,
        language: str = "english",
        cache_dir: Path | None = None,
        inline_below: int = 50_000,
        rebuild_pause_s: float = 10.0,
    ):
        """``cache_dir``: where snapshots of collections of ``inline_below`` chunks or more are kept and built in
        the background (vectorstore/lexical_rebuild.py); None: every snapshot is built in-process, on demand."""
        self._engine, self._owns_engine = open_engine(target, LEXICAL_TABLES)
        self._lock = threading.RLock()
        self._gates: dict[str, threading.Lock] = {}
        self._rebuilds = Rebuilds(
            self._engine, cache_dir, self._swap, self.count, inline_below=inline_below, pause_s=rebuild_pause_s
        )
        self._stemmer = Stemmer.Stemmer(language)
        # The larger English list: question words ("how", "what", "does") otherwise dominate short queries.
        self._stopwords = list(STOPWORDS_EN_PLUS) if language == "english" else None
        self._built: dict[str, Snapshot] = {}
        self._deltas: dict[str, Delta] = {}  # collection → the chunks written since its snapshot
        # search(keep_scores=True) then score_ids() for the same query on the same thread (hybrid retrieval)
        # computes the scores once: per thread, so that concurrent queries do not evict each other's; dropped
        # when used and on a swap (a kept Scored holds views of its snapshot's matrix).
        self._kept: dict[int, tuple[tuple[str, int, str], Scored | None]] = {}
        # Scoring a query allocates ~10 MB of per-chunk arrays at 1M chunks: 20 at once took the server's RSS
        # from 2.5 to 3.1 GB (2026-12-03) for no gain on the cores there are; the others wait their turn.
        self._scoring = threading.BoundedSemaphore(max(2, len(os.sched_getaffinity(0))))

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        tokens = bm25s.tokenize(
            list(texts), stopwords=self._stopwords, stemmer=self._stemmer, return_ids=False, show_progress=False
        )
        return [list(t) for t in tokens]

    # --- writes (ingestion) -------------------------------------------------------------

    def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[ChunkMetadata],
        *,
        index_texts: Sequence[str] | None = None,
        section_vectors: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Add or replace chunks; ``metadatas`` must carry ``document_id`` (as the vector store's do).

        ``texts`` are returned with hits; ``index_texts`` (default: the same) are what gets
        tokenized, so a chunk's heading can count as its words without being shown twice.
        ``section_vectors``: chunk id of a section's first chunk → the section's vector (kept as
        float16 in that chunk's row, see ``section_cosines()``).
        """
        if not ids:
            return
        tokens = self.tokenize(index_texts if index_texts is not None else texts)
        rows = [
            {
                "collection": collection,
                "chunk_id": cid,
                "document_id": str(meta.get("document_id", "")),
                "tokens": " ".join(tok),
                "text": text,
                "metadata": json.dumps(meta),
                "section_vector": _pack(section_vectors.get(cid)) if section_vectors else None,
            }
            for cid, tok, text, meta in zip(ids, tokens, texts, metadatas, strict=True)
        ]
        # one transaction: the version bump that tells readers to rebuild, and the chunks labelled with it (the
        # rows a reader's snapshot lacks are those written after its version: vectorstore/lexical_delta.py)
        with write_tx(self._engine) as conn:
            bump(conn, versions, "version", collection)
            version = conn.execute(select(versions.c.version).where(versions.c.collection == collection)).scalar_one()
            upsert(conn, chunks, [{**row, "written": version} for row in rows])

    def _delete_where(self, collection: str, condition: ColumnElement[bool]) -> int:
        with write_tx(self._engine) as conn:
            deleted = int(conn.execute(chunks.delete().where(chunks.c.collection == collection, condition)).rowcount)
            if deleted:
                bump(conn, versions, "version", collection)
            return deleted

    def sweep_document(self, collection: str, document_id: str, keep: Iterable[str] = ()) -> int:
        """Delete the document's chunks that are not in ``keep`` (old versions, crash leftovers)."""
        keep = sorted(set(keep))
        c = chunks.c
        if not keep:
            return self._delete_where(collection, c.document_id == document_id)
        with self._engine.connect() as conn:
            present = conn.execute(
                select(c.chunk_id).where(c.collection == collection, c.document_id == document_id)
            ).scalars()
            doomed = sorted(set(present) - set(keep))
        return self.delete_ids(collection, doomed)

    def delete_ids(self, collection: str, ids: Sequence[str]) -> int:
        deleted = 0
        for start in range(0, len(ids), BATCH):
            deleted += self._delete_where(collection, chunks.c.chunk_id.in_(list(ids[start : start + BATCH])))
        return deleted

    def versions(self, collection: str) -> dict[str, tuple[str, str]]:
        """chunk id → (document id, doc_hash): which version each indexed chunk belongs to."""
        c = chunks.c
        with self._engine.connect() as conn:
            rows = conn.execute(select(c.chunk_id, c.document_id, c.metadata).where(c.collection == collection))
            return {r[0]: (r[1], json.loads(r[2]).get("doc_hash")) for r in rows}

    def retain_documents(self, collection: str, document_ids: Iterable[str]) -> int:
        """Delete chunks of every document not listed (the lexical side of pruning orphans)."""
        live = set(document_ids)
        c = chunks.c
        with self._engine.connect() as conn:
            present = set(conn.execute(select(c.document_id).distinct().where(c.collection == collection)).scalars())
        return sum(self.sweep_document(collection, doc) for doc in sorted(present - live))

    def delete_collection(self, collection: str) -> None:
        with write_tx(self._engine) as conn:
            conn.execute(chunks.delete().where(chunks.c.collection == collection))
            # never reset: another process's cached matrix must see a new version
            bump(conn, versions, "version", collection)
        with self._lock:
            self._built.pop(collection, None)
            self._deltas.pop(collection, None)
            self._kept.clear()

    def count(self, collection: str) -> int:
        with self._engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(chunks).where(chunks.c.collection == collection)
                ).scalar_one()
            )

    # --- reads (retrieval) --------------------------------------------------------------

    def _version(self, collection: str) -> int:
        return current_version(self._engine, collection)

    def _index(self, collection: str) -> Snapshot:
        return self._resolve(collection)[0]

    def _resolve(self, collection: str) -> tuple[Snapshot, int]:
        """The snapshot to answer from, and the collection's version: the snapshot is the current version's, or,
        while a large collection's rebuild runs in the background after a write, the one before it (no query
        waits for a rebuild; see module doc): the rows written since are searched beside it (``_delta``)."""
        version = self._version(collection)
        with self._lock:
            current = self._built.get(collection)
            if current is not None and (current.version == version or self._rebuilds.stale_ok(current)):
                if current.version != version:
                    self._rebuilds.request(collection, version)
                return current, version
            gate = self._gates.setdefault(collection, threading.Lock())
        with gate:  # one cold build per collection; the other queries wait for it rather than build again
            with self._lock:
                current = self._built.get(collection)
            if current is not None and current.version == version:
                return current, version
            snapshot = self._rebuilds.cold(collection, version)
            with self._lock:
                self._built[collection] = snapshot
                self._kept.clear()
            return snapshot, version

    def _delta(self, collection: str, built: Snapshot, version: int) -> Delta | None:
        """The chunks written after ``built`` up to ``version`` (None when the snapshot is current): read once
        per write, only the new rows each time."""
        if built.version >= version:
            return None
        with self._lock:
            held = self._deltas.get(collection)
        if held is None or held.base != built.version:
            held = Delta(collection, built.version, built.version)
        delta = held.extended(self._engine, built, version)
        with self._lock:
            current = self._deltas.get(collection)
            if current is None or current.base != delta.base or current.through < delta.through:
                self._deltas[collection] = delta
        return delta

    def _current(self, collection: str) -> Snapshot:
        """The snapshot last used for the collection, without asking the database for the version (one read,
        ~1 ms): for the lookups retrieval makes right after a search."""
        with self._lock:
            built = self._built.get(collection)
        return built if built is not None else self._index(collection)

    def warm(self) -> None:
        """Have every collection's snapshot in memory before the first query (a server's start): a saved one is
        opened, a small one built. A failure is logged and left to the first query to try again."""
        with self._engine.connect() as conn:
            names = list(conn.execute(select(versions.c.collection).order_by(versions.c.collection)).scalars())
        for collection in names:
            try:
                self._index(collection)
            except Exception:
                log.warning("could not prepare the BM25 index of %r at start", collection, exc_info=True)

    def _swap(self, snapshot: Snapshot) -> None:
        """A background build finished: queries answer from it from now on."""
        with self._lock:
            current = self._built.get(snapshot.collection)
            if current is None or current.version < snapshot.version:
                self._built[snapshot.collection] = snapshot
                self._kept.clear()

    def search(
        self,
        collection: str,
        query: str,
        k: int,
        filters: SearchFilters | None = None,
        *,
        with_text: bool = True,
        keep_scores: bool = False,
    ) -> list[LexicalHit]:
        """Top ``k`` chunks by BM25 with a positive score, within ``filters``.

        ``with_text=False`` leaves the texts empty (a caller keeping a few of the hits reads theirs
        with ``texts``). ``keep_scores``: the caller asks ``score_ids`` for the same query next, on this thread.
        Metadata comes from the chunks table (current, whatever the snapshot's age)."""
        built, version = self._resolve(collection)
        if k <= 0:
            return []
        found = self._top(built, query, k, filters, keep_scores)
        delta = self._delta(collection, built, version)
        if delta is not None and delta.size:
            idf, total_idf = self._idf(built, query)
            fresh = delta.search(idf, built.avg_length, filters)
            found += [(score, cid, weight / total_idf, meta) for cid, (score, weight, meta) in fresh.items()]
            found = sorted(found, key=lambda hit: (-hit[0], hit[1]))[:k]
        texts = self.texts(collection, [cid for _, cid, _, _ in found]) if with_text else {}
        return [
            LexicalHit(cid, texts.get(cid, ""), meta, float(score), float(coverage))
            for score, cid, coverage, meta in found
        ]  # a chunk deleted since the snapshot belongs to no live version: the caller's live filter drops it

    def _top(
        self, built: Snapshot, query: str, k: int, filters: SearchFilters | None, keep_scores: bool
    ) -> list[tuple[float, str, float, ChunkMetadata]]:
        """The snapshot's top ``k`` as (score, chunk id, coverage, metadata), by score then chunk id."""
        scored = self._scores(built, query)
        if scored is None:
            return []
        keep = filters.mask(built, scored.rows) if filters is not None and not filters.empty() else None
        top = scored.top(k, keep)
        if not scored.exact(top, k):  # a chunk holding only the query's common words could be in it
            scored = scored.narrowed(scored.threshold(top, k))
            keep = filters.mask(built, scored.rows) if filters is not None and not filters.empty() else None
            top = scored.top(k, keep)
        if keep_scores:
            with self._lock:
                self._kept[threading.get_ident()] = ((built.collection, built.version, query), scored)
        rows = scored.rows[top]
        return [
            (float(score), built.chunk_id(int(row)), float(coverage), built.metadata(int(row)))
            for row, score, coverage in zip(rows, scored.scores[top], scored.coverage(rows), strict=True)
        ]

    def score_ids(self, collection: str, query: str, ids: Iterable[str]) -> dict[str, tuple[float, float]]:
        """(BM25 score, coverage) of given chunks, 0 when absent: lexical evidence for dense-only hits. Asked right
        after ``search`` for the same query: its snapshot and scores are used, without asking for the version;
        chunks written since that snapshot are scored from their stored tokens (``_score_fresh``)."""
        built = self._current(collection)
        with self._lock:
            kept = self._kept.pop(threading.get_ident(), None)
        key = (built.collection, built.version, query)
        scored = kept[1] if kept is not None and kept[0] == key else self._scores(built, query)
        wanted = list(ids)
        result = dict.fromkeys(wanted, (0.0, 0.0))
        if not wanted:
            return result
        positions = built.positions(wanted)
        if scored is not None and len(scored.rows):
            at = np.minimum(np.searchsorted(scored.rows, positions), len(scored.rows) - 1)
            held = (positions >= 0) & (scored.rows[at] == positions)
            coverage = scored.coverage(positions[held])
            for cid, i, cover in zip(np.asarray(wanted)[held].tolist(), at[held], coverage, strict=True):
                result[cid] = (float(scored.scores[i]), float(cover))
            outside = (positions >= 0) & ~held  # not candidates: rows holding only the query's common words
            if scored.common and outside.any():
                rows = positions[outside]
                pairs = zip(scored.score_of(rows).tolist(), scored.coverage(rows).tolist(), strict=True)
                for cid, (score, cover) in zip(np.asarray(wanted)[outside].tolist(), pairs, strict=True):
                    if score > 0:
                        result[cid] = (score, cover)
        fresh = [cid for cid, pos in zip(wanted, positions, strict=True) if pos < 0]
        result.update(self._score_fresh(collection, built, query, fresh))
        return result

    def _score_fresh(
        self, collection: str, built: Snapshot, query: str, ids: list[str]
    ) -> dict[str, tuple[float, float]]:
        """(BM25, coverage) of chunks written since ``built`` (found by the dense side while a large collection's
        rebuild runs in the background), with the snapshot's IDF: from the delta the search just read, else
        from their stored tokens. Scored 0 instead, a new document's chunk fused below the older
        near-duplicates both lists knew."""
        if not ids:
            return {}
        with self._lock:
            delta = self._deltas.get(collection)
        located = {cid: delta.find(cid) for cid in ids} if delta is not None and delta.base == built.version else {}
        unread = [cid for cid in ids if located.get(cid) is None]
        if unread:
            stored = self._select_ids(collection, unread, chunks.c.tokens)
            segment = Segment.of((cid, str(tokens), as_metadata(None)) for cid, (tokens,) in stored.items())
            located.update((cid, (segment, row)) for cid, row in segment.rows.items())
        idf, total_idf = self._idf(built, query)
        result: dict[str, tuple[float, float]] = {}
        scored: dict[int, tuple[dict[int, float], dict[int, float]]] = {}  # per segment: row → score, weight
        for cid in ids:
            place = located.get(cid)
            if place is None:
                continue
            segment, row = place
            if id(segment) not in scored:
                rows, scores, covered = segment.scores(idf, built.avg_length)
                scored[id(segment)] = (dict(zip(rows.tolist(), scores.tolist(), strict=True)),
                                       dict(zip(rows.tolist(), covered.tolist(), strict=True)))  # fmt: skip
            scores_of, covered_of = scored[id(segment)]
            result[cid] = (scores_of.get(row, 0.0), covered_of.get(row, 0.0) / total_idf)
        return result

    def _idf(self, built: Snapshot, query: str) -> tuple[dict[str, float], float]:
        return query_idf(built, self.tokenize([query])[0])

    def _scores(self, built: Snapshot, query: str) -> Scored | None:
        """The query's BM25 scores over the snapshot (vectorstore/lexical_scores.py; None: no known query term)."""
        if built.retriever is None:
            return None
        terms = self.tokenize([query])[0]
        with self._scoring:
            return score_snapshot(built, terms)

    def metadatas(self, collection: str, ids: Iterable[str]) -> dict[str, ChunkMetadata]:
        """Metadata of the given chunks, as ingestion gave the vector store (absent ids are left out).

        From the snapshot in memory (a chunk id's metadata never changes, so any snapshot holding it will do),
        else from the chunks table: never from Chroma, which costs more than the search itself."""
        wanted = list(dict.fromkeys(ids))
        built = self._current(collection)
        positions = built.positions(wanted)
        result = {cid: built.metadata(int(pos)) for cid, pos in zip(wanted, positions, strict=True) if pos >= 0}
        missing = [cid for cid in wanted if cid not in result]  # written since the snapshot was built
        found = self._select_ids(collection, missing, chunks.c.metadata)
        result.update((cid, parsed_metadata(row[0])) for cid, row in found.items())
        return result

    def section_cosines(self, collection: str, ids: Iterable[str], query: np.ndarray) -> dict[str, float]:
        """Cosine of ``query`` to the sections whose first chunks are ``ids`` (ids without a section vector are
        left out), from the snapshot. Retrieval asks right after searching it, so the snapshot used last is
        used without asking the database for its version again (~1 ms of a ~15 ms query); a section written
        since has no vector yet, which only leaves its chunks ranked on their own."""
        built = self._current(collection)
        wanted = list(dict.fromkeys(ids))
        positions = built.positions(wanted)
        rows = np.where(positions >= 0, built.section_rows[np.maximum(positions, 0)], -1)
        found = [(cid, int(row)) for cid, row in zip(wanted, rows, strict=True) if row >= 0]
        if not found or built.section_matrix.shape[1] != query.shape[0]:  # another model's vectors: none apply
            return {}
        matrix = built.section_matrix[[row for _, row in found]].astype(np.float32)
        cosines = matrix @ query.astype(np.float32)
        return {cid: float(value) for (cid, _), value in zip(found, cosines, strict=True)}

    def section_vectors(self, collection: str, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """The section vectors stored on the given chunks, read from the database (tools and copies)."""
        found = self._select_ids(collection, sorted(set(ids)), chunks.c.section_vector)
        return {cid: np.frombuffer(row[0], dtype=np.float16).astype(np.float32) for cid, row in found.items() if row[0]}

    def present(self, collection: str, ids: list[str]) -> set[str]:
        """Which of ``ids`` the index holds."""
        return set(self._select_ids(collection, ids, chunks.c.chunk_id))

    def texts(self, collection: str, ids: list[str]) -> dict[str, str]:
        """Texts of the given chunks (absent ids are left out)."""
        return {cid: row[0] for cid, row in self._select_ids(collection, ids, chunks.c.text).items()}

    def _select_ids(self, collection: str, ids: list[str], *columns: Any) -> dict[str, tuple[Any, ...]]:
        """chunk id → the ``columns`` (a None column reads as None) of those of ``ids`` the table holds."""
        c = chunks.c
        wanted = [col for col in columns if col is not None]
        found: dict[str, tuple[Any, ...]] = {}
        with self._engine.connect() as conn:
            for start in range(0, len(ids), BATCH):
                part = ids[start : start + BATCH]
                rows = conn.execute(select(c.chunk_id, *wanted).where(c.collection == collection, c.chunk_id.in_(part)))
                for r in rows:
                    values = iter(r[1:])
                    found[r[0]] = tuple(next(values) if col is not None else None for col in columns)
        return found

    def close(self) -> None:
        self._rebuilds.close()
        if self._owns_engine:
            self._engine.dispose()


def _pack(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=np.float16).tobytes()
