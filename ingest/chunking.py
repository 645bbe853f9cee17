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
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from app.llm.tokens import get_encoding
from ingest.loaders import Section


@dataclass(frozen=True)
class Chunk:
    id: str
    index: int
    text: str
    page: int | None
    heading: str | None
    content_hash: str

    def embedding_text(self) -> str:
        """What gets embedded: the heading gives a short chunk its topic."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Chunker:
    def __init__(self, chunk_tokens: int = 200, overlap_tokens: int = 30, encoding: str = "cl100k_base"):
        if overlap_tokens >= chunk_tokens:
            raise ValueError("overlap_tokens must be smaller than chunk_tokens")
        enc = get_encoding(encoding)
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_tokens,
            chunk_overlap=overlap_tokens,
            length_function=lambda text: len(enc.encode(text, disallowed_special=())),
            separators=["\n\n", "\n", ". ", "; ", ", ", " ", ""],
            keep_separator="end",
        )

    def chunk(self, document_id: str, sections: list[Section], version: str = "") -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in sections:
            for piece in self._splitter.split_text(section.text):
                text = piece.strip()
                if not text:
                    continue
                index = len(chunks)
                digest = content_hash(f"{section.heading or ''}\n{text}")
                chunks.append(
                    Chunk(
                        id=f"{document_id}-{version[:12]}-{index:05d}-{digest[:12]}"
                        if version
                        else f"{document_id}-{index:05d}-{digest[:12]}",
                        index=index,
                        text=text,
                        page=section.page,
                        heading=section.heading,
                        content_hash=digest,
                    )
                )
        return chunks
