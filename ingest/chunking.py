"""Token-aware chunking that keeps each chunk's page and heading.

LangChain's RecursiveCharacterTextSplitter does the splitting; lengths are measured
in tiktoken tokens (offline encoding) so ``chunk_tokens`` means what it says for the
prompt budget. Chunk ids are derived from document id, version (the file's hash),
position and content, so the same input always produces the same ids, and two versions
of a document never share one: a chunk's id says which version it belongs to, so writing
a new version can never relabel (and so hide) a chunk of the live one.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from langchain_text_splitters import RecursiveCharacterTextSplitter

from app.tokens import get_encoding
from ingest.loaders import Section


@dataclass(frozen=True)
class Chunk:
    id: str
    index: int
    text: str
    page: int | None
    heading: str | None
    content_hash: str
    section: str = ""  # id of the first chunk of its section: where the section's vector is kept
    section_chunks: int = 1  # how many chunks its section has
    context: str | None = None  # document title > section path: embedded and indexed above the text

    def embedding_text(self) -> str:
        """What gets embedded and indexed: the context line gives a short chunk its topic."""
        context = self.context if self.context is not None else self.heading
        return f"{context}\n{self.text}" if context else self.text


def context_line(title: str | None, heading: str | None) -> str | None:
    """The document title and the section path, the title left out when the path already starts with it
    (a Markdown file's first heading usually is its title)."""
    if not title or (heading and heading.split(" > ")[0].casefold() == title.casefold()):
        return heading
    return f"{title} > {heading}" if heading else title


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Bumped when loaders or chunking change what a file becomes: it is part of each document's version hash,
# so the next `kb ingest` re-extracts documents ingested before (unchanged chunks reuse cached vectors).
EXTRACTION = "2026-12: pdf outline sections, title context, section vectors, pages apart"


class Chunker:
    def __init__(self, chunk_tokens: int = 200, overlap_tokens: int = 30, encoding: str = "cl100k_base"):
        if overlap_tokens >= chunk_tokens:
            raise ValueError("overlap_tokens must be smaller than chunk_tokens")
        # what a document's version depends on besides its bytes (see EXTRACTION)
        self.signature = f"{EXTRACTION}|{chunk_tokens}|{overlap_tokens}|{encoding}\n"
        enc = get_encoding(encoding)
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_tokens,
            chunk_overlap=overlap_tokens,
            length_function=lambda text: len(enc.encode(text, disallowed_special=())),
            separators=["\n\n", "\n", ". ", "; ", ", ", " ", ""],
            keep_separator="end",
        )

    def chunk(
        self, document_id: str, sections: list[Section], version: str = "", title: str | None = None
    ) -> list[Chunk]:
        chunks: list[Chunk] = []
        head, heading = "", None
        for section in sections:
            # one section = consecutive parts under the same heading (a PDF section's pages)
            if section.heading is None or section.heading != heading:
                head, heading = "", section.heading
            for piece in self._splitter.split_text(section.text):
                text = piece.strip()
                if not text:
                    continue
                index = len(chunks)
                context = context_line(title, section.heading)
                digest = content_hash(f"{context or ''}\n{text}")
                chunk_id = (
                    f"{document_id}-{version[:12]}-{index:05d}-{digest[:12]}"
                    if version
                    else f"{document_id}-{index:05d}-{digest[:12]}"
                )
                head = (head or chunk_id) if section.is_section else ""
                chunks.append(
                    Chunk(chunk_id, index, text, section.page, section.heading, digest, head, context=context)
                )
        sizes = Counter(c.section for c in chunks)
        return [replace(c, section_chunks=sizes[c.section]) if c.section else c for c in chunks]


def section_vectors(chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
    """Each section's vector: the normalized mean of its chunks' vectors, keyed by its first chunk's id.

    Retrieval ranks a chunk with its section (app/rag/retrieval.py): measured on the shared datasets,
    the mean beat the section's first chunk and a separate embedding of the whole section (which the
    model truncates at 256 tokens), and it costs no extra model call."""
    sums: dict[str, np.ndarray] = {}
    for chunk, vector in zip(chunks, vectors, strict=True):
        v = np.asarray(vector, dtype=np.float32)
        sums[chunk.section] = sums[chunk.section] + v if chunk.section in sums else v.copy()
    return {head: total / (float(np.linalg.norm(total)) or 1.0) for head, total in sums.items() if head}
