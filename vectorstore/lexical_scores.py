"""BM25 scores of one query over a snapshot, from the query terms' posting lists (the CSC columns of its matrix).

The cost follows how many chunks hold the query's words, not the collection's size, except for a few
passes over per-chunk arrays; at a million chunks those passes were most of a lexical search (24 ms p50,
in-process, 2026-12-03), so each is the cheapest numpy has for it: chunks found through a bool mask
(a third of ``flatnonzero`` over the float scores), the top ``k`` through ``partition``'s k-th value (a
third of ``argpartition``), and coverage computed only for the chunks a caller keeps, from the posting
lists, not as a second full-length sum.

A word in most chunks ("use", or "sqlite" in SQLite's documentation) made the slowest queries: two of them
put 800,000 of a million chunks in play, and finding those rows and ranking them cost more than summing
their scores. Such a word's IDF is small, so its weight in any chunk is too (MaxScore, Turtle & Flood 1995):
every chunk's score is summed as before, but only the chunks holding a rarer query word are candidates,
a chunk holding only common words scoring at most the sum of their largest weights (``bound``). When the
k-th best candidate beats that, it is the exact top k (``Scored.exact``); otherwise ``narrowed`` with that
k-th score keeps out only the words whose largest weights sum below it, which is exact (the first top k
all hold another word); with fewer than k candidates (a strict filter) every chunk with a word is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vectorstore.lexical_build import Snapshot, lucene_idf

COMMON_SHARE = 0.05  # a word in more than this share of the chunks is no candidate's reason when it can be


@dataclass(frozen=True)
class Scored:
    """The candidate rows (ascending: those holding any query term, or, pruned, any but the ``common`` ones)
    and their BM25 scores; any chunk's score and coverage on demand."""

    rows: np.ndarray
    scores: np.ndarray  # float32, one per row
    postings: tuple[tuple[np.ndarray, float], ...]  # per query term the snapshot has: its rows (ascending), IDF
    total_idf: float  # of every query term, those no chunk has included (df 0)
    sums: np.ndarray  # float32: every chunk's score
    reach: tuple[float, ...]  # per posting list: its largest weight
    common: frozenset[int] = frozenset()  # posting lists that make no row a candidate
    bound: float = 0.0  # the highest score a row outside ``rows`` can have: the common lists' reach summed

    def exact(self, top: np.ndarray, k: int) -> bool:
        """Whether ``top`` (from ``top(k, ...)``) is the top ``k`` of every chunk: no row outside can reach it."""
        return not self.common or k <= 0 or self.threshold(top, k) > self.bound

    def threshold(self, top: np.ndarray, k: int) -> float:
        """The k-th score of ``top`` (0 with fewer)."""
        return float(self.scores[top[k - 1]]) if 0 < k <= len(top) else 0.0

    def narrowed(self, threshold: float) -> Scored:
        """The candidates again, leaving out only the lists whose reach sums below ``threshold`` (a top k's k-th
        score: any row that beats it holds another list's term, so this top k is exact)."""
        common: set[int] = set()
        total = 0.0
        for i in sorted(range(len(self.reach)), key=lambda i: self.reach[i]):
            if total + self.reach[i] >= threshold:
                break
            common.add(i)
            total += self.reach[i]
        return _candidates(self.postings, self.total_idf, self.sums, self.reach, common)

    def score_of(self, rows: np.ndarray) -> np.ndarray:
        """Scores of any rows (0 for a row holding no query term)."""
        scores: np.ndarray = self.sums[rows]
        return scores

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


def score_snapshot(built: Snapshot, terms: Sequence[str], *, prune: bool = True) -> Scored | None:
    """The query's scores over the snapshot (None: the snapshot knows none of ``terms``). ``prune``: terms in
    over ``COMMON_SHARE`` of the chunks make no row a candidate, when the query has another (module doc)."""
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
    # summed per chunk by bincount: linear in the postings plus one pass over the collection (~1 ms per
    # million chunks), where sorting the postings (np.unique) grew as P log P
    sums = np.bincount(np.concatenate([p for p, _ in postings]), weights=np.concatenate(weights), minlength=n)
    reach = tuple(float(w.max()) for w in weights)
    common = {i for i, (docs, _) in enumerate(postings) if len(docs) > COMMON_SHARE * n} if prune else set()
    return _candidates(tuple(postings), total_idf, sums.astype(np.float32), reach, common)


def _candidates(
    postings: tuple[tuple[np.ndarray, float], ...],
    total_idf: float,
    sums: np.ndarray,
    reach: tuple[float, ...],
    common: set[int],
) -> Scored:
    """The Scored whose candidates are the rows of every posting list but ``common`` (all of them if none)."""
    if len(common) == len(postings):
        common = set()
    touched = np.zeros(len(sums), dtype=bool)
    for i, (docs, _) in enumerate(postings):
        if i not in common:
            touched[docs] = True
    rows = np.flatnonzero(touched)
    bound = float(sum(reach[i] for i in common))
    return Scored(rows, sums[rows], postings, total_idf, sums, reach, frozenset(common), bound)


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
