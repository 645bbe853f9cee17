"""Numbered sources for the prompt and citations for the answer.

Passages are numbered [1]..[n] in retrieval order; the model cites them by number.
Only passages the answer actually cites become citations, so every marker in the
text maps to exactly one returned citation and nothing uncited is shown.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from vectorstore.store import Hit

_MARKER = re.compile(r"\[(\d{1,3})\]")
SNIPPET_CHARS = 300


@dataclass(frozen=True)
class Citation:
    n: int
    source: str
    page: int | None
    heading: str | None
    chunk_id: str
    score: float
    snippet: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def passage_label(n: int, hit: Hit) -> str:
    meta = hit.metadata
    where = str(meta.get("source", "?"))
    if meta.get("page") is not None:
        where += f", page {meta['page']}"
    if meta.get("heading"):
        where += f" — {meta['heading']}"
    return f"[{n}] ({where})\n{hit.text}"


def cited_numbers(text: str) -> list[int]:
    seen: list[int] = []
    for match in _MARKER.finditer(text):
        n = int(match.group(1))
        if n not in seen:
            seen.append(n)
    return seen


def build_citations(answer: str, hits: list[Hit]) -> list[Citation]:
    citations = []
    for n in sorted(cited_numbers(answer)):
        if 1 <= n <= len(hits):
            hit = hits[n - 1]
            snippet = hit.text if len(hit.text) <= SNIPPET_CHARS else hit.text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + "…"
            page = hit.metadata.get("page")
            citations.append(
                Citation(
                    n=n,
                    source=str(hit.metadata.get("source", "")),
                    page=int(page) if page is not None else None,
                    heading=hit.metadata.get("heading"),
                    chunk_id=hit.id,
                    score=round(hit.score, 4),
                    snippet=snippet,
                )
            )
    return citations
