"""What a chunk carries besides its text and vector: the metadata ingestion writes and every reader uses.

The vector store owns this type because it stores it (in Chroma's metadata and the BM25 table) and
hands it back with every hit; ingestion builds it, retrieval filters on it, citations read the page
and heading from it. Before it was a ``dict[str, Any]`` and ``meta["page"]`` was spelt out in a
dozen places; now a misspelt key is a type error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Required, TypedDict, cast


class ChunkMetadata(TypedDict, total=False):
    collection: Required[str]  # the user-facing collection name
    source: Required[str]  # the document's path within its collection, as listings and citations show it
    document_id: Required[str]  # sha of collection + source: the same document across versions
    doc_hash: Required[str]  # content hash of the document version the chunk belongs to
    title: Required[str]
    chunk_index: Required[int]  # position within the document
    content_hash: Required[str]  # of the chunk's text: the embedding cache's key
    page: int  # 1-based page of a PDF where the chunk starts; absent for formats without pages
    heading: str  # the nearest heading above the chunk ("1 Introduction")
    section: str  # the section the chunk belongs to (for section ranking)
    section_chunks: int  # how many chunks that section has


# A Chroma ``where`` filter ({"source": "a.md"}, {"$and": [...]}): not chunk metadata, a query over it.
Where = dict[str, Any]


def parsed_metadata(text: str | bytes) -> ChunkMetadata:
    """A chunk's metadata from its JSON (the BM25 snapshot, the chunks table): json.loads makes a new dict,
    so it is typed, not copied again (this runs for every hit a search returns)."""
    return cast(ChunkMetadata, json.loads(text))


def as_metadata(stored: Mapping[str, Any] | None) -> ChunkMetadata:
    """A chunk's metadata as a store hands it back (Chroma's dict, a JSON column): a copy, typed. Not
    checked key by key: stores written by earlier versions may lack keys added since (``.get`` them)."""
    return cast(ChunkMetadata, dict(stored or {}))
