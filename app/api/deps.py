"""Request dependencies: who is calling (API key → Principal), rate limits, collection access.

Access control happens here, before retrieval: the collections a request may search
are the intersection of what it asks for and what its key may read. Asking for a
collection outside the key's grants is a 403 with the same message whether or not
the collection exists, so a key cannot probe for names it may not see.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.concurrency import run_in_threadpool

from app.audit import AuditRecord
from app.auth import ANONYMOUS_ADMIN, KeyStore, Principal
from app.bootstrap import Components
from app.errors import AuthError, CollectionNotFoundError, ForbiddenError, KbError, RateLimitedError
from app.rag.answer import Answer

log = logging.getLogger(__name__)

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="An API key from `kb keys create` (the first admin key is in data/admin-key.txt).",
)


class RateLimiter:
    """A moving one-minute window per API key (the ``limits`` library; memory or Redis storage)."""

    def __init__(self, per_minute: int, storage_uri: str = "memory://", failed_auth_per_minute: int = 0):
        self.item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self.failures = RateLimitItemPerMinute(failed_auth_per_minute) if failed_auth_per_minute > 0 else None
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        self.in_memory = storage_uri.startswith("memory://")  # else Redis: a network call per hit
        self._warned_at = 0.0

    def _counted(self, count: Callable[[], bool]) -> bool:
        """Run a limiter call; with its storage (Redis) unreachable, let the request through.

        The limits protect the service from one key's excess; they are not what answers are made of.
        Refusing every request while Redis is away would turn a cache outage into a full one, so the
        limiter fails open and says so in the log (at most every 30 s)."""
        try:
            return count()
        except Exception as exc:
            if self.in_memory:
                raise
            now = time.monotonic()
            if now - self._warned_at > 30:
                self._warned_at = now
                log.warning("rate limits not enforced: their storage does not answer (%s: %s)", type(exc).__name__, exc)
            return True

    def _refused(self, item: RateLimitItemPerMinute, namespace: str, ident: str, what: str) -> RateLimitedError:
        stats = self.limiter.get_window_stats(item, namespace, ident)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return RateLimitedError(f"{what}; retry after {retry_after} s", retry_after)

    def hit(self, key_id: str) -> None:
        if self.item is None or self._counted(lambda: self.limiter.hit(self.item, "kb-api", key_id)):  # type: ignore[arg-type]
            return
        raise self._refused(
            self.item,
            "kb-api",
            key_id,
            f"rate limit of {self.item.amount} requests per minute for this API key reached",
        )

    def check_address(self, address: str) -> None:
        """Refuse another wrong key from an address that sent too many lately (guessing keys must not be
        free: 20 guesses a minute against 256-bit keys is hopeless)."""
        if self.failures is None or self._counted(lambda: self.limiter.test(self.failures, "kb-auth-failed", address)):  # type: ignore[arg-type]
            return
        what = (
            f"too many failed authentications from this address ({self.failures.amount} per minute); check the API key"
        )
        raise self._refused(self.failures, "kb-auth-failed", address, what)

    def failed(self, address: str) -> None:
        if self.failures is not None:
            self._counted(lambda: self.limiter.hit(self.failures, "kb-auth-failed", address))  # type: ignore[arg-type]


def components(request: Request) -> Components:
    return request.app.state.components  # type: ignore[no-any-return]


_lookups: dict[tuple[int, str], asyncio.Future[Principal | None]] = {}


async def authenticate(keys: KeyStore, token: str) -> Principal | None:
    """The key's principal: remembered, else looked up on a worker thread, once for all the requests
    that carry the same key meanwhile (when a busy key's memory expires, 20 clients would otherwise
    queue 20 lookups on the thread pool)."""
    found = keys.remembered(token)
    if found is not None:
        return found
    slot = (id(keys), token)
    lookup = _lookups.get(slot)
    if lookup is None:
        lookup = asyncio.ensure_future(run_in_threadpool(keys.authenticate, token))
        _lookups[slot] = lookup
        lookup.add_done_callback(lambda _: _lookups.pop(slot, None))
    return await asyncio.shield(lookup)  # one caller's disconnect must not cancel the others' lookup


async def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The caller, authenticated by its bearer key and counted against its rate limit.

    Async, so a key the store remembers (``KeyStore.remembered``) and an in-memory rate limit
    cost no thread-pool round trip; a database lookup or a Redis limiter runs on a worker thread."""
    parts = components(request)
    if not parts.settings.auth.enabled:
        who = ANONYMOUS_ADMIN
    elif credentials is None or not credentials.credentials:
        raise AuthError(
            "missing API key: send 'Authorization: Bearer <key>' (an admin creates keys with 'kb keys create')",
            code="missing_api_key",
        )
    else:
        found = await authenticate(parts.keys, credentials.credentials)
        if found is None:
            # Wrong keys are throttled per address; right ones never are: behind a shared proxy one
            # misconfigured client must not lock every employee out.
            address = request.client.host if request.client else "unknown"
            guard: RateLimiter = request.app.state.rate_limiter
            await _limiter_call(guard, guard.check_address, address)
            await _limiter_call(guard, guard.failed, address)
            raise AuthError("invalid or revoked API key", code="invalid_api_key")
        who = found
    request.state.principal = who
    limiter: RateLimiter = request.app.state.rate_limiter
    if limiter.in_memory:
        limiter.hit(who.key_id)
    else:
        await run_in_threadpool(limiter.hit, who.key_id)
    return who


