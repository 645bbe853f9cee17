"""What a Chroma server costs per query compared with embedded Chroma.

Same vectors, same queries, both modes of ``VectorStore``: embedded (PersistentClient) and
http (a ``chroma run`` subprocess on 127.0.0.1). Measures the retriever's dense call as it
runs in production (top ``--k`` candidates with their stored vectors), with and without a
selective ``where`` filter (one document's 20 chunks, as a ``sources`` filter), and the bulk
upsert. Random unit vectors: HNSW cost depends on the count and dimension, not the content.

Usage: .venv/bin/python bench/store_modes.py [--chunks 10000] [--queries 300] [--k 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from servers import chroma_server  # noqa: E402  (bench/servers.py)

from vectorstore.store import VectorStore  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def run(store: VectorStore, vectors: np.ndarray, queries: np.ndarray, k: int) -> dict[str, float]:
    n = len(vectors)
    ids = [f"c{i}" for i in range(n)]
    metas = [{"document_id": f"d{i % 500}", "collection": "bench"} for i in range(n)]
    texts = [f"chunk {i} " * 40 for i in range(n)]
    started = time.perf_counter()
    store.upsert("bench", ids, vectors.tolist(), texts, metas)
    upsert_s = time.perf_counter() - started
    for q in queries[:20]:  # warm-up
        store.query("bench", q.tolist(), k, with_embeddings=True)
    plain, filtered = [], []
    for q in queries:
        t = time.perf_counter()
        store.query("bench", q.tolist(), k, with_embeddings=True)
        plain.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        store.query("bench", q.tolist(), k, {"document_id": "d7"}, with_embeddings=True)
        filtered.append((time.perf_counter() - t) * 1000)
    return {
        "upsert_s": upsert_s,
        "p50": statistics.median(plain),
        "p95": _pct(plain, 95),
        "where_p50": statistics.median(filtered),
        "where_p95": _pct(filtered, 95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=40)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(args.chunks, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(args.chunks, args.queries, replace=False)] + 0.05 * rng.normal(
        size=(args.queries, 384)
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["embedded"] = run(VectorStore.embedded(Path(tmp) / "chroma"), vectors, queries, args.k)
        with chroma_server(Path(tmp)) as srv:
            results["http"] = run(VectorStore.http(srv.host, srv.port), vectors, queries, args.k)
    print(f"{args.chunks} x 384-d vectors, top {args.k} with stored vectors, {args.queries} queries")
    print("| mode | upsert | query p50 / p95 | with where p50 / p95 |")
    print("|---|---|---|---|")
    for mode, r in results.items():
        print(
            f"| {mode} | {r['upsert_s']:.1f} s | {r['p50']:.1f} / {r['p95']:.1f} ms "
            f"| {r['where_p50']:.1f} / {r['where_p95']:.1f} ms |"
        )


if __name__ == "__main__":
    main()
