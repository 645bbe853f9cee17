"""What one writer per document costs ingestion: the pipeline with the embedding cache warm.

With every vector already in the embedding cache, ingesting files into a new collection measures
the pipeline itself (read, hash, parse, chunk, upsert into Chroma and BM25, the manifest switch,
and the per-document claim and release), not the model. Prints the time to ingest N Markdown
files of real documentation text (the shared sqlite-docs corpus) into a new collection, and to
re-ingest them unchanged. Run it on two checkouts, alternating, to compare:

    .venv/bin/python bench/ingest_overhead.py [--docs 1000] [--data /tmp/kb-overhead]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sqlite-docs" / "corpus.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/kb-overhead"))
    args = parser.parse_args()
    from app.bootstrap import Components
    from app.settings import Settings

    logging.disable(logging.WARNING)
    docs = args.data / f"docs-{args.docs}"
    if not docs.exists():
        rows = [json.loads(line) for line in DATASET.open()]
        rows = [r for r in rows if len(r["text"]) > 400][: args.docs]
        docs.mkdir(parents=True)
        for i, row in enumerate(rows):
            (docs / f"doc-{i:04d}.md").write_text(f"# {row.get('title') or i}\n\n{row['text']}\n")
    components = Components(Settings(_env_file=None, data_dir=args.data / "data"))  # type: ignore[call-arg]
    pipeline = components.ingest_pipeline
    pipeline.ingest([docs], "warm-up")  # fills the embedding cache (slow once), then it is only a cache
    name = f"run-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    report = pipeline.ingest([docs], name)
    first = time.perf_counter() - started
    started = time.perf_counter()
    pipeline.ingest([docs], name)
    again = time.perf_counter() - started
    print(
        f"{report.added} files, {report.chunks_written} chunks ({report.chunks_embedded} embedded): "
        f"new collection {first:.2f} s ({first / report.added * 1000:.2f} ms a file), unchanged {again:.3f} s"
    )
    components.close()


if __name__ == "__main__":
    main()
