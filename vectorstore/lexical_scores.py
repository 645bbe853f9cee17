"""BM25 scores of one query over a snapshot, from the query terms' posting lists (the CSC columns of its matrix).

The cost follows how many chunks hold the query's words, not the collection's size, except for a few
passes over per-chunk arrays; at a million chunks those passes were most of a lexical search (24 ms p50,
in-process, 2026-12-03), so each is the cheapest numpy has for it: chunks found through a bool mask
(a third of ``flatnonzero`` over the float scores), the top ``k`` through ``partition``'s k-th value (a
third of ``argpartition``), and coverage computed only for the chunks a caller keeps, from the posting
lists, not as a second full-length sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vectorstore.lexical_build import Snapshot, lucene_idf


@dataclass(frozen=True)
class Scored:
    """The snapshot rows holding any query term (ascending) and their BM25 scores; coverage on demand."""

    rows: np.ndarray
    scores: np.ndarray  # float32, one per row
    postings: tuple[tuple[np.ndarray, float], ...]  # per query term the snapshot has: its rows (ascending), IDF
    total_idf: float  # of every query term, those no chunk has included (df 0)

    def coverage(self, rows: np.ndarray) -> np.ndarray:
        """Share of the query's IDF weight whose terms the given rows hold, in [0, 1] (what makes lexical
        evidence comparable across queries: the relevance floor uses it)."""
        covered = np.zeros(len(rows))
        for docs, idf in self.postings:
            at = np.minimum(np.searchsorted(docs, rows), len(docs) - 1)
            covered += idf * (docs[at] == rows)
        return (covered / self.total_idf).astype(np.float32)

    def top(self, k: int, keep: np.ndarray | None = None) -> np.ndarray:
        """Indices (into ``rows``) of the ``k`` best scores among ``keep`` (a mask; None: all), best first, ties
        in row order (chunk id order)."""
        candidates = np.flatnonzero(keep) if keep is not None else np.arange(len(self.rows))
        if k <= 0 or not len(candidates):
            return candidates[:0]
        scores = self.scores[candidates]
        if k < len(candidates):
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            above = scores >= kth
            candidates, scores = candidates[above], scores[above]
        order = np.lexsort((self.rows[candidates], -scores))[:k]
        return candidates[order]


def score_snapshot(built: Snapshot, terms: Sequence[str]) -> Scored | None:
    """The query's scores over the snapshot (None: the snapshot knows none of ``terms``)."""
    if built.retriever is None:
        return None
    vocab = built.retriever.vocab_dict
    matrix = built.retriever.scores
    indptr, indices, data = matrix["indptr"], matrix["indices"], matrix["data"]
    terms = sorted(set(terms))
    if not any(t in vocab for t in terms):
        return None
    n = len(built)
    postings: list[tuple[np.ndarray, float]] = []
    weights: list[np.ndarray] = []
    total_idf = 0.0
    for term in terms:
        # a word no chunk has ("France" in an HR handbook) still counts against coverage: df 0
        start, end = (int(indptr[vocab[term]]), int(indptr[vocab[term] + 1])) if term in vocab else (0, 0)
        idf = float(lucene_idf(n, end - start))
        total_idf += idf
        if end > start:
            postings.append((np.asarray(indices[start:end]), idf))
            weights.append(np.asarray(data[start:end]))
    docs = np.concatenate([p for p, _ in postings])
    # summed per chunk by bincount: linear in the postings plus one pass over the collection (~1 ms per
    # million chunks), where sorting the postings (np.unique) grew as P log P
    sums = np.bincount(docs, weights=np.concatenate(weights), minlength=n)
    touched = np.zeros(n, dtype=bool)
    touched[docs] = True
    rows = np.flatnonzero(touched)
    return Scored(rows, sums[rows].astype(np.float32), tuple(postings), total_idf)


def query_idf(built: Snapshot, terms: Sequence[str]) -> tuple[dict[str, float], float]:
    """Each query term's IDF in the snapshot (a term it lacks: document frequency 0) and their sum: what its
    own scores and coverage use, so that chunks newer than it (vectorstore/lexical_delta.py) compare."""
    vocab = built.retriever.vocab_dict if built.retriever is not None else {}
    indptr = built.retriever.scores["indptr"] if built.retriever is not None else None
    idf: dict[str, float] = {}
    for term in sorted(set(terms)):
        df = int(indptr[vocab[term] + 1] - indptr[vocab[term]]) if indptr is not None and term in vocab else 0
        idf[term] = float(lucene_idf(len(built), df))
    return idf, sum(idf.values()) or 1.0
