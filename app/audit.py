"""The audit log: one row per answered request (and per MCP tool call), for "who asked what, and what did kb say".

Separate from the usage ledger on purpose: the ledger has a row per model call
attempt (what was spent), the audit log a row per answer (what was asked and
answered, from which chunks, with which prompt version). The question's sha256 is
always kept, so a question can be traced ("was this asked, by which key?") even
with ``store_text=False``, where neither the question nor the answer text is
written. It is the ``audit`` table of the shared SQL database (``app.db``). Writes happen on
the request path from the API's thread pool: each is one INSERT (``app.db.engine``); a cache
hit's row goes to the deferred writer instead (``app.db.writer``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import SQLAlchemyError

from app.db import engine_for
from app.db.engine import safe_url
from app.db.schema import audit
from app.db.writer import DeferredWriter, flush_pending
from app.errors import AuditError, KbError
from app.rag.answer import Answer

log = logging.getLogger(__name__)

_JSON_LISTS = ("collections", "retrieved", "cited")
_PRUNE_EVERY_S = 3600.0


def question_sha256(question: str) -> str:
    """The hash stored for a question (of its UTF-8 text as recorded), to find it without storing it."""
    return hashlib.sha256(question.encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """What one answered request leaves behind. ``prompt`` is ``name@vN``; chunk ids as the store knows them."""

    request_id: str
    question: str
    prompt: str
    provider: str
    model: str
    answer: str
    ts: float = field(default_factory=time.time)
    key_name: str | None = None
    key_id: str | None = None  # the credential that received the answer (feedback checks it)
    collections: list[str] = field(default_factory=list)
    retrieved: list[str] = field(default_factory=list)
    cited: list[str] = field(default_factory=list)
    grounded: bool = False
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    conversation_id: str | None = None
    standalone_question: str | None = None  # the condensed follow-up actually searched for
    support: dict[str, Any] = field(default_factory=dict)  # the answer's support summary (policy, counts)
    tool: str | None = None  # the MCP tool called ("mcp.search", "mcp.ask", ...); None: /chat or /v1


def answer_record(answer: Answer, question: str, key_name: str, key_id: str, tool: str | None = None) -> AuditRecord:
    """The audit row of an answer, whoever asked for it (/chat, /v1, the MCP ``ask`` tool)."""
    return AuditRecord(
        request_id=answer.request_id, key_name=key_name, key_id=key_id, collections=answer.collections,
        question=question,
        standalone_question=answer.standalone_question or None, conversation_id=answer.conversation_id,
        prompt=answer.prompt, provider=answer.provider, model=answer.model, answer=answer.answer,
        retrieved=[str(r["chunk_id"]) for r in answer.retrieved], cited=[c.chunk_id for c in answer.citations],
        grounded=answer.grounded, cached=answer.cached, prompt_tokens=int(answer.usage["prompt_tokens"]),
        completion_tokens=int(answer.usage["completion_tokens"]), cost_usd=answer.usage["cost_usd"],
        latency_ms=answer.latency_ms, support=answer.support, tool=tool,
    )  # fmt: skip


def record_or_log(audit_log: AuditLog | None, rec: AuditRecord, *, defer: bool = False) -> None:
    """Write one row; a failed write is logged, not raised: the answer is already paid for and sent."""
    if audit_log is None:
        return
    try:
        audit_log.record(rec, defer=defer)
    except KbError as exc:
        log.error("request %s: audit row not written (%s): %s", rec.request_id, exc.code, exc.message)


class AuditLog:
    """Append-only log of answers; ``rows`` reads it back with JSON lists decoded and flags as booleans."""

    def __init__(
        self,
        db: Engine | str | Path,
        *,
        store_text: bool = True,
        retention_days: int = 0,
        writer: DeferredWriter | None = None,
    ):
        self.store_text = store_text
        self.writer = writer  # for ``defer=True`` rows (cache hits)
        self.retention_s = retention_days * 86400.0
        self._engine, self._owned = engine_for(db)
        self._insert = audit.insert()
        self._next_prune = 0.0
        self._maybe_prune(time.time())

    def record(self, rec: AuditRecord, *, defer: bool = False) -> None:
        """One row; ``defer``: handed to the deferred writer (a cache hit's), committed after the response."""
        row: dict[str, Any] = {
            "ts": rec.ts,
            "request_id": rec.request_id,
            "key_name": rec.key_name,
            "key_id": rec.key_id,
            "collections": json.dumps(list(rec.collections)),
            "question_sha256": question_sha256(rec.question),
            "question": rec.question if self.store_text else None,
            "standalone_question": rec.standalone_question if self.store_text else None,
            "conversation_id": rec.conversation_id,
            "prompt": rec.prompt,
            "provider": rec.provider,
            "model": rec.model,
            "answer": rec.answer if self.store_text else None,
            "retrieved": json.dumps(list(rec.retrieved)),
            "cited": json.dumps(list(rec.cited)),
            "grounded": int(rec.grounded),
            "cached": int(rec.cached),
            "prompt_tokens": rec.prompt_tokens,
            "completion_tokens": rec.completion_tokens,
            "cost_usd": rec.cost_usd,
            "latency_ms": rec.latency_ms,
            "support_policy": rec.support.get("policy"),
            "claims": rec.support.get("claims"),
            "unsupported": rec.support.get("unsupported"),
            "dropped": rec.support.get("dropped"),
            "refused_unsupported": int(rec.support["refused"]) if "refused" in rec.support else None,
            "tool": rec.tool,
        }
        if defer and self.writer is not None:
            self.writer.submit([(self._insert, row)])
        else:
            try:
                with self._engine.begin() as conn:
                    conn.execute(self._insert, row)
            except SQLAlchemyError as exc:
                where = safe_url(self._engine.url)
                message = f"could not write request {rec.request_id} to the audit log in {where}: {exc}"
                raise AuditError(message) from exc
        self._maybe_prune(time.time())

    def rows(
        self, since_ts: float = 0.0, key_name: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Rows at or after ``since_ts`` (of one key if given), oldest first; ``limit`` keeps the newest N."""
        query = select(audit).where(audit.c.ts >= since_ts)
        if key_name is not None:
            query = query.where(audit.c.key_name == key_name)
        query = query.order_by(audit.c.ts.desc(), audit.c.id.desc())
        if limit is not None:
            query = query.limit(max(limit, 0))
        flush_pending(self._engine)
        with self._engine.connect() as conn:
            found = [dict(r) for r in conn.execute(query).mappings()]
        for row in found:
            for name in _JSON_LISTS:
                row[name] = json.loads(row[name])
            row["grounded"], row["cached"] = bool(row["grounded"]), bool(row["cached"])
        return found[::-1]

    def purge(self, before_ts: float) -> int:
        """Delete rows older than ``before_ts``; returns how many went."""
        with self._engine.begin() as conn:
            removed = conn.execute(delete(audit).where(audit.c.ts < before_ts)).rowcount
        if removed:
            log.info("audit log: removed %d rows older than the retention window", removed)
        return removed

    def _maybe_prune(self, now: float) -> None:
        """Retention runs on open and then at most hourly, so a busy server doesn't pay for it per request."""
        if self.retention_s <= 0 or now < self._next_prune:
            return
        self._next_prune = now + _PRUNE_EVERY_S
        self.purge(now - self.retention_s)

    def close(self) -> None:
        if self._owned:
            self._engine.dispose()
