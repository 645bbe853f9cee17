"""Metadata filters for search (source, page range, heading), in both retrievers' terms.

A filter must narrow each retriever's own candidate list (a Chroma ``where`` clause, a
mask over the BM25 snapshot's per-chunk columns), not the fused result: post-filtering a
top-40 list could leave nothing although matching chunks exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vectorstore.lexical_build import NO_PAGE, Snapshot, find_sorted


@dataclass(frozen=True)
class SearchFilters:
    """Optional metadata filters, applied inside both retrievers (not after them)."""

    sources: tuple[str, ...] = ()
    page_min: int | None = None
    page_max: int | None = None
    heading: str | None = None
    # Versions with chunks in the store that are not live (being written, or left by a crash): excluded
    # inside each retriever so they cannot crowd live chunks out of the candidate lists. Set by the
    # retriever from the manifest, not by callers.
    exclude_hashes: tuple[str, ...] = ()

    def where(self) -> dict[str, Any] | None:
        clauses: list[dict[str, Any]] = []
        if self.exclude_hashes:
            clauses.append({"doc_hash": {"$nin": list(self.exclude_hashes)}})
        if self.sources:
            clauses.append({"source": {"$in": list(self.sources)}})
        if self.page_min is not None:
            clauses.append({"page": {"$gte": self.page_min}})
        if self.page_max is not None:
            clauses.append({"page": {"$lte": self.page_max}})
        if self.heading is not None:
            clauses.append({"heading": self.heading})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def accept(self, meta: dict[str, Any]) -> bool:
        page = meta.get("page")
        return (
            (not self.sources or meta.get("source") in self.sources)
            and (self.page_min is None or (page is not None and page >= self.page_min))
            and (self.page_max is None or (page is not None and page <= self.page_max))
            and (self.heading is None or meta.get("heading") == self.heading)
            and (not self.exclude_hashes or meta.get("doc_hash") not in self.exclude_hashes)
        )

    def mask(self, snapshot: Snapshot, rows: np.ndarray | None = None) -> np.ndarray:
        """``accept`` for the given rows of a BM25 snapshot (default: all) at once: numpy, not a Python loop."""
        rows = np.arange(len(snapshot)) if rows is None else rows
        keep = np.ones(len(rows), dtype=bool)
        if self.sources:
            keep &= np.isin(snapshot.source_codes[rows], find_sorted(snapshot.sources, self.sources))
        if self.page_min is not None or self.page_max is not None:
            pages = snapshot.pages[rows]
            keep &= pages != NO_PAGE
            if self.page_min is not None:
                keep &= pages >= self.page_min
            if self.page_max is not None:
                keep &= pages <= self.page_max
        if self.heading is not None:
            keep &= np.isin(snapshot.heading_codes[rows], find_sorted(snapshot.headings, (self.heading,)))
        if self.exclude_hashes:
            keep &= ~np.isin(snapshot.hash_codes[rows], find_sorted(snapshot.hashes, self.exclude_hashes))
        return keep

    def empty(self) -> bool:
        return self.where() is None
