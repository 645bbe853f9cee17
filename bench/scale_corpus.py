"""The collections bench/scale.py measures: 10k, 100k and 1M chunks from real text and real vectors.

How they are built (the benchmark prints this): a base of ~10,000 chunks is ingested once by the real
pipeline (bench/corpus10k.py: the shared r-manuals and sqlite-docs sections, embedded by the real
model). A collection of N chunks is the base itself plus derived copies of it until it holds N chunks:
copy k of a base document is a new document (its own source, document id, version hash and chunk ids)
whose chunks are the base chunks' text with the sentences rotated by k and one sentence of another
random base chunk appended, and whose vectors are ``normalize(0.85 v + 0.15 v_other + noise)``
(Gaussian noise, sigma 0.02 per dimension): mean cosine to the base chunk ~0.9, so the copies spread
around the real vectors instead of sitting on them. Embedding a million chunks would take this 2-core
machine about three hours; deriving them takes minutes.

Everything is written through kb's own stores in ingestion's order (Chroma, then the BM25 table with
its section vectors, then the manifest rows that make each version live), so the query path, the
manifest's live-version filter and the lexical index see what an ingestion of N chunks leaves, and
nothing in them knows the difference.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCALE_COLLECTION = "scale"
_BATCH_DOCS = 400  # documents per write batch (~1,000 chunks)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Base:
    """The base collection's chunks, grouped by document, with their vectors."""

    ids: list[str]
    texts: list[str]
    metas: list[dict[str, Any]]
    vectors: np.ndarray  # float32, normalized, one row per chunk
    sections: dict[str, np.ndarray]  # first chunk id of a section → its section vector
    documents: list[Any]  # manifest records (DocumentRecord), in source order


def components_for(data_dir: Path) -> Any:
    from app.bootstrap import Components
    from app.settings import Settings

    return Components(Settings(_env_file=None, data_dir=data_dir / "data"))  # type: ignore[call-arg]


def load_base(base_dir: Path, collection: str) -> Base:
    components = components_for(base_dir)
    try:
        ids, texts, metas = components.store.get_all(collection)
        vectors = np.zeros((len(ids), 0), dtype=np.float32)
        rows = []
        for start in range(0, len(ids), 2000):
            part = ids[start : start + 2000]
            got = components.store.get_embeddings(collection, part)
            rows += [got[cid] for cid in part]
        vectors = np.stack(rows).astype(np.float32)
        sections = components.lexical.section_vectors(collection, ids)
        documents = components.manifest.documents(collection)
    finally:
        components.close()
    return Base(ids, texts, metas, vectors, sections, documents)


