"""Exact-match response cache, as a ChatModel wrapper over a small backend interface.

The key is sha256 over canonical JSON of everything that determines the answer:
provider, model, rendered messages, params, prompt id@version, the source
passages and the caller's collection scope (access control reaches the cache).
Only deterministic calls (temperature 0) are cached, and a request can bypass the
cache (``use_cache=False``). A hit is returned with ``cached=True``.

Answers given by a fallback provider are not stored: the key names the primary
provider, and a degraded answer must not outlive the outage that caused it.

Backends (``ResponseCache`` on SQLite here, ``RedisResponseCache`` for a shared
cache across workers) bound their size (oldest entries evicted first) and expire
entries after a TTL, so the cache cannot grow without limit or serve answers
computed from a long-gone model configuration forever.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Protocol

from app import metrics
from app.llm.base import ChatModel, ChatRequest, Completion, StreamEvent, Usage, Wrapper
from vectorstore.sqlite_db import SqliteDb

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created_at ON responses (created_at);
"""


class CacheBackend(Protocol):
    def get(self, key: str) -> Completion | None: ...

    def put(self, key: str, completion: Completion) -> None: ...

    def clear(self) -> int: ...

    def close(self) -> None: ...


def encode(completion: Completion) -> str:
    return json.dumps(asdict(replace(completion, cached=False, cost_usd=None)), separators=(",", ":"))


def decode(value: str | bytes) -> Completion:
    data: dict[str, Any] = json.loads(value)
    data["usage"] = Usage(**data["usage"])
    return Completion(**data)


class ResponseCache:
    """SQLite backend. ``ttl_s`` ≤ 0 disables expiry, ``max_entries`` ≤ 0 disables the size bound."""

    def __init__(self, path: str | Path, *, ttl_s: float = 0.0, max_entries: int = 0):
        self._db = SqliteDb(path, _SCHEMA)
        self.ttl_s = ttl_s
        self.max_entries = max_entries

    def get(self, key: str) -> Completion | None:
        with self._db.tx() as conn:
            row = conn.execute("SELECT value, created_at FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if self.ttl_s > 0 and row[1] < time.time() - self.ttl_s:
            return None  # expired; put() purges expired rows
        return decode(row[0])

    def put(self, key: str, completion: Completion) -> None:
        now = time.time()
        with self._db.tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO responses (key, value, created_at) VALUES (?, ?, ?)",
                (key, encode(completion), now),
            )
            if self.ttl_s > 0:
                conn.execute("DELETE FROM responses WHERE created_at < ?", (now - self.ttl_s,))
            if self.max_entries > 0:
                evicted = conn.execute(
                    "DELETE FROM responses WHERE key IN "
                    "(SELECT key FROM responses ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
                    (self.max_entries,),
                ).rowcount
                if evicted:
                    log.debug("response cache: evicted %d oldest entries", evicted)

    def __len__(self) -> int:
        with self._db.tx() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def clear(self) -> int:
        with self._db.tx() as conn:
            return conn.execute("DELETE FROM responses").rowcount

    def close(self) -> None:
        self._db.close()


def cache_key(provider: str, model: str, request: ChatRequest) -> str:
    payload = {
        "provider": provider,
        "model": model,
        "messages": [[m.role, m.content] for m in request.messages],
        "params": request.params.as_dict(),
        "prompt": request.prompt_id,
        "documents": [[d.n, d.text] for d in request.documents],
        "query": request.query,
        "scope": sorted(request.scope),
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CachedChatModel(Wrapper):
    def __init__(self, inner: ChatModel, cache: CacheBackend):
        super().__init__(inner)
        self.cache = cache

    def _key(self, request: ChatRequest) -> str | None:
        if not request.use_cache or request.params.temperature != 0:
            return None
        return cache_key(self.provider, self.model, request)

    def _lookup(self, key: str | None) -> Completion | None:
        if key is None:
            return None
        hit = self.cache.get(key)
        (metrics.CACHE_MISSES if hit is None else metrics.CACHE_HITS).inc()
        return hit

    def _store(self, key: str | None, completion: Completion) -> None:
        if key is not None and not completion.fallback:
            self.cache.put(key, completion)

    def complete(self, request: ChatRequest) -> Completion:
        key = self._key(request)
        hit = self._lookup(key)
        if hit is not None:
            log.debug("cache hit %s", key)
            return replace(hit, cached=True)
        completion = self.inner.complete(request)
        self._store(key, completion)
        return completion

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        key = self._key(request)
        hit = self._lookup(key)
        if hit is not None:
            yield StreamEvent(delta=hit.text)
            yield StreamEvent(completion=replace(hit, cached=True))
            return
        for event in self.inner.stream(request):
            if event.completion is not None:
                self._store(key, event.completion)
            yield event
