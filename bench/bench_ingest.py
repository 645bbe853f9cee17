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

    def part_dir(i: int) -> Path:
        path = folder / f"part-{i % 4}"
        path.mkdir(exist_ok=True)
        return path

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
            pdf.output(str(part_dir(i) / f"doc-{i:05d}.pdf"))
        else:
            row = rows[cursor % len(rows)]
            cursor += 1
            (part_dir(i) / f"doc-{i:05d}.md").write_text(f"# {row['title']}\n\n{row['text'][:1500]}\n")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_langchain(model_path: str):  # type: ignore[no-untyped-def]
    """A plain LangChain pipeline: pypdf pages / markdown → RecursiveCharacterTextSplitter → Chroma.from_documents."""
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

    def run(folder: Path, persist: Path) -> int:
        docs = []
        for path in sorted(folder.iterdir()):
            if path.suffix == ".pdf":
                for number, page in enumerate(PdfReader(path).pages, start=1):
                    docs.append(Document(page.extract_text() or "", metadata={"source": path.name, "page": number}))
            else:
                docs.append(Document(path.read_text(), metadata={"source": path.name}))
        chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=150).split_documents(docs)
        Chroma.from_documents(chunks, embeddings, persist_directory=str(persist), collection_name="bench")
        return len(chunks)

    return run


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
    print(f"corpus: {args.docs} documents in {corpus} ({sum(1 for p in corpus.glob('*/*.pdf'))} PDFs of 3 pages)")

    parts = sorted(p for p in corpus.iterdir() if p.is_dir())
    chunker = Chunker()
    part_texts = []
    for part in parts:
        texts = []
        for path, source in iter_files([part]):
            loaded = load(path, path.read_bytes())
            chunks = chunker.chunk(document_id("bench", source), loaded.sections, title=loaded.title)
            texts += [c.embedding_text() for c in chunks]
        part_texts.append(texts)
    raw_embedder = Embedder()
    raw_embedder.embed_documents(part_texts[0][:64])  # warm-up: the first encode is erratic

    pipelines = {}
    for backend in ("torch", "onnx-int8"):
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, data_dir=work / f"data-{backend}", embedding=EmbeddingSettings(backend=backend)
        )
        components = Components(settings, embedder=raw_embedder if backend == "torch" else None)
        components.embedder.embed_documents(part_texts[0][:64])  # load + warm up outside the timing
        pipelines[backend] = components
    langchain = make_langchain(resolve_model_path("all-MiniLM-L6-v2"))

    # The machine is shared and noisy: run the methods interleaved, one corpus part at a time and in
    # rotating order, so load changes hit all of them alike; sum times per method.
    seconds = {name: 0.0 for name in ("raw", "torch", "onnx-int8", "langchain")}
    chunks = dict.fromkeys(seconds, 0)
    for round_no, (part, texts) in enumerate(zip(parts, part_texts, strict=True)):
        methods = ["raw", "torch", "onnx-int8", "langchain"]
        methods = methods[round_no % 4 :] + methods[: round_no % 4]
        for method in methods:
            started = time.perf_counter()
            if method == "raw":
                raw_embedder.embed_documents(texts)
                count = len(texts)
            elif method == "langchain":
                count = langchain(part, work / f"langchain-{round_no}")
            else:
                count = pipelines[method].ingest_pipeline.ingest([part], "bench").chunks_written
            seconds[method] += time.perf_counter() - started
            chunks[method] += count
        print(f"  round {round_no + 1}/{len(parts)} done", flush=True)

    raw = chunks["raw"] / seconds["raw"]
    print(f"1. raw SentenceTransformer.encode (torch): {chunks['raw']} chunks, {raw:.1f} chunks/s")
    for backend in ("torch", "onnx-int8"):
        rate = chunks[backend] / seconds[backend]
        print(
            f"2. kb ingest first run [{backend}]: {chunks[backend]} chunks in {seconds[backend]:.1f}s = {rate:.1f} "
            f"chunks/s ({rate / raw:.0%} of raw torch encode)"
        )
    print(
        f"3. plain LangChain: {chunks['langchain']} chunks in {seconds['langchain']:.1f}s "
        f"= {chunks['langchain'] / seconds['langchain']:.1f} chunks/s"
    )
    for backend in ("torch", "onnx-int8"):
        print(f"   kb [{backend}] vs LangChain, same files, wall time: {seconds['langchain'] / seconds[backend]:.2f}x")

    for backend, components in pipelines.items():
        pipeline = components.ingest_pipeline
        first = seconds[backend]
        started = time.perf_counter()
        for part in parts:
            pipeline.ingest([part], "bench")
        again = time.perf_counter() - started
        print(f"4. re-ingest unchanged [{backend}]: {again:.2f}s ({first / again:.0f}x faster than the first run)")
        changed = sorted(corpus.glob("*/*.md"))[: max(1, args.docs // 100)]
        for path in changed:
            path.write_text(path.read_text() + f"\n\nRevision note for {backend}: reviewed.\n")
        started = time.perf_counter()
        updated = embedded = 0
        for part in parts:
            report = pipeline.ingest([part], "bench")
            updated += report.updated
            embedded += report.chunks_embedded
        third = time.perf_counter() - started
        print(
            f"5. change {len(changed)} docs (1%) [{backend}]: {third:.2f}s, {updated} updated, "
            f"{embedded} chunks embedded ({third / first:.1%} of the first run)"
        )
        components.close()
    print(f"peak RSS of the whole run: {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
