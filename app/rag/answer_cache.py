"""Finished answers, cached in memory and looked up *before* retrieval.

The response cache (app/llm/cache.py) saves the model call but still pays for
retrieval (embedding the question, the vector and BM25 searches, citations), because
its key includes the retrieved passages. This cache answers a repeated question in
about a millisecond. Its key holds everything the answer depends on:

- the standalone question (after condensing), the prompt name@version, top_k,
  the provider and model, and the retrieval and answer settings;
- the caller's collection scope (sorted): a key with other grants never shares an entry;
- each searched collection's corpus version from the manifest (document count and
  last change), so any ingest, update or delete in a scope invalidates its entries.

It is per process (an LRU bounded by entries and a TTL): a replica that has not seen
a question falls through to retrieval and the shared response cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from app import metrics
from app.llm.costs import UsageLedger, UsageRow
from app.rag.answer import Answer

log = logging.getLogger(__name__)


def answer_key(**parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _copy(answer: Answer) -> Answer:
    """A copy callers may change (request id, latency, usage); citations are frozen and shared."""
    return dataclasses.replace(
        answer, usage=dict(answer.usage), citations=list(answer.citations), collections=list(answer.collections),
        retrieved=[dict(r) for r in answer.retrieved],
    )  # fmt: skip


class AnswerCache:
    def __init__(self, max_entries: int, ttl_s: float):
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, Answer]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Answer | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            stored_at, value = entry
            if self.ttl_s > 0 and stored_at < time.time() - self.ttl_s:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        return _copy(value)

    def put(self, key: str, value: Answer) -> None:
        with self._lock:
            self._entries[key] = (time.time(), _copy(value))
            self._entries.move_to_end(key)
            while self.max_entries > 0 and len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> int:
        with self._lock:
            n = len(self._entries)
            self._entries.clear()
        return n

    def __len__(self) -> int:
        return len(self._entries)


def revive(
    answer: Answer,
    request_id: str,
    started: float,
    ledger: UsageLedger | None,
    collections: list[str],
    principal: str | None,
) -> Answer:
    """A cached answer as this request's: its id and latency, cost 0, one ledger row like a response cache hit."""
    answer.request_id, answer.cached, answer.conversation_id = request_id, True, None
    answer.usage["cost_usd"] = 0.0
    answer.latency_ms = round((time.perf_counter() - started) * 1000, 1)
    metrics.ANSWER_CACHE_HITS.inc()
    if ledger is not None and answer.usage["prompt_tokens"]:  # refusals never called a model
        row = UsageRow(
            ts=time.time(), request_id=request_id, provider=answer.provider, model=answer.model, prompt=answer.prompt,
            prompt_tokens=answer.usage["prompt_tokens"], completion_tokens=answer.usage["completion_tokens"],
            cost_usd=0.0, latency_ms=answer.latency_ms, cached=1, streamed=0, status="ok", error=None,
            collection=",".join(collections), key=principal,
        )  # fmt: skip
        ledger.record(row, defer=True)
    log.info("answered request %s from the answer cache in %.1f ms", request_id, answer.latency_ms)
    return answer
