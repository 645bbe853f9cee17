"""Per-collection BM25 index (bm25s, Snowball stemming, English stop words), kept beside Chroma.

Why this shape: bm25s builds a static sparse matrix, so "incremental" is split in two.
The expensive, per-text part (tokenizing and stemming) happens once, at ingestion, for the
chunks of changed documents only, and the stemmed tokens are persisted in the SQL database next
to the chunk's text and metadata (vectorstore/tables.py). The cheap, global part (IDF and the
sparse matrix) is rebuilt in memory lazily: every write bumps the collection's version row, and a reader rebuilds its
matrix on the first query after a change (~0.5 s per 10k chunks), never per query. The
version lives in the database, so a server notices writes made by a ``kb ingest`` process or
by another host too, and every host builds its matrix from the same rows: the same answers.

Ingestion writes chunks here before the manifest switch and sweeps them with the vector
store's, so both indexes hold the same chunk ids; readers apply the manifest's live-version
filter to lexical hits exactly as to dense ones.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS
from sqlalchemy import ColumnElement, Engine, func, select

from vectorstore.tables import BATCH, LEXICAL_TABLES, bump, chunks, open_engine, upsert, versions, write_tx

log = logging.getLogger(__name__)

Metadata = dict[str, Any]


@dataclass(frozen=True)
class LexicalHit:
    id: str
    text: str
    metadata: Metadata
    score: float  # raw BM25 score (unbounded, comparable within one query only)
    coverage: float  # share of the query's IDF weight whose terms occur in the chunk, in [0, 1]


@dataclass
class _Built:
    collection: str
    version: int
    ids: list[str]
    metadatas: list[Metadata]
    retriever: bm25s.BM25 | None  # None when the collection has no indexable text
    positions: dict[str, int]
    sections: dict[str, int]  # a section's first chunk id → its row of section_matrix
    section_matrix: np.ndarray  # float16, one row per section (768 bytes at 384 dimensions)


class LexicalIndex:
    """BM25 over the chunks of each collection; thread-safe, one instance per process."""

    def __init__(self, target: Engine | str | Path, *, language: str = "english"):
        self._engine, self._owns_engine = open_engine(target, LEXICAL_TABLES)
        self._lock = threading.RLock()
        self._stemmer = Stemmer.Stemmer(language)
        # The larger English list: question words ("how", "what", "does") otherwise dominate short queries.
        self._stopwords = list(STOPWORDS_EN_PLUS) if language == "english" else None
        self._built: dict[str, _Built] = {}
        # search() then score_ids() for the same query (hybrid retrieval) computes the scores once.
        self._last: tuple[tuple[str, int, str], tuple[np.ndarray, np.ndarray] | None] | None = None

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
        metadatas: Sequence[Metadata],
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
        # one transaction: the chunks and the version bump that tells readers to rebuild
        with write_tx(self._engine) as conn:
            upsert(conn, chunks, rows)
            bump(conn, versions, "version", collection)

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
            self._last = None

    def count(self, collection: str) -> int:
        with self._engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(chunks).where(chunks.c.collection == collection)
                ).scalar_one()
            )

    # --- reads (retrieval) --------------------------------------------------------------

    def _version(self, collection: str) -> int:
        with self._engine.connect() as conn:
            found = conn.execute(select(versions.c.version).where(versions.c.collection == collection)).scalar()
        return int(found or 0)

    def _index(self, collection: str) -> _Built:
        """The in-memory BM25 matrix of the collection's current version (rebuilt after a write)."""
        with self._lock:
            version = self._version(collection)
            built = self._built.get(collection)
            if built is not None and built.version == version:
                return built
            c = chunks.c
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(c.chunk_id, c.tokens, c.metadata, c.section_vector)
                    .where(c.collection == collection)
                    .order_by(c.chunk_id)
                ).all()
            ids = [r[0] for r in rows]
            corpus = [r[1].split() for r in rows]
            retriever = None
            if any(corpus):
                retriever = bm25s.BM25()
                retriever.index(corpus, show_progress=False)
            heads = _uniform([(r[0], r[3]) for r in rows if r[3]], collection)
            matrix = np.frombuffer(b"".join(blob for _, blob in heads), dtype=np.float16)
            built = _Built(
                collection, version, ids, [json.loads(r[2]) for r in rows], retriever,
                {c: i for i, c in enumerate(ids)}, {cid: i for i, (cid, _) in enumerate(heads)},
                matrix.reshape(len(heads), -1) if heads else matrix.reshape(0, 0),
            )  # fmt: skip
            self._built[collection] = built
            log.info("built BM25 index of %r: %d chunks (version %d)", collection, len(ids), version)
            return built

    def search(
        self,
        collection: str,
        query: str,
        k: int,
        accept: Callable[[Metadata], bool] | None = None,
        *,
        with_text: bool = True,
    ) -> list[LexicalHit]:
        """Top ``k`` chunks by BM25 with a positive score; ``accept`` filters on chunk metadata.

        ``with_text=False`` leaves the texts empty (a caller keeping a few of the hits reads theirs
        with ``texts``)."""
        built = self._index(collection)
        scored = self._scores(built, query)
        if scored is None or k <= 0:
            return []
        scores, coverage = scored
        if accept is not None:
            mask = np.fromiter((accept(m) for m in built.metadatas), dtype=bool, count=len(built.metadatas))
            scores = np.where(mask, scores, 0.0)
        positive = int(np.count_nonzero(scores > 0))
        k = min(k, positive)
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        texts = self.texts(collection, [built.ids[i] for i in top]) if with_text else {}
        return [
            LexicalHit(
                built.ids[i], texts.get(built.ids[i], ""), built.metadatas[i], float(scores[i]), float(coverage[i])
            )
            for i in top
        ]

    def score_ids(self, collection: str, query: str, ids: Iterable[str]) -> dict[str, tuple[float, float]]:
        """(BM25 score, coverage) of given chunks, 0 when absent: lexical evidence for dense-only hits."""
        built = self._index(collection)
        scored = self._scores(built, query)
        result = {}
        for cid in ids:
            pos = built.positions.get(cid)
            ok = scored is not None and pos is not None
            result[cid] = (float(scored[0][pos]), float(scored[1][pos])) if ok else (0.0, 0.0)  # type: ignore[index]
        return result

    def _scores(self, built: _Built, query: str) -> tuple[np.ndarray, np.ndarray] | None:
        """BM25 scores and IDF-weighted query-term coverage of every chunk (None: no known query term).

        Coverage is what makes lexical evidence comparable across queries (raw BM25 is not):
        the relevance floor uses it. BM25 is a sum over query terms, so one pass per term gives both.
        """
        if built.retriever is None:
            return None
        key = (built.collection, built.version, query)
        last = self._last
        if last is not None and last[0] == key:
            return last[1]
        result = self._compute_scores(built, query)
        self._last = (key, result)
        return result

    def _compute_scores(self, built: _Built, query: str) -> tuple[np.ndarray, np.ndarray] | None:
        assert built.retriever is not None
        vocab = built.retriever.vocab_dict
        terms = sorted(set(self.tokenize([query])[0]))
        if not any(t in vocab for t in terms):
            return None
        n = len(built.ids)
        scores = np.zeros(n, dtype=np.float32)
        covered = np.zeros(n, dtype=np.float32)
        total_idf = 0.0
        for term in terms:
            if term in vocab:
                s = np.asarray(built.retriever.get_scores([term]), dtype=np.float32)
                present = s > 0
                df = int(np.count_nonzero(present))
                scores += s
            else:  # a word no chunk has ("France" in an HR handbook) still counts against coverage
                present, df = np.zeros(n, dtype=bool), 0
            idf = float(np.log(1 + (n - df + 0.5) / (df + 0.5)))
            covered += idf * present
            total_idf += idf
        return scores, covered / total_idf

    def metadatas(self, collection: str, ids: Iterable[str]) -> dict[str, Metadata]:
        """Metadata of the given chunks from the in-memory index (a copy; absent ids are left out).

        The same metadata ingestion gave the vector store: retrieval reads it here instead of
        asking Chroma for it on every query."""
        built = self._index(collection)
        found = ((cid, built.positions.get(cid)) for cid in ids)
        return {cid: dict(built.metadatas[pos]) for cid, pos in found if pos is not None}

    def section_cosines(self, collection: str, ids: Iterable[str], query: np.ndarray) -> dict[str, float]:
        """Cosine of ``query`` to the sections whose first chunks are ``ids`` (ids without a section vector are
        left out), from the in-memory index. Retrieval asks right after searching it, so the index built last is
        used without asking the database for its version again (~1 ms of a ~15 ms query); a section written
        since has no vector yet, which only leaves its chunks ranked on their own."""
        with self._lock:
            built = self._built.get(collection)
        if built is None:
            built = self._index(collection)
        found = [(cid, row) for cid in dict.fromkeys(ids) if (row := built.sections.get(cid)) is not None]
        if not found or built.section_matrix.shape[1] != query.shape[0]:  # another model's vectors: none apply
            return {}
        cosines = built.section_matrix[[row for _, row in found]].astype(np.float32) @ query.astype(np.float32)
        return {cid: float(value) for (cid, _), value in zip(found, cosines, strict=True)}

    def section_vectors(self, collection: str, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """The section vectors stored on the given chunks, read from the database (tools and copies)."""
        found = self._select_ids(collection, sorted(set(ids)), chunks.c.section_vector)
        return {cid: np.frombuffer(blob, dtype=np.float16).astype(np.float32) for cid, blob in found.items() if blob}

    def present(self, collection: str, ids: list[str]) -> set[str]:
        """Which of ``ids`` the index holds."""
        return set(self._select_ids(collection, ids, chunks.c.chunk_id))

    def texts(self, collection: str, ids: list[str]) -> dict[str, str]:
        """Texts of the given chunks (absent ids are left out)."""
        return self._select_ids(collection, ids, chunks.c.text)

    def _select_ids(self, collection: str, ids: list[str], column: Any) -> dict[str, Any]:
        """chunk id → ``column`` for those of ``ids`` the index holds (in batches)."""
        c = chunks.c
        found: dict[str, Any] = {}
        with self._engine.connect() as conn:
            for start in range(0, len(ids), BATCH):
                part = ids[start : start + BATCH]
                rows = conn.execute(select(c.chunk_id, column).where(c.collection == collection, c.chunk_id.in_(part)))
                found.update({r[0]: r[1] for r in rows})
        return found

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()


def _pack(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=np.float16).tobytes()


def _uniform(heads: list[tuple[str, bytes]], collection: str) -> list[tuple[str, bytes]]:
    """The section vectors of the most common length: one of another length (another embedding model, a
    truncated write) would make the whole matrix unreadable, and with it every search of the collection."""
    sizes = Counter(len(blob) for _, blob in heads)
    if len(sizes) <= 1:
        return heads
    size = sizes.most_common(1)[0][0]
    log.warning("%d section vectors of %r have another length than %d bytes: ignored", len(heads) - sizes[size],
                collection, size)  # fmt: skip
    return [(cid, blob) for cid, blob in heads if len(blob) == size]
