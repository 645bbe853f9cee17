"""Redis backend of the response cache: one cache shared by every worker and host.

Same interface and semantics as the SQLite backend (``app.llm.cache.ResponseCache``):
values are the same JSON, expiry uses Redis' own TTL, and the size bound is kept
with a sorted set of keys scored by insertion time, so the oldest entries are
evicted first. A Redis outage degrades to cache misses with a warning: the cache
saves money, it must never take answers down with it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from app.errors import CacheUnavailableError
from app.llm.base import Completion
from app.llm.cache import decode, encode

log = logging.getLogger(__name__)


class RedisResponseCache:
    """``ttl_s`` ≤ 0 disables expiry, ``max_entries`` ≤ 0 disables the size bound."""

    def __init__(self, url: str, *, ttl_s: float = 0.0, max_entries: int = 0, prefix: str = "kb:cache:"):
        # Short timeouts: a slow Redis must cost a request milliseconds, not the model call's budget.
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.prefix = prefix
        self._index = f"{prefix}index"
        self._warned_at = float("-inf")  # time.monotonic() counts from boot: 0.0 would be "just now" on a new machine

    def _warn(self, action: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at > 60:  # once a minute, not once a request
            self._warned_at = now
            log.warning("response cache (redis) %s failed, serving without cache: %s", action, exc)

    def get(self, key: str) -> Completion | None:
        try:
            value = self._redis.get(self.prefix + key)
        except redis.RedisError as exc:
            self._warn("get", exc)
            return None
        return None if value is None else decode(value)

    def put(self, key: str, completion: Completion) -> None:
        now = time.time()
        try:
            pipe = self._redis.pipeline()
            ttl_ms = int(self.ttl_s * 1000) if self.ttl_s > 0 else None
            pipe.set(self.prefix + key, encode(completion), px=ttl_ms)
            pipe.zadd(self._index, {key: now})
            if self.ttl_s > 0:
                pipe.zremrangebyscore(self._index, "-inf", now - self.ttl_s)
            pipe.zcard(self._index)
            size = pipe.execute()[-1]
            if self.max_entries > 0 and size > self.max_entries:
                oldest = self._redis.zpopmin(self._index, size - self.max_entries)
                if oldest:
                    self._redis.delete(*(self.prefix + k.decode() for k, _ in oldest))
                    log.debug("response cache (redis): evicted %d oldest entries", len(oldest))
        except redis.RedisError as exc:
            self._warn("put", exc)

    def __len__(self) -> int:
        return int(self._redis.zcard(self._index))

    def ping(self) -> None:
        """Raise unless Redis answers (readiness checks; get/put deliberately swallow errors)."""
        self._redis.ping()

    def clear(self) -> int:
        try:
            removed = 0
            keys = [k for k in self._redis.scan_iter(match=f"{self.prefix}*", count=500) if k != self._index.encode()]
            for start in range(0, len(keys), 500):
                removed += int(self._redis.delete(*keys[start : start + 500]))
            self._redis.delete(self._index)
        except redis.RedisError as exc:  # unlike get/put, clearing is asked for: say it failed
            raise CacheUnavailableError(f"cannot clear the Redis response cache: {exc}") from exc
        return removed

    def close(self) -> None:
        self._redis.close()
