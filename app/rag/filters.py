"""Metadata filters for search (source, page range, heading), in both retrievers' terms.

A filter must narrow each retriever's own candidate list (a Chroma ``where`` clause, a
predicate over the BM25 index's chunk metadata), not the fused result: post-filtering a
top-40 list could leave nothing although matching chunks exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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

    def empty(self) -> bool:
        return self.where() is None
