"""Ingestion, kb against a plain LangChain pipeline, side by side on the same real PDF manuals.

The folder is the seven R manuals from Debian's r-doc-pdf package (677 pages):
    apt-get download r-doc-pdf && dpkg-deb -x r-doc-pdf_*.deb x    # --pdf-dir x/usr/share/R/doc/manual
Both pipelines run as whole processes, timed from the outside, in alternating order, each into an
empty store: `kb ingest DIR` (embedded Chroma, defaults) and bench/langchain_peer.py (PyPDFLoader →
RecursiveCharacterTextSplitter(1000, 200) → HuggingFaceEmbeddings → Chroma.from_documents). The ONNX
export of kb's model is made before the first run (it is made once per machine and kept).

Then, on the last run's stores: page hit@5 on the R FAQ's real questions (bench/pdf_pages.py finds the
page of each answer in R-FAQ.pdf): kb's /search as shipped (hybrid) and dense only, LangChain's
similarity_search. And where kb's time goes, each stage alone in this process: PDF parsing (kb's
loader), chunking (tiktoken lengths), the embedding model's own rate on kb's chunks (the ceiling),
and writing the chunks (a pipeline run with the documents already parsed and the vectors precomputed,
minus the chunking).

Usage: .venv/bin/python bench/ingest_vs_langchain.py --pdf-dir DIR [--rounds 3] [--work /tmp/kb-bench-lc]
       [--before "env PYTHONPATH=OLD_CHECKOUT .venv/bin/python -m app.cli"]   (an older kb in the same rounds)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.rag.options import SearchOptions

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
PY = sys.executable


def timed(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run a whole process; its wall time, CPU time and peak RSS (from wait4, this child only)."""
    started = time.perf_counter()
    with log.open("w") as out:
        # not from this checkout's folder: `python -m app.cli` of another checkout would import this one's
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{cmd[:3]} failed ({status}); see {log}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def run_kb(kb: list[str], pdf_dir: Path, data: Path, log: Path) -> dict[str, float]:
    shutil.rmtree(data, ignore_errors=True)
    env = {**os.environ, "KB_DATA_DIR": str(data)}
    return timed([*kb, "ingest", str(pdf_dir), "--collection", "manuals"], env, log)


def run_langchain(pdf_dir: Path, persist: Path, log: Path) -> dict[str, float]:
    shutil.rmtree(persist, ignore_errors=True)
    return timed([PY, str(ROOT / "bench" / "langchain_peer.py"), str(pdf_dir), str(persist)], dict(os.environ), log)


