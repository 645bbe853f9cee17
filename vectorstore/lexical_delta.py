"""The chunks written since a collection's BM25 snapshot, searched beside it until a rebuild brings them in.

Why: a large collection's snapshot is rebuilt in the background after writes (vectorstore/lexical_rebuild.py,
a minute at a million chunks), and until it was in, a new document's chunks could only come through the
dense list: a question does not put a 200-token chunk among the nearest of a million near-duplicates, so at
a million chunks a new document's first answer came a minute after its ingestion. Every chunk row carries
the collection version it was written at (``chunks.written``, indexed), so the rows newer than a snapshot
are one range read. They are held here in segments, one per read, each read fetching only the rows written
since the last (a query during an ingestion reads the last document's rows, not the whole delta), and
scored with the snapshot's IDF and average length: their BM25 scores and coverage compare with its own.

Bounded: at most ``LIMIT`` chunks, many times what a rebuild cycle's writes hold; past it the newer rows
wait for the rebuild, as every row did before this module. A chunk deleted since the snapshot may stay
here: it belongs to no live version, and readers drop it with the manifest's filter, as for the snapshot.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Engine, select

from vectorstore.chunk_meta import ChunkMetadata
from vectorstore.filters import SearchFilters
from vectorstore.lexical_build import BM25_B, BM25_K1, Snapshot
from vectorstore.tables import chunks

log = logging.getLogger(__name__)

LIMIT = 20_000  # chunks held per collection (a few tens of MB of postings)


@dataclass(frozen=True)
class Segment:
    """Chunks with their term frequencies, as posting lists: scoring costs what the query's terms occur in."""

    ids: list[str]
    metadatas: list[ChunkMetadata]
    lengths: np.ndarray  # tokens per chunk
    postings: dict[str, tuple[np.ndarray, np.ndarray]]  # term → (rows, term frequencies)
    rows: dict[str, int] = field(default_factory=dict)  # chunk id → row

    @classmethod
    def of(cls, found: Iterable[tuple[str, str, ChunkMetadata]]) -> Segment:
        """From (chunk id, stored tokens, metadata) rows."""
        ids: list[str] = []
        metadatas: list[ChunkMetadata] = []
        lengths: list[int] = []
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for row, (chunk_id, tokens, metadata) in enumerate(found):
            words = tokens.split()
            ids.append(chunk_id)
            metadatas.append(metadata)
            lengths.append(len(words))
            for term, tf in collections.Counter(words).items():
                rows, tfs = postings.setdefault(term, ([], []))
                rows.append(row)
                tfs.append(tf)
        return cls(
            ids, metadatas, np.asarray(lengths, dtype=np.float64),
            {t: (np.asarray(r, dtype=np.int64), np.asarray(f, dtype=np.float64)) for t, (r, f) in postings.items()},
            {chunk_id: row for row, chunk_id in enumerate(ids)},
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.ids)

    def scores(self, idf: Mapping[str, float], avg_length: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows holding any of the query's terms, their BM25 scores (the snapshot build's Lucene formula, with
        the given IDF and average length) and the summed IDF of the terms they hold."""
        score = np.zeros(len(self.ids))
        covered = np.zeros(len(self.ids))
        average = avg_length if avg_length > 0 else float(self.lengths.mean() or 1.0)
        norm = BM25_K1 * ((1 - BM25_B) + BM25_B * self.lengths / average)
        for term, weight in idf.items():
            found = self.postings.get(term)
            if found is None:
                continue
            rows, tf = found
            score[rows] += weight * tf / (norm[rows] + tf)
            covered[rows] += weight
        rows = np.flatnonzero(covered)
        return rows, score[rows], covered[rows]


@dataclass(frozen=True)
class Delta:
    """The chunks of a collection written after ``base`` (a snapshot's version), up to version ``through``."""

    collection: str
    base: int
    through: int
    segments: tuple[Segment, ...] = ()
    size: int = 0

    def extended(self, engine: Engine, snapshot: Snapshot, version: int) -> Delta:
        """This delta with the rows written up to ``version`` (itself when it has them, or is full)."""
        if version <= self.through or self.size >= LIMIT:
            return self
        c = chunks.c
        query = (
            select(c.chunk_id, c.tokens, c.metadata)
            .where(c.collection == self.collection, c.written > self.through, c.written <= version)
            .order_by(c.written, c.chunk_id)
            .limit(LIMIT - self.size + 1)
        )
        with engine.connect() as conn:
            found = [tuple(r) for r in conn.execute(query)]
        if len(found) > LIMIT - self.size:
            log.warning("more than %d chunks of %r are newer than its BM25 index: the rest are searchable once "
                        "the background rebuild is in", LIMIT, self.collection)  # fmt: skip
            found = found[: LIMIT - self.size]
        held = snapshot.positions([r[0] for r in found])  # written while the snapshot's rows streamed
        segment = Segment.of(
            (chunk_id, tokens, json.loads(metadata))
            for (chunk_id, tokens, metadata), pos in zip(found, held, strict=True)
            if pos < 0
        )
        if not len(segment):
            return Delta(self.collection, self.base, version, self.segments, self.size)
        return Delta(self.collection, self.base, version, (*self.segments, segment), self.size + len(segment))

    def search(
        self, idf: Mapping[str, float], avg_length: float, filters: SearchFilters | None
    ) -> dict[str, tuple[float, float, ChunkMetadata]]:
        """chunk id → (BM25 score, summed IDF of its query terms, metadata) of the chunks within ``filters``
        that hold a query term (a chunk written again: its newest row)."""
        hits: dict[str, tuple[float, float, ChunkMetadata]] = {}
        for segment in self.segments:
            rows, scores, covered = segment.scores(idf, avg_length)
            for row, score, weight in zip(rows.tolist(), scores.tolist(), covered.tolist(), strict=True):
                meta = segment.metadatas[row]
                if filters is None or filters.accept(meta):
                    hits[segment.ids[row]] = (score, weight, meta)
        return hits

    def find(self, chunk_id: str) -> tuple[Segment, int] | None:
        """The newest segment holding the chunk, and its row there."""
        for segment in reversed(self.segments):
            row = segment.rows.get(chunk_id)
            if row is not None:
                return segment, row
        return None