async def _limiter_call(limiter: RateLimiter, fn: Any, arg: str) -> None:
    """In-memory limits run on the event loop; Redis ones on a worker thread (a network call)."""
    if limiter.in_memory:
        fn(arg)
    else:
        await run_in_threadpool(fn, arg)


def admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.is_admin:
        raise ForbiddenError("this endpoint needs an admin API key", code="admin_required")
    return who


CurrentPrincipal = Annotated[Principal, Depends(principal)]


def readable_collections(who: Principal, parts: Components) -> list[str]:
    return [c.name for c in parts.store.list_collections() if who.can_read(c.name)]


def resolve_collections(who: Principal, requested: Sequence[str], parts: Components) -> list[str]:
    """The collections to search: the ones asked for (each must be granted), else all readable ones."""
    names = list(dict.fromkeys(n for n in requested if n))
    for name in names:
        if not who.can_read(name):
            raise ForbiddenError(
                f"this API key may not read collection {name!r}; ask an admin to grant it",
                code="collection_forbidden",
            )
    if names:
        return names
    names = readable_collections(who, parts)
    if not names:
        raise CollectionNotFoundError(
            "none of the collections this API key may read has documents yet", code="no_readable_collections"
        )
    return names


def audit(request: Request, who: Principal, question: str, answer: Answer) -> None:
    """One audit row per answered request (a cache hit's deferred). A failed write is logged, not raised: the
    answer is already paid for."""
    log_ = components(request).audit
    if log_ is None:
        return
    record = AuditRecord(
        request_id=answer.request_id, key_name=who.name, collections=answer.collections, question=question,
        standalone_question=answer.standalone_question or None, conversation_id=answer.conversation_id,
        prompt=answer.prompt, provider=answer.provider, model=answer.model, answer=answer.answer,
        retrieved=[str(r["chunk_id"]) for r in answer.retrieved], cited=[c.chunk_id for c in answer.citations],
        grounded=answer.grounded, cached=answer.cached, prompt_tokens=int(answer.usage["prompt_tokens"]),
        completion_tokens=int(answer.usage["completion_tokens"]), cost_usd=answer.usage["cost_usd"],
        latency_ms=answer.latency_ms, support=answer.support,
    )  # fmt: skip
    try:
        log_.record(record, defer=answer.cached)
    except KbError as exc:
        log.error("request %s: audit row not written (%s): %s", answer.request_id, exc.code, exc.message)