def page_hits(cases: list[dict[str, Any]], kb_data: Path, lc_store: Path) -> dict[str, float]:
    """Page hit@5 on the R FAQ questions: kb hybrid and dense, LangChain similarity_search."""
    from app.bootstrap import Components
    from app.settings import Settings

    hits: dict[str, float] = {}
    components = Components(Settings(_env_file=None, data_dir=kb_data))  # type: ignore[call-arg]
    for mode in ("hybrid", "dense"):
        found = 0
        for case in cases:
            top = components.rag.search(case["question"], ["manuals"], SearchOptions(top_k=5, mode=mode))  # type: ignore[arg-type]
            found += any(
                h.metadata.get("source") == "R-FAQ.pdf" and h.metadata.get("page") in case["pages"] for h in top
            )
        hits[f"kb {mode}"] = found / len(cases)
    components.close()
    questions = "".join(json.dumps({"id": c["id"], "text": c["question"]}) + "\n" for c in cases)
    out = subprocess.run(
        [PY, str(ROOT / "bench" / "langchain_peer.py"), "--query", str(lc_store)],
        input=questions, capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    tops = {row["id"]: row["top"] for row in map(json.loads, out.splitlines())}
    found = sum(any(name == "R-FAQ.pdf" and page in c["pages"] for name, page in tops[c["id"]]) for c in cases)
    hits["langchain"] = found / len(cases)
    return hits


def stages(pdf_dir: Path, work: Path) -> dict[str, float]:
    """kb's stages one at a time, in this process: parse, chunk, embed (the model alone), write."""
    from app.bootstrap import Components
    from app.settings import Settings
    from ingest.chunking import Chunker
    from ingest.loaders import load

    files = sorted(pdf_dir.glob("*.pdf"))
    t = time.perf_counter()
    docs = [load(path, path.read_bytes()) for path in files]
    parse = time.perf_counter() - t
    chunker = Chunker()
    t = time.perf_counter()
    chunks = [c for i, d in enumerate(docs) for c in chunker.chunk(f"d{i}", d.sections, "v1", d.title)]
    chunk = time.perf_counter() - t
    data = work / "stages"
    shutil.rmtree(data, ignore_errors=True)
    components = Components(Settings(_env_file=None, data_dir=data))  # type: ignore[call-arg]
    model = components.embedder
    texts = [c.embedding_text() for c in chunks]
    t = time.perf_counter()
    vectors = model.embed_documents(texts)
    embed = time.perf_counter() - t
    known = dict(zip(texts, vectors, strict=True))

    class Precomputed:  # the pipeline's embedder with the vectors already made: what is left is writing
        name = model.name
        dimension = model.dimension

        def embed_documents(self, batch: list[str]) -> list[list[float]]:
            return [known[text] for text in batch]

    import ingest.pipeline

    parsed = {path.name: doc for path, doc in zip(files, docs, strict=True)}
    pipeline = components.ingest_pipeline
    pipeline.embedder.inner = Precomputed()  # type: ignore[attr-defined]  # the embedding cache still writes
    real_load = ingest.pipeline.load
    ingest.pipeline.load = lambda path, data, limits=None: parsed[path.name]  # type: ignore[assignment]
    try:  # what is left: hashing, chunking, writing (Chroma, BM25 rows, manifest, embedding cache)
        t = time.perf_counter()
        pipeline.ingest(files, "manuals")
        chunk_and_write = time.perf_counter() - t
    finally:
        ingest.pipeline.load = real_load
    components.close()
    return {
        "chunks": len(chunks), "parse_s": parse, "chunk_s": chunk, "embed_s": embed,
        "embed_chunks_per_s": len(chunks) / embed, "write_s": chunk_and_write - chunk,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pdf-dir", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kb-bench-lc"))
    parser.add_argument("--before", help="also run another checkout's kb: 'env PYTHONPATH=DIR python -m app.cli'")
    args = parser.parse_args(argv)
    from pdf_pages import answer_pages
    from pypdf import PdfReader

    from app.settings import Settings
    from vectorstore.embeddings import load_embedder

    args.work.mkdir(parents=True, exist_ok=True)
    pdfs = sorted(args.pdf_dir.glob("*.pdf"))
    pages = sum(len(PdfReader(p).pages) for p in pdfs)
    print(
        f"{len(pdfs)} PDFs, {pages} pages, {sum(p.stat().st_size for p in pdfs) / 1e6:.1f} MB; load {os.getloadavg()}"
    )
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    load_embedder(
        settings.embedding.model, backend=settings.embedding.backend, cache_dir=settings.embedding.export_dir()
    )
    runs: dict[str, list[dict[str, float]]] = {"kb": [], "langchain": []} | ({"before": []} if args.before else {})
    kb = {"kb": [str(Path(PY).parent / "kb")], "before": (args.before or "").split()}
    for i in range(args.rounds):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))
        for name in order:
            log = args.work / f"{name}-{i}.log"
            if name in kb:
                result = run_kb(kb[name], args.pdf_dir, args.work / f"{name}-data", log)
            else:
                result = run_langchain(args.pdf_dir, args.work / "lc-store", log)
            runs[name].append(result)
            print(f"round {i + 1} {name:9s} wall {result['wall_s']:6.1f} s  cpu {result['cpu_s']:6.1f} s  "
                  f"peak RSS {result['rss_mb']:5.0f} MB  load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    kb_wall = [r["wall_s"] for r in runs["kb"]]
    lc_wall = [r["wall_s"] for r in runs["langchain"]]
    ratios = [lc / kb for kb, lc in zip(kb_wall, lc_wall, strict=True)]
    print(f"LangChain / kb wall time per round: {', '.join(f'{r:.2f}x' for r in ratios)}; "
          f"totals {sum(lc_wall):.1f} / {sum(kb_wall):.1f} s = {sum(lc_wall) / sum(kb_wall):.2f}x")  # fmt: skip
    lc_chunks = json.loads((args.work / f"langchain-{args.rounds - 1}.log").read_text().splitlines()[-1])["chunks"]
    cases, missing = answer_pages(args.pdf_dir / "R-FAQ.pdf")
    hits = page_hits(cases, args.work / "kb-data", args.work / "lc-store")
    if args.before:
        before = runs["before"]
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in before)
        print(f"before: {walls} s; "
              f"LangChain / before {sum(lc_wall) / sum(r['wall_s'] for r in before):.2f}x")  # fmt: skip
    print(f"page hit@5 on {len(cases)} R FAQ questions ({missing} answers not found in the PDF): "
          + ", ".join(f"{k} {v:.3f}" for k, v in hits.items()))  # fmt: skip
    where = stages(args.pdf_dir, args.work)
    print(json.dumps({"kb_stages": where, "langchain_chunks": lc_chunks}, indent=1))
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "pages": pages, "runs": runs,
              "ratios": ratios, "page_hit_at_5": hits, "kb_stages": where, "langchain_chunks": lc_chunks}  # fmt: skip
    (args.work / "results.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
