"""Hybrid retrieval: dense (Chroma) + lexical (BM25), fused, de-duplicated, live versions only.

Why this design (measured in docs/benchmarks.md on two real documentation sets):
- Dense embeddings win on question-to-answer matching; BM25 wins on exact identifiers and
  rare terms. Plain reciprocal rank fusion gives them equal votes and can lose to dense
  alone. The default fusion adds a small share of BM25 (scaled by the query's best BM25
  score) to the cosine: it beat weighted RRF on both datasets; RRF stays as an option.
- Every candidate gets both a cosine similarity and a BM25 score, whichever retriever found
  it (stored vectors are fetched for lexical-only hits). Raw BM25 is not comparable across
  queries, so the relevance floor uses the cosine plus the share of the query's words the
  chunk covers; MMR uses the stored vectors.
- MMR over the stored vectors keeps the top-k from being overlapping chunks of one page.
- Chunks of a document version the manifest does not vouch for are dropped from both lists.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np

from app import tracing
from app.errors import CollectionNotFoundError
from app.settings import RetrievalSettings
from vectorstore.chunk_meta import ChunkMetadata
from vectorstore.filters import SearchFilters
from vectorstore.lexical import LexicalIndex
from vectorstore.manifest import Manifest
from vectorstore.store import CollectionMissing, Hit, VectorStore

log = logging.getLogger(__name__)

Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[str, ...] = ("hybrid", "dense", "lexical")
_DEEPEST = 20_000  # candidates per retriever when dead chunks keep filling the lists (before a repair)
__all__ = ["MODES", "Mode", "Retriever", "SearchFilters", "SearchHit"]


class EmbedsQueries(Protocol):
    def embed_query(self, text: str) -> list[float]: ...


@dataclass
class SearchHit:
    id: str
    collection: str
    text: str
    metadata: ChunkMetadata
    score: float = 0.0  # the fused score that orders the results
    dense: float | None = None  # cosine similarity to the query
    lexical: float | None = None  # BM25 score (comparable within one query)
    coverage: float | None = None  # share of the query's IDF weight found in the chunk
    section: float | None = None  # cosine of the chunk's section vector (hybrid; None: not known)
    dense_rank: int | None = None  # 1-based rank in each retriever's list
    lexical_rank: int | None = None
    evidence: float = 0.0  # cosine plus weighted term coverage: compared with the relevance floor
    vector: Any = field(default=None, repr=False)

    def as_hit(self) -> Hit:
        """The answer pipeline's view: ``score`` is the cosine (evidence strength), as for dense hits."""
        return Hit(self.id, self.text, self.metadata, self.dense if self.dense is not None else 0.0)

    def as_dict(self) -> dict[str, Any]:
        m = self.metadata
        return {
            "chunk_id": self.id, "collection": self.collection, "source": m.get("source"), "page": m.get("page"),
            "heading": m.get("heading"), "text": self.text, "score": round(self.score, 6),
            "scores": {
                "dense": self.dense, "lexical": self.lexical, "coverage": self.coverage, "section": self.section,
            },
            "evidence": round(self.evidence, 6),
            "ranks": {"dense": self.dense_rank, "lexical": self.lexical_rank},
        }  # fmt: skip


