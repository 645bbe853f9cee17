"""Retrieval benchmark on BEIR-format datasets: dense vs lexical vs hybrid, through the real pipeline.

For each dataset: the baseline first, whole-section dense (one vector per corpus entry of
"title\ntext", which the model truncates at 256 tokens: what the datasets' README measures, no
chunking; cached in the work dir). Then every corpus entry becomes a Markdown file (``# title`` then the text),
the folder is ingested by the real IngestPipeline (real chunking, embedding, BM25 index),
every query runs through ``Retriever.search``, chunk hits are mapped back to corpus ids by
their source file (a document's rank is its best chunk's rank), and nDCG@10, Recall@10 and
MRR@10 are printed per mode. Also printed:
  - the relevance floor's effect: each dataset's queries against the *other* dataset's
    collection are off-topic questions that should be refused;
  - with --latency, hybrid search latency on a 10,000-chunk collection (in-process).
With --tune, a grid of fusion settings is scored (for choosing defaults, not per dataset).

Usage: .venv/bin/python bench/retrieval.py [--backend onnx-int8] [--work /tmp/kb-bench-retrieval]
       [--latency] [--tune] [DATASET_DIR ...]
The work dir keeps the ingested stores: a second run skips unchanged documents.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.bootstrap import Components
from app.rag.retrieval import SearchHit
from app.settings import EmbeddingSettings, RetrievalSettings, Settings
from vectorstore.manifest import DocumentRecord

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DEFAULT_DATASETS = [SHARED / "r-manuals", SHARED / "sqlite-docs"]
K = 10
SEARCH_CHUNKS = 40  # chunk hits per query; aggregated to (at least) K distinct documents


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_corpus(dataset: Path, folder: Path) -> dict[str, str]:
    """One Markdown file per corpus entry; returns file name → corpus id."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for row in read_jsonl(dataset / "corpus.jsonl"):
        name = hashlib.sha1(row["_id"].encode()).hexdigest()[:16] + ".md"
        text = "\n".join("\\" + line if line.lstrip().startswith("#") else line for line in row["text"].splitlines())
        path = folder / name
        body = f"# {row.get('title') or row['_id']}\n\n{text}\n"
        if not path.exists() or path.read_text(encoding="utf-8") != body:
            path.write_text(body, encoding="utf-8")
        names[name] = row["_id"]
    return names


def read_qrels(dataset: Path) -> dict[str, set[str]]:
    qrels: dict[str, set[str]] = {}
    for line in (dataset / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, cid, score = line.split("\t")
        if int(score) > 0:
            qrels.setdefault(qid, set()).add(cid)
    return qrels


def to_docs(hits: list[SearchHit], names: dict[str, str]) -> list[str]:
    docs: list[str] = []
    for h in hits:
        cid = names.get(str(h.metadata.get("source")))
        if cid is not None and cid not in docs:
            docs.append(cid)
    return docs[:K]


def metrics(ranked: list[str], gold: set[str]) -> tuple[float, float, float]:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked) if d in gold)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(gold), K)))
    recall = len(gold & set(ranked)) / len(gold)
    mrr = next((1 / (i + 1) for i, d in enumerate(ranked) if d in gold), 0.0)
    return dcg / ideal, recall, mrr


class Dataset:
    def __init__(self, path: Path, components: Components, work: Path):
        self.name = path.name
        self.collection = path.name
        self.names = write_corpus(path, work / "docs" / path.name)
        self.qrels = read_qrels(path)
        self.queries = [q for q in read_jsonl(path / "queries.jsonl") if q["_id"] in self.qrels]
        started = time.perf_counter()
        report = components.ingest_pipeline.ingest([work / "docs" / path.name], self.collection, prune=True)
        self.ingest_s = time.perf_counter() - started
        self.chunks = components.store.count(self.collection)
        print(
            f"{self.name}: {len(self.names)} documents → {self.chunks} chunks "
            f"({report.added} added, {report.unchanged} unchanged, {self.ingest_s:.0f} s); {len(self.queries)} queries",
            flush=True,
        )
        self.vectors = {q["_id"]: components.embedder.embed_query(q["text"]) for q in self.queries}

    def whole_sections(self, components: Components, dataset: Path, work: Path, backend: str) -> dict[str, float]:
        """The baseline: one embedding per whole corpus entry, ranked by cosine (no chunks, no BM25)."""
        rows = read_jsonl(dataset / "corpus.jsonl")
        cache = work / f"whole-{self.name}-{backend}.npy"
        if cache.exists():
            vectors = np.load(cache)
        else:
            texts = [f"{r.get('title') or r['_id']}\n{r['text']}" for r in rows]
            vectors = np.asarray(components.embedder.embed_documents(texts), dtype=np.float32)
            np.save(cache, vectors)
        ids = [r["_id"] for r in rows]
        totals = [0.0, 0.0, 0.0]
        for q in self.queries:
            order = np.argsort(-(vectors @ np.asarray(self.vectors[q["_id"]], dtype=np.float32)))[:K]
            for i, value in enumerate(metrics([ids[j] for j in order], self.qrels[q["_id"]])):
                totals[i] += value
        n = len(self.queries)
        return {"ndcg@10": totals[0] / n, "recall@10": totals[1] / n, "mrr@10": totals[2] / n}

    def evaluate(self, components: Components, mode: str, config: RetrievalSettings) -> dict[str, float]:
        totals = [0.0, 0.0, 0.0]
        for q in self.queries:
            hits = components.retriever.search(
                q["text"], [self.collection], SEARCH_CHUNKS, mode=mode,  # type: ignore[arg-type]
                config=config, query_vector=self.vectors[q["_id"]],
            )  # fmt: skip
            for i, value in enumerate(metrics(to_docs(hits, self.names), self.qrels[q["_id"]])):
                totals[i] += value
        n = len(self.queries)
        return {"ndcg@10": totals[0] / n, "recall@10": totals[1] / n, "mrr@10": totals[2] / n}


