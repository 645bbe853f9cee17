"""Never embed the same text twice: vectors cached by (model, sha256 of the text).

Re-ingesting a changed document re-embeds only its changed chunks; identical
chunks in other documents or collections are embedded once. Vectors are stored as
float32 bytes in SQLite under the data dir.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from vectorstore.sqlite_db import SqliteDb

log = logging.getLogger(__name__)


class EmbedsDocuments(Protocol):
    name: str

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


_SCHEMA = """CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, key TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (model, key))"""


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    def __init__(self, path: str | Path):
        self._db = SqliteDb(path, _SCHEMA)

    def get_many(self, model: str, keys: Sequence[str]) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        unique = sorted(set(keys))
        with self._db.tx() as conn:
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                marks = ",".join("?" for _ in part)
                rows = conn.execute(
                    f"SELECT key, vector FROM vectors WHERE model = ? AND key IN ({marks})", (model, *part)
                ).fetchall()
                for key, blob in rows:
                    found[key] = np.frombuffer(blob, dtype=np.float32).tolist()
        return found

    def put_many(self, model: str, items: dict[str, list[float]]) -> None:
        rows = [(model, key, np.asarray(vec, dtype=np.float32).tobytes()) for key, vec in items.items()]
        with self._db.tx() as conn:
            conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()


class CachedEmbedder:
    """An embedder that looks texts up in the cache first and embeds only the misses."""

    def __init__(self, inner: EmbedsDocuments, cache: EmbeddingCache):
        self.inner = inner
        self.cache = cache
        self.name = inner.name
        self.embedded = 0  # texts actually sent to the model (for reports)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        keys = [text_key(t) for t in texts]
        found = self.cache.get_many(self.name, keys)
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if missing:
            vectors = self.inner.embed_documents(list(missing.values()))
            fresh = dict(zip(missing.keys(), vectors, strict=True))
            self.cache.put_many(self.name, fresh)
            found.update(fresh)
            self.embedded += len(missing)
        return [found[k] for k in keys]

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)
