"""Exact-match response cache, as a ChatModel wrapper.

The key is sha256 over canonical JSON of everything that determines the answer:
provider, model, rendered messages, params, prompt id@version and the source
passages. Only deterministic calls (temperature 0) are cached, and a request can
bypass the cache (``use_cache=False``). A hit is returned with ``cached=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

from app.llm.base import ChatModel, ChatRequest, Completion, StreamEvent, Usage
from app.llm.sqlite_util import SqliteDb

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


class ResponseCache:
    def __init__(self, path: str | Path):
        self._db = SqliteDb(path, _SCHEMA)

    def get(self, key: str) -> Completion | None:
        with self._db.tx() as conn:
            row = conn.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        data = json.loads(row["value"])
        data["usage"] = Usage(**data["usage"])
        return Completion(**data)

    def put(self, key: str, completion: Completion) -> None:
        value = json.dumps(asdict(replace(completion, cached=False, cost_usd=None)))
        with self._db.tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO responses (key, value, created_at) VALUES (?, ?, ?)",
                (key, value, time.time()),
            )

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
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CachedChatModel:
    def __init__(self, inner: ChatModel, cache: ResponseCache):
        self.inner = inner
        self.cache = cache

    @property
    def provider(self) -> str:
        return self.inner.provider

    @property
    def model(self) -> str:
        return self.inner.model

    def _key(self, request: ChatRequest) -> str | None:
        if not request.use_cache or request.params.temperature != 0:
            return None
        return cache_key(self.provider, self.model, request)

    def complete(self, request: ChatRequest) -> Completion:
        key = self._key(request)
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                log.debug("cache hit %s", key[:12])
                return replace(hit, cached=True)
        completion = self.inner.complete(request)
        if key is not None:
            self.cache.put(key, completion)
        return completion

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        key = self._key(request)
        hit = self.cache.get(key) if key is not None else None
        if hit is not None:
            yield StreamEvent(delta=hit.text)
            yield StreamEvent(completion=replace(hit, cached=True))
            return
        for event in self.inner.stream(request):
            if event.completion is not None and key is not None:
                self.cache.put(key, event.completion)
            yield event