def top_evidence(components: Components, query: str, collection: str, vector: list[float]) -> list[tuple[float, float]]:
    """(cosine, coverage) of the chunks an answer would use (top 5 hybrid): what the floor looks at."""
    hits = components.retriever.search(query, [collection], 5, query_vector=vector)
    return [(h.dense or 0.0, h.coverage or 0.0) for h in hits]


def floor_report(components: Components, datasets: list[Dataset], work: Path) -> None:
    r = components.settings.retrieval
    pos: list[list[tuple[float, float]]] = []
    neg: list[list[tuple[float, float]]] = []
    for ds in datasets:
        for other in datasets:
            for q in other.queries:
                found = top_evidence(components, q["text"], ds.collection, other.vectors[q["_id"]])
                (pos if other is ds else neg).append(found)
    (work / "floor.json").write_text(json.dumps({"on_topic": pos, "off_topic": neg}))

    def best(found: list[tuple[float, float]], weight: float) -> float:
        return max((d + weight * c for d, c in found), default=0.0)

    print("\nrelevance floor: on-topic queries answered / off-topic queries (the other dataset's) refused")
    print("  evidence = cosine + w * coverage; rows: w, columns: floor")
    floors = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
    print("  w     " + "  ".join(f"{f:>9.2f}" for f in floors))
    for w in (0.0, 0.25, r.coverage_weight, 0.5):
        cells = []
        for f in floors:
            answered = sum(best(x, w) >= f for x in pos) / len(pos)
            refused = sum(best(x, w) < f for x in neg) / len(neg)
            cells.append(f"{answered:4.0%}/{refused:4.0%}")
        print(f"  {w:.2f}  " + "  ".join(cells))
    on = sum(best(x, r.coverage_weight) >= r.min_evidence for x in pos) / len(pos)
    off = sum(best(x, r.coverage_weight) < r.min_evidence for x in neg) / len(neg)
    print(f"  defaults (w={r.coverage_weight}, floor={r.min_evidence}): {on:.0%} answered, {off:.0%} refused")


