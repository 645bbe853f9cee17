"""The 10,000-chunk collection the HTTP query benchmark asks (bench/http_query.py).

Real documentation where the shared datasets are present (r-manuals, then sqlite-docs sections,
one Markdown file each), generated policy-like pages where they are not; ingested by the real
pipeline in growing batches until the collection holds at least TARGET_CHUNKS chunks. Built once
under the given data dir; a later run finds the collection complete and reuses it.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
DATASETS = [SHARED / "r-manuals", SHARED / "sqlite-docs"]
COLLECTION = "bench10k"
TARGET_CHUNKS = 10_000


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def source_documents() -> tuple[list[tuple[str, str]], list[str]]:
    """(file name, Markdown text) per section, and the datasets' real questions."""
    docs: list[tuple[str, str]] = []
    questions: list[str] = []
    for ds in DATASETS:
        if not (ds / "corpus.jsonl").exists():
            continue
        for i, row in enumerate(read_jsonl(ds / "corpus.jsonl")):
            text = "\n".join("\\" + ln if ln.lstrip().startswith("#") else ln for ln in row["text"].splitlines())
            docs.append((f"{ds.name}-{i:05d}.md", f"# {row.get('title') or row['_id']}\n\n{text}\n"))
        questions += [q["text"] for q in read_jsonl(ds / "queries.jsonl")]
    if not docs:
        docs, questions = synthetic_documents()
    return docs, questions


def synthetic_documents(n: int = 4000) -> tuple[list[tuple[str, str]], list[str]]:
    """Policy-like pages made of varied sentences: used only when the shared datasets are absent."""
    rng = random.Random(7)
    topics = ["travel", "expenses", "laptops", "passwords", "parental leave", "overtime", "training budget",
              "remote work", "security incidents", "pensions", "health insurance", "office access"]  # fmt: skip
    verbs = ["must be approved by", "is reimbursed by", "is reviewed every quarter by", "is reported to"]
    owners = ["your manager", "the finance team", "IT support", "HR", "the security office", "the works council"]
    docs, questions = [], []
    for i in range(n):
        topic = topics[i % len(topics)]
        lines = [f"# {topic.title()} policy, part {i // len(topics) + 1}"]
        for _ in range(12):
            days, amount = rng.randint(2, 40), rng.randint(10, 900)
            clause = f"{rng.choice(verbs)} {rng.choice(owners)} within {days} days"
            lines.append(f"Any request about {topic} over {amount} euros {clause}; keep the receipts for a year.")
        docs.append((f"synthetic-{i:05d}.md", "\n\n".join(lines) + "\n"))
    questions = [f"Who approves {t} requests over {a} euros?" for t in topics for a in (50, 200, 500, 800)]
    return docs, questions


def build_collection(data_dir: Path, docs: list[tuple[str, str]]) -> int:
    """Ingest sections in growing batches until the collection holds >= TARGET_CHUNKS chunks."""
    from app.bootstrap import Components
    from app.settings import Settings

    components = Components(Settings(_env_file=None, data_dir=data_dir / "data"))  # type: ignore[call-arg]
    try:
        store = components.store
        count = store.count(COLLECTION) if store.exists(COLLECTION) else 0
        corpus = data_dir / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        written = len(list(corpus.iterdir()))
        while count < TARGET_CHUNKS and written < len(docs):
            per_file = count / written if written and count else 3.0
            more = max(1, int((TARGET_CHUNKS - count) / per_file * 0.98))
            for name, text in docs[written : written + more]:
                (corpus / name).write_text(text, encoding="utf-8")
            written = min(len(docs), written + more)
            started = time.perf_counter()
            report = components.ingest_pipeline.ingest([corpus], COLLECTION)
            count = store.count(COLLECTION)
            print(
                f"  ingested {report.added} files in {time.perf_counter() - started:.0f} s: {count} chunks", flush=True
            )
        return count
    finally:
        components.close()
