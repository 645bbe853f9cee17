"""Ingestion benchmark: our pipeline vs the raw model and a plain LangChain pipeline, one run.

Corpus: N documents of real documentation text (the shared sqlite-docs BEIR corpus),
a fifth of them as 3-page PDFs (generated with fpdf2), the rest as Markdown. Prints:
  1. raw model throughput: SentenceTransformer.encode on our chunks (chunks/s)
  2. kb ingest first run, torch backend and onnx-int8 backend (chunks/s, vs 1)
  3. plain LangChain: pypdf pages / markdown → RecursiveCharacterTextSplitter →
     langchain_chroma.Chroma.from_documents with a sentence-transformers Embeddings
  4. re-ingest unchanged (vs first run)
  5. change 1% of documents and re-ingest
and the process's peak RSS. Usage: .venv/bin/python bench/bench_ingest.py [--docs 1000]
(needs the dev and bench extras: fpdf2, langchain-chroma).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sqlite-docs" / "corpus.jsonl"


def write_corpus(folder: Path, n_docs: int) -> None:
    from fpdf import FPDF

    rows = [json.loads(line) for line in DATASET.open()]
    rows = [r for r in rows if len(r["text"]) > 400]
    folder.mkdir(parents=True)
    cursor = 0
    for i in range(n_docs):
        if i % 5 == 0:  # a 3-page PDF
            pdf = FPDF()
            pdf.set_font("Helvetica", size=10)
            for _ in range(3):
                row = rows[cursor % len(rows)]
                cursor += 1
                pdf.add_page()
                text = f"{row['title']}\n\n{row['text'][:1200]}".encode("latin-1", "replace").decode("latin-1")
                pdf.multi_cell(0, 5, text)
            pdf.output(str(folder / f"doc-{i:05d}.pdf"))
        else:
            row = rows[cursor % len(rows)]
            cursor += 1
            (folder / f"doc-{i:05d}.md").write_text(f"# {row['title']}\n\n{row['text'][:1500]}\n")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def langchain_pipeline(folder: Path, model_path: str, persist: Path) -> tuple[float, int]:
    from langchain_chroma import Chroma
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from pypdf import PdfReader
    from sentence_transformers import SentenceTransformer

    class STEmbeddings(Embeddings):  # what langchain-huggingface's HuggingFaceEmbeddings does
        def __init__(self) -> None:
            self.model = SentenceTransformer(model_path, device="cpu")

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return self.model.encode(texts, batch_size=32, normalize_embeddings=True).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    embeddings = STEmbeddings()
    embeddings.embed_documents(["warm up"] * 32)
    started = time.perf_counter()
    docs = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".pdf":
            for number, page in enumerate(PdfReader(path).pages, start=1):
                docs.append(Document(page.extract_text() or "", metadata={"source": path.name, "page": number}))
        else:
            docs.append(Document(path.read_text(), metadata={"source": path.name}))
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=150)
    chunks = splitter.split_documents(docs)
    Chroma.from_documents(chunks, embeddings, persist_directory=str(persist), collection_name="bench")
    return time.perf_counter() - started, len(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from app.bootstrap import Components
    from app.settings import EmbeddingSettings, Settings
    from ingest.chunking import Chunker
    from ingest.files import document_id, iter_files
    from ingest.loaders import load
    from vectorstore.embeddings import Embedder, resolve_model_path

    work = Path(tempfile.mkdtemp(prefix="kb-bench-"))
    corpus = work / "corpus"
    write_corpus(corpus, args.docs)
    print(f"corpus: {args.docs} documents in {corpus} ({sum(1 for p in corpus.glob('*.pdf'))} PDFs of 3 pages)")

    chunker = Chunker()
    texts = []
    for path, source in iter_files([corpus]):
        loaded = load(path, path.read_bytes())
        texts += [c.embedding_text() for c in chunker.chunk(document_id("bench", source), loaded.sections)]
    embedder = Embedder()
    embedder.embed_documents(texts[:64])  # warm-up: the first encode is erratic
    started = time.perf_counter()
    embedder.embed_documents(texts)
    raw = len(texts) / (time.perf_counter() - started)
    print(f"1. raw SentenceTransformer.encode: {len(texts)} chunks, {raw:.1f} chunks/s")

    results = {}
    for backend in ("torch", "onnx-int8"):
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, data_dir=work / f"data-{backend}", embedding=EmbeddingSettings(backend=backend)
        )
        components = Components(settings, embedder=embedder if backend == "torch" else None)
        components.embedder.embed_documents(texts[:64])  # load + warm up outside the timing
        pipeline = components.ingest_pipeline
        started = time.perf_counter()
        report = pipeline.ingest([corpus], "bench")
        first = time.perf_counter() - started
        rate = report.chunks_written / first
        results[backend] = (first, rate)
        print(
            f"2. kb ingest first run [{backend}]: {report.chunks_written} chunks in {first:.1f}s = {rate:.1f} chunks/s "
            f"({rate / raw:.0%} of raw torch encode)"
        )
        started = time.perf_counter()
        pipeline.ingest([corpus], "bench")
        second = time.perf_counter() - started
        print(f"4. re-ingest unchanged [{backend}]: {second:.2f}s ({first / second:.0f}x faster than the first run)")
        changed = sorted(corpus.glob("*.md"))[: max(1, args.docs // 100)]
        for path in changed:
            path.write_text(path.read_text() + f"\n\nRevision note for {backend}: reviewed.\n")
        started = time.perf_counter()
        partial = pipeline.ingest([corpus], "bench")
        third = time.perf_counter() - started
        print(
            f"5. change {len(changed)} docs (1%) [{backend}]: {third:.2f}s, {partial.updated} updated, "
            f"{partial.chunks_embedded} chunks embedded ({third / first:.1%} of the first run)"
        )
        components.close()

    model_path = resolve_model_path("all-MiniLM-L6-v2")
    lc_seconds, lc_chunks = langchain_pipeline(corpus, model_path, work / "langchain")
    print(
        f"3. plain LangChain pipeline: {lc_chunks} chunks in {lc_seconds:.1f}s = {lc_chunks / lc_seconds:.1f} chunks/s"
    )
    for backend, (seconds, _) in results.items():
        print(f"   kb [{backend}] vs LangChain, same files, wall time: {lc_seconds / seconds:.2f}x faster")
    print(f"peak RSS: {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