def latency(components: Components, datasets: list[Dataset], target: int = 10_000) -> None:
    """Copy real chunks (vectors, texts, metadata) of both datasets into one 10k-chunk collection."""
    name = "latency-10k-sections"
    if components.store.exists(name) and components.store.count(name) == target:
        print(f"\n{name}: reusing {target} chunks")
    else:
        if components.store.exists(name):
            components.store.delete_collection(name)
        components.lexical.delete_collection(name)
        rows: list[tuple[str, Any, str, dict[str, Any]]] = []
        sections: dict[str, Any] = {}
        for ds in datasets:
            ids, texts, metas = components.store.get_all(ds.collection)
            vectors = components.store.get_embeddings(ds.collection, ids)
            sections.update(components.lexical.section_vectors(ds.collection, ids))
            rows += [(cid, vectors[cid].tolist(), t, m) for cid, t, m in zip(ids, texts, metas, strict=True)]
        copies = [(f"{cid}-{i // len(rows)}", v, t, dict(m), i // len(rows)) for i, (cid, v, t, m) in
                  ((i, rows[i % len(rows)]) for i in range(target))]  # fmt: skip
        documents: dict[str, str] = {}
        copied_sections = {}
        for cid, _, _, m, copy in copies:
            m["document_id"] = f"{m['document_id']}-{copy}"
            m["collection"] = name
            if m.get("section"):
                if m["section"] in sections and cid == f"{m['section']}-{copy}":
                    copied_sections[cid] = sections[m["section"]]
                m["section"] = f"{m['section']}-{copy}"
            documents[m["document_id"]] = m["doc_hash"]
        ids, vecs, texts, metas, _ = (list(x) for x in zip(*copies, strict=True))
        components.store.upsert(name, ids, vecs, texts, metas)
        components.lexical.upsert(name, ids, texts, metas, section_vectors=copied_sections)
        for doc_id, doc_hash in documents.items():  # live versions, so the manifest filter is timed too
            components.manifest.switch(DocumentRecord(name, doc_id, doc_id, doc_hash, (), 0, None, 0.0))
        print(f"\n{name}: built {components.store.count(name)} chunks")
    retriever = components.retriever
    queries = [(q["text"], ds.vectors[q["_id"]]) for ds in datasets for q in ds.queries]
    retriever.search(queries[0][0], [name], 5, query_vector=queries[0][1])  # builds the BM25 matrix once
    # side by side, alternating per query: ranking with sections (the default) and without (before #18)
    variants = {
        "with sections": retriever.config,
        "without sections": retriever.config.model_copy(update={"section_weight": 0.0}),
    }
    for label, with_embedding in (("search (query vector given)", False), ("embed query + search", True)):
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(3):
            for i, (text, vec) in enumerate(queries):
                # either order in turn: the second search of a query reuses its BM25 scores (LexicalIndex._last)
                for variant, config in list(variants.items())[:: 1 if i % 2 else -1]:
                    started = time.perf_counter()
                    retriever.search(text, [name], 5, query_vector=None if with_embedding else vec, config=config)
                    times[variant].append((time.perf_counter() - started) * 1000)
        for variant, found in times.items():
            found.sort()
            p50, p95 = found[len(found) // 2], found[int(len(found) * 0.95)]
            print(f"  hybrid top-5, {label}, {variant}: p50 {p50:.1f} ms, p95 {p95:.1f} ms over {len(found)} queries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--backend", default="onnx-int8", choices=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kb-bench-retrieval"))
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--latency-only", action="store_true", help="skip the quality figures")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=args.work / "data", embedding=EmbeddingSettings(backend=args.backend)
    )
    components = Components(settings)
    c, r = settings.chunking, settings.retrieval
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, backend {args.backend}, "
          f"chunks {c.chunk_tokens}/{c.overlap_tokens} tokens, retrieval {r.model_dump()}")  # fmt: skip
    datasets = [Dataset(path, components, args.work) for path in args.datasets]
    default = components.retriever.config
    if args.latency_only:
        latency(components, datasets)
        components.close()
        return
    print(f"\n{'dataset':12s} {'mode':8s} nDCG@10  R@10   MRR@10")
    for ds, path in zip(datasets, args.datasets, strict=True):
        m = ds.whole_sections(components, path, args.work, args.backend)
        print(f"{ds.name:12s} {'sections':8s} {m['ndcg@10']:.3f}    {m['recall@10']:.3f}  {m['mrr@10']:.3f}"
              "  (baseline: whole-section dense)", flush=True)  # fmt: skip
        for mode in ("dense", "lexical", "hybrid"):
            m = ds.evaluate(components, mode, default)
            print(f"{ds.name:12s} {mode:8s} {m['ndcg@10']:.3f}    {m['recall@10']:.3f}  {m['mrr@10']:.3f}", flush=True)
    if args.tune:
        print("\ntuning grid, hybrid nDCG@10 per dataset")
        grid = [
            default.model_copy(update={"fusion": "rrf", "lexical_weight": lw, "rrf_k": k})
            for lw in (0.5, 0.7)
            for k in (10, 60)
        ]
        grid += [default.model_copy(update={"fusion": "score", "bm25_weight": w, "mmr_lambda": lam})
                 for w in (0.05, 0.1, 0.15, 0.2) for lam in (1.0, 0.9)]  # fmt: skip
        grid += [default.model_copy(update={"section_weight": sw, "section_length_penalty": lp})
                 for sw in (0.0, 0.5, 1.0, 2.0) for lp in (0.0, 0.03, 0.05, 0.08)]  # fmt: skip
        for cfg in grid:
            scores = [ds.evaluate(components, "hybrid", cfg)["ndcg@10"] for ds in datasets]
            knobs = (
                f"rrf lexical_weight={cfg.lexical_weight} rrf_k={cfg.rrf_k}"
                if cfg.fusion == "rrf"
                else f"score bm25={cfg.bm25_weight} section={cfg.section_weight}/{cfg.section_length_penalty}"
            )
            print(f"  {knobs:38s} mmr={cfg.mmr_lambda}: " + "  ".join(f"{s:.3f}" for s in scores), flush=True)
    if len(datasets) > 1:
        floor_report(components, datasets, args.work)
    if args.latency:
        latency(components, datasets)
    components.close()


if __name__ == "__main__":
    main()