def _normalized(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _rotated(text: str, k: int, extra: str) -> str:
    sentences = [s for s in _SENTENCE.split(text) if s]
    if len(sentences) > 1:
        shift = k % len(sentences)
        sentences = sentences[shift:] + sentences[:shift]
    first = next((s for s in _SENTENCE.split(extra) if s.strip()), "")
    return " ".join(sentences + ([first] if first else []))


def derived_copy(base: Base, k: int, records: list[Any], rng: np.random.Generator) -> tuple[list[Any], ...]:
    """Copy ``k`` of the given base documents: (ids, vectors, texts, metadatas, section vectors, records)."""
    from vectorstore.manifest import DocumentRecord

    position = {cid: i for i, cid in enumerate(base.ids)}
    pick = random.Random(k)
    ids: list[str] = []
    texts: list[str] = []
    metas: list[dict[str, Any]] = []
    rows: list[int] = []
    others: list[int] = []
    new_records = []
    renamed: dict[str, str] = {}
    for record in records:
        source = f"copy{k:03d}/{record.source}"
        doc_id = hashlib.sha1(source.encode()).hexdigest()[:16]
        doc_hash = hashlib.sha256(f"{record.doc_hash}:{k}".encode()).hexdigest()
        chunk_ids = []
        for index, old in enumerate(record.chunk_ids):
            if old not in position:
                continue
            new = f"{doc_id}-{index:05d}-{hashlib.sha1(f'{old}:{k}'.encode()).hexdigest()[:12]}"
            renamed[old] = new
            chunk_ids.append(new)
            row, other = position[old], pick.randrange(len(base.ids))
            meta = dict(base.metas[row], source=source, document_id=doc_id, doc_hash=doc_hash)
            ids.append(new)
            texts.append(_rotated(base.texts[row], k, base.texts[other]))
            metas.append(meta)
            rows.append(row)
            others.append(other)
        new_records.append(
            DocumentRecord(
                record.collection,
                source,
                doc_id,
                doc_hash,
                tuple(chunk_ids),
                record.size_bytes,
                record.title,
                time.time(),
                clean=True,
            )
        )
    for meta in metas:
        if "section" in meta:
            meta["section"] = renamed.get(str(meta["section"]), meta["section"])
    dim = base.vectors.shape[1]
    noise = rng.normal(0.0, 0.02, size=(len(rows), dim)).astype(np.float32)
    vectors = _normalized(0.85 * base.vectors[rows] + 0.15 * base.vectors[others] + noise)
    sections = {
        renamed[old]: _normalized(vec + rng.normal(0.0, 0.02, size=vec.shape).astype(np.float32))
        for old, vec in base.sections.items()
        if old in renamed
    }
    return ids, list(vectors), texts, metas, [sections], new_records


def write(components: Any, collection: str, batch: tuple[list[Any], ...]) -> None:
    """Chroma, then the BM25 table, then the manifest rows that make the versions live (ingestion's order)."""
    from vectorstore.tables import bump, documents, manifest_stamps, upsert, write_tx

    ids, vectors, texts, metas, (sections,), records = batch
    components.store.upsert(collection, ids, [v.tolist() for v in vectors], texts, metas)
    index_texts = [f"{m['heading']}\n{t}" if m.get("heading") else t for t, m in zip(texts, metas, strict=True)]
    components.lexical.upsert(collection, ids, texts, metas, index_texts=index_texts, section_vectors=sections)
    rows = [
        dict(collection=collection, source=r.source, document_id=r.document_id, doc_hash=r.doc_hash,
             chunk_ids=json.dumps(list(r.chunk_ids)), size_bytes=r.size_bytes, title=r.title,
             updated_at=r.updated_at, clean=1)
        for r in records
    ]  # fmt: skip
    with write_tx(components.db) as conn:
        upsert(conn, documents, rows)
        bump(conn, manifest_stamps, "stamp", collection)


def built_chunks(target_dir: Path) -> int:
    """Chunks a finished or interrupted ``build_scaled`` wrote under ``target_dir`` (0: none)."""
    progress_file = target_dir / "built.json"
    return int(json.loads(progress_file.read_text()).get("chunks", 0)) if progress_file.exists() else 0


def build_scaled(base: Base, target_dir: Path, size: int, collection: str = SCALE_COLLECTION) -> int:
    """Fill ``collection`` under ``target_dir`` to ``size`` chunks (resumable: finished copies are skipped)."""
    progress_file = target_dir / "built.json"
    done: dict[str, int] = json.loads(progress_file.read_text()) if progress_file.exists() else {}
    target_dir.mkdir(parents=True, exist_ok=True)
    components = components_for(target_dir)
    try:
        written = int(done.get("chunks", 0))
        k = int(done.get("copies", 0))
        started = time.perf_counter()
        while written < size:
            rng = np.random.default_rng(k)
            records = base.documents
            for start in range(0, len(records), _BATCH_DOCS):
                part = records[start : start + _BATCH_DOCS]
                # copy 0 is the base itself, verbatim
                batch = _verbatim(base, part) if k == 0 else derived_copy(base, k, part, rng)
                if written + len(batch[0]) > size:  # the last copy: as many documents as fit
                    keep = _fitting(batch[5], size - written)
                    batch = _truncate(batch, keep)
                if batch[0]:
                    write(components, collection, batch)
                    written += len(batch[0])
                if written >= size:
                    break
            k += 1
            progress_file.write_text(json.dumps({"copies": k, "chunks": written}))
            rate = written / (time.perf_counter() - started)
            print(f"  {collection}: {written:,} chunks after copy {k} ({rate:,.0f} chunks/s)", flush=True)
        return written
    finally:
        components.close()


def _verbatim(base: Base, records: list[Any]) -> tuple[list[Any], ...]:
    position = {cid: i for i, cid in enumerate(base.ids)}
    rows = [position[c] for r in records for c in r.chunk_ids if c in position]
    ids = [base.ids[i] for i in rows]
    sections = {cid: base.sections[cid] for cid in ids if cid in base.sections}
    return ids, list(base.vectors[rows]), [base.texts[i] for i in rows], [base.metas[i] for i in rows], \
        [sections], list(records)  # fmt: skip


def _fitting(records: list[Any], room: int) -> int:
    total = 0
    for n, record in enumerate(records):
        if total + len(record.chunk_ids) > room:
            return n
        total += len(record.chunk_ids)
    return len(records)


def _truncate(batch: tuple[list[Any], ...], keep_docs: int) -> tuple[list[Any], ...]:
    ids, vectors, texts, metas, (sections,), records = batch
    n = sum(len(r.chunk_ids) for r in records[:keep_docs])
    kept = set(ids[:n])
    return ids[:n], vectors[:n], texts[:n], metas[:n], [{c: v for c, v in sections.items() if c in kept}], \
        records[:keep_docs]  # fmt: skip