class Retriever:
    def __init__(
        self,
        store: VectorStore,
        embedder: EmbedsQueries,
        lexical: LexicalIndex | None = None,
        manifest: Manifest | None = None,
        config: RetrievalSettings | None = None,
    ):
        self.store = store
        self.embedder = embedder
        self.lexical = lexical
        self.manifest = manifest
        self.config = config or RetrievalSettings()  # the defaults are the settings'
        self._synced: set[str] = set()

    def search(
        self,
        query: str,
        collections: Sequence[str],
        top_k: int,
        *,
        mode: Mode | None = None,
        filters: SearchFilters | None = None,
        config: RetrievalSettings | None = None,
        query_vector: Sequence[float] | None = None,
    ) -> list[SearchHit]:
        """Ranked chunks of ``collections``; ``config`` overrides the defaults (benchmarks tune with it)."""
        cfg = config or self.config
        mode = mode or cfg.mode
        if mode == "hybrid" and self.lexical is None:
            mode = "dense"
        with tracing.span("kb.retrieve", {"kb.mode": mode, "kb.top_k": top_k}) as span:
            found = self._search(query, collections, top_k, mode, filters or SearchFilters(), cfg, query_vector)
            tracing.set_attributes(span, {"kb.hits": len(found)})
            return found

    def _search(
        self,
        query: str,
        collections: Sequence[str],
        top_k: int,
        mode: Mode,
        filters: SearchFilters,
        cfg: RetrievalSettings,
        query_vector: Sequence[float] | None,
    ) -> list[SearchHit]:
        if query_vector is None and mode != "lexical":
            with tracing.span("kb.embed", {"kb.embed.texts": 1}):
                query_vector = self.embedder.embed_query(query)
        qvec = np.asarray(query_vector if query_vector is not None else [], np.float32)
        pool: dict[tuple[str, str], SearchHit] = {}
        # Hybrid: candidates' metadata comes from the BM25 index (the same ingestion wrote it there),
        # and texts are read for the returned hits only (see _fill_texts).
        lean = mode == "hybrid"
        for collection in collections:
            try:
                self._candidates(collection, query, qvec, mode, cfg.candidates, filters, pool, lean=lean)
                if mode == "hybrid":
                    self._complete(collection, query, qvec, pool, cfg, top_k)
            except CollectionMissing as exc:
                raise CollectionNotFoundError(f"collection {collection!r} does not exist") from exc
        with tracing.span("kb.fusion", {"kb.candidates": len(pool), "kb.fusion": cfg.fusion}):
            found = self._fuse(list(pool.values()), qvec, mode, cfg, top_k)
        if lean:
            self._fill_texts(found)
        return found

    def _fuse(
        self, hits: list[SearchHit], qvec: np.ndarray, mode: Mode, cfg: RetrievalSettings, top_k: int
    ) -> list[SearchHit]:
        """Score the candidates by the configured fusion, drop the weak ones, diversify (MMR)."""
        for h in hits:
            h.evidence = (h.dense or 0.0) + cfg.coverage_weight * (h.coverage or 0.0)
        if mode == "dense":
            for h in hits:
                h.score = h.dense or 0.0
        elif mode == "lexical":
            for h in hits:
                h.score = h.lexical or 0.0
        elif cfg.fusion == "score":
            top_bm25 = max((h.lexical or 0.0 for h in hits), default=0.0) or 1.0
            self._section_scores(hits, qvec, cfg.section_weight)
            for h in hits:
                h.score = (h.dense or 0.0) + cfg.bm25_weight * (h.lexical or 0.0) / top_bm25
                if h.section is not None:
                    size = float(h.metadata.get("section_chunks") or 1)
                    h.score += cfg.section_weight * h.section - cfg.section_length_penalty * math.log(size)
                else:  # a page, or a chunk written before sections were kept: a section of one chunk
                    h.score += cfg.section_weight * (h.dense or 0.0)
        else:
            self._rank_dense_globally(hits)
            for h in hits:
                h.score = sum(
                    w / (cfg.rrf_k + r)
                    for w, r in ((cfg.dense_weight, h.dense_rank), (cfg.lexical_weight, h.lexical_rank))
                    if r is not None
                )
        hits.sort(key=lambda h: -h.score)
        if mode != "lexical":
            hits = [h for h in hits if (h.dense or 0.0) >= cfg.min_score]
        return self._mmr(hits, top_k, cfg.mmr_lambda, cfg.duplicate_cosine) if mode != "lexical" else hits[:top_k]

    def _candidates(
        self,
        collection: str,
        query: str,
        qvec: np.ndarray,
        mode: Mode,
        k: int,
        filters: SearchFilters,
        pool: dict[tuple[str, str], SearchHit],
        *,
        lean: bool,
    ) -> None:
        """Each retriever's live candidates. Versions being written or abandoned are excluded inside the BM25
        index (a mask: free), but filtered out of the dense list here, after the search: a Chroma query under a
        ``$nin`` filter costs ~0.5 s at 100k chunks (5 ms without), and would be paid by every query during
        every ingestion. When dead chunks leave too few live candidates (the versions being written resemble
        the live ones they replace, or an older kb's crash left chunks no claim names, before ``kb collections
        repair``), the lists are fetched again deeper and filtered here: never fewer live candidates than the
        store holds, up to ``k``."""
        dead = self.manifest.dead_hashes(collection) if self.manifest is not None else ()
        excluding, refreshes = bool(dead), 0
        want = k
        while True:
            scoped = replace(filters, exclude_hashes=filters.exclude_hashes + dead) if excluding else filters
            dense_n = lexical_n = 0
            if mode in ("hybrid", "dense"):
                dense_n = self._dense(collection, qvec, k, filters, pool, lean=lean)
            if mode in ("hybrid", "lexical"):
                lexical_n = self._lexical(collection, query, k, scoped, pool, check=mode == "lexical", lean=lean)
            fetched = sum(1 for c, _ in pool if c == collection)
            dropped = self._live_only(collection, pool)
            if excluding and refreshes < 3 and self.manifest is not None:
                now_dead = self.manifest.dead_hashes(collection)
                if set(dead) - set(now_dead):  # a version went live while we searched without it: again
                    dead, refreshes = now_dead, refreshes + 1
                    excluding = bool(dead)
                    self._forget(collection, pool)
                    continue
            mine = [h for (c, _), h in pool.items() if c == collection]
            # each list on its own: enough live hits, or nothing more in the store (HNSW under a filter can miss)
            dense_ok = mode == "lexical" or sum(h.dense_rank is not None for h in mine) >= want or dense_n < k
            # BM25 filters exactly (it scores every chunk): fewer than k means there are no more
            lexical_ok = mode == "dense" or sum(h.lexical_rank is not None for h in mine) >= want or lexical_n < k
            if (dense_ok and lexical_ok) or k >= _DEEPEST:
                return
            if set(dropped) - set(dead):  # chunks of versions no writer's claim names: a crash of an older kb
                log.warning(
                    "%d of %d candidates in %r belong to no live version; searching deeper "
                    "(run `kb collections repair %s` to sweep them)",
                    sum(dropped.values()), fetched, collection, collection,
                )  # fmt: skip
            self._forget(collection, pool)
            k *= 8
            excluding = False

    @staticmethod
    def _forget(collection: str, pool: dict[tuple[str, str], SearchHit]) -> None:
        for key in [key for key in pool if key[0] == collection]:
            del pool[key]

    def _dense(
        self,
        collection: str,
        qvec: np.ndarray,
        k: int,
        filters: SearchFilters,
        pool: dict[tuple[str, str], SearchHit],
        *,
        lean: bool = False,
    ) -> int:
        """The ``k`` nearest chunks (returns how many the store gave). ``lean``: without Chroma's text and
        metadata, which cost it more than the search (~3 of ~4 ms for 40 hits of 10k chunks); the metadata
        comes from the BM25 index's copy (Chroma's for any chunk that index lacks), the texts later, for the
        returned hits only."""
        with tracing.span("kb.dense_search", {"kb.collection": collection, "kb.k": k}) as span:
            found = self.store.query(
                collection, qvec.tolist(), k, filters.where(), with_embeddings=True, with_records=not lean
            )
            tracing.set_attributes(span, {"kb.returned": len(found)})
        texts: dict[str, str] = {}
        metadatas = {h.id: h.metadata for h in found}
        if lean and found:
            assert self.lexical is not None
            self._backfill(collection)
            metadatas = self.lexical.metadatas(collection, metadatas)
            missing = [h.id for h in found if h.id not in metadatas]
            for cid, (text, meta) in self.store.get_records(collection, missing).items():
                texts[cid], metadatas[cid] = text, meta
        rank = 0
        for hit in found:
            if hit.id in metadatas:  # a chunk deleted since the query is left out
                rank += 1
                pool[(collection, hit.id)] = SearchHit(
                    hit.id, collection, texts.get(hit.id, hit.text), metadatas[hit.id], dense=hit.score,
                    dense_rank=rank, vector=hit.embedding,
                )  # fmt: skip
        return len(found)

    def _fill_texts(self, hits: list[SearchHit]) -> None:
        """Read the texts of the returned hits that lack one: from the BM25 index's table, else from Chroma."""
        assert self.lexical is not None
        for collection in dict.fromkeys(h.collection for h in hits):
            mine = [h for h in hits if h.collection == collection and not h.text]
            texts = self.lexical.texts(collection, [h.id for h in mine])
            missing = [h.id for h in mine if h.id not in texts]
            texts.update((cid, text) for cid, (text, _) in self.store.get_records(collection, missing).items())
            for h in mine:
                h.text = texts.get(h.id, "")

    def _lexical(
        self,
        collection: str,
        query: str,
        k: int,
        filters: SearchFilters,
        pool: dict[tuple[str, str], SearchHit],
        *,
        check: bool,
        lean: bool = False,
    ) -> int:
        """The ``k`` best BM25 chunks (returns how many the index gave)."""
        assert self.lexical is not None
        if check and not self.store.exists(collection):  # in hybrid mode the dense query has checked
            raise CollectionMissing(collection)
        self._backfill(collection)
        # hybrid (lean): _complete asks score_ids for the same query next
        with tracing.span("kb.lexical_search", {"kb.collection": collection, "kb.k": k}) as span:
            hits = self.lexical.search(collection, query, k, filters, with_text=not lean, keep_scores=lean)
            tracing.set_attributes(span, {"kb.returned": len(hits)})
        for rank, hit in enumerate(hits):
            found = pool.setdefault((collection, hit.id), SearchHit(hit.id, collection, hit.text, hit.metadata))
            found.lexical, found.coverage, found.lexical_rank = hit.score, hit.coverage, rank + 1
        return len(hits)

    def _backfill(self, collection: str) -> None:
        """Collections ingested before the BM25 index existed get it built once from the vector store."""
        assert self.lexical is not None
        if collection in self._synced:
            return
        if self.lexical.count(collection) == 0:
            ids, texts, metas = self.store.get_all(collection)
            if ids:
                log.info("building the BM25 index of %r from %d stored chunks", collection, len(ids))
                index_texts = [
                    f"{m['heading']}\n{t}" if m.get("heading") else t for t, m in zip(texts, metas, strict=True)
                ]
                self.lexical.upsert(collection, ids, texts, metas, index_texts=index_texts)
        self._synced.add(collection)

    def _complete(
        self,
        collection: str,
        query: str,
        qvec: np.ndarray,
        pool: dict[tuple[str, str], SearchHit],
        cfg: RetrievalSettings,
        top_k: int,
    ) -> None:
        """Give every candidate both scores: BM25 for dense-only hits, cosine for lexical-only ones.

        Fetching stored vectors is the slow part, so with score fusion a lexical-only hit is
        fetched only if it could still reach the top: its cosine is at most the dense list's
        last one (it was not in that list), which bounds its fused score.
        """
        assert self.lexical is not None
        mine = [h for (c, _), h in pool.items() if c == collection]
        no_bm25 = [h.id for h in mine if h.lexical is None]
        for cid, (score, coverage) in self.lexical.score_ids(collection, query, no_bm25).items():
            pool[(collection, cid)].lexical, pool[(collection, cid)].coverage = score, coverage
        no_vector = [h for h in mine if h.vector is None]
        with_vector = [h for h in mine if h.vector is not None]
        if cfg.fusion == "score" and no_vector and len(with_vector) >= cfg.candidates:
            top = max(h.lexical or 0.0 for h in mine) or 1.0
            fused = sorted((h.dense or 0.0) + cfg.bm25_weight * (h.lexical or 0.0) / top for h in with_vector)
            bar = fused[-min(len(fused), 2 * top_k)]
            last_cosine = min(h.dense or 0.0 for h in with_vector)
            hopeless = [  # the best BM25 hit stays: it scales every fused score
                h
                for h in no_vector
                if last_cosine + cfg.bm25_weight * (h.lexical or 0.0) / top < bar and h.lexical != top
            ]
            for h in hopeless:
                del pool[(collection, h.id)]
            no_vector = [h for h in no_vector if (collection, h.id) in pool]
        vectors = self.store.get_embeddings(collection, [h.id for h in no_vector])
        for h in no_vector:
            if h.id in vectors:
                h.vector = vectors[h.id]
                h.dense = float(np.dot(h.vector, qvec))

    def _section_scores(self, hits: list[SearchHit], qvec: np.ndarray, weight: float) -> None:
        """Each hit's section cosine: a chunk ranks with the section it came from, so a section about the
        question beats an equally similar chunk lost in a long section on something else (one lookup of
        the candidates' section vectors; chunks ingested before sections were kept get none)."""
        if not weight or self.lexical is None:
            return
        for collection in dict.fromkeys(h.collection for h in hits):
            mine = [h for h in hits if h.collection == collection and h.metadata.get("section")]
            cosines = self.lexical.section_cosines(collection, (str(h.metadata["section"]) for h in mine), qvec)
            for h in mine:
                h.section = cosines.get(str(h.metadata["section"]))

    @staticmethod
    def _rank_dense_globally(hits: list[SearchHit]) -> None:
        """Dense ranks over all candidates (lexical-only ones included): cosines compare across collections."""
        ranked = sorted((h for h in hits if h.dense_rank is not None), key=lambda h: -(h.dense or 0.0))
        for rank, h in enumerate(ranked, start=1):
            h.dense_rank = rank

    def _live_only(self, collection: str, pool: dict[tuple[str, str], SearchHit]) -> Counter[str]:
        """Keep chunks of each document's live version only (updates are atomic for readers); returns
        how many were dropped, per version hash."""
        dropped: Counter[str] = Counter()
        if self.manifest is None:
            return dropped
        mine = [h for (c, _), h in pool.items() if c == collection]
        live = self.manifest.live_hashes(collection, (str(h.metadata.get("document_id")) for h in mine))
        for h in mine:
            if live.get(str(h.metadata.get("document_id"))) != h.metadata.get("doc_hash"):
                del pool[(collection, h.id)]
                dropped[str(h.metadata.get("doc_hash"))] += 1
        return dropped

    @staticmethod
    def _mmr(hits: list[SearchHit], top_k: int, lam: float, duplicate: float) -> list[SearchHit]:
        """Maximal marginal relevance on the stored vectors (relevance: the score scaled to [0, 1]).

        Near-duplicates of an already chosen chunk (the same passage ingested twice, overlapping
        chunks) are dropped outright, whatever ``lam`` says.
        """
        if len(hits) <= 1 or any(h.vector is None for h in hits):
            return hits[:top_k]
        # relevance in [0, 1]: scaled by the best score, or shifted first when a score is below zero (section
        # terms and the length prior can make one negative; dividing by a negative best reverses the order)
        low = min(0.0, min(h.score for h in hits))
        span = (hits[0].score - low) or 1.0
        rel = np.fromiter(((h.score - low) / span for h in hits), dtype=np.float32, count=len(hits))
        vecs = np.stack([h.vector for h in hits]).astype(np.float32, copy=False)
        chosen = [0]
        excluded = np.zeros(len(hits), dtype=bool)
        excluded[0] = True
        max_sim = vecs @ vecs[0]  # one row per chosen chunk: cheaper than the full similarity matrix
        while len(chosen) < top_k:
            excluded |= max_sim >= duplicate
            if excluded.all():
                break
            value = np.where(excluded, -np.inf, lam * rel - (1 - lam) * max_sim)
            nxt = int(np.argmax(value))
            chosen.append(nxt)
            excluded[nxt] = True
            max_sim = np.maximum(max_sim, vecs @ vecs[nxt])
        return [hits[i] for i in chosen]
