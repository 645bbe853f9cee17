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
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.concurrency import run_in_threadpool

from app import tracing
from app.audit import answer_record, record_or_log
from app.auth import ANONYMOUS_ADMIN, KeyStore, Principal
from app.bootstrap import Components
from app.errors import AuthError, CollectionNotFoundError, ForbiddenError, KbError, RateLimitedError
from app.rag.answer import Answer
from app.sso.identity import Identity, identity_from

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
        self._warned_at = float("-inf")  # time.monotonic() counts from boot: 0.0 would be "just now" on a new machine

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


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def secure_cookies(request: Request) -> bool:
    """Whether the sign-in cookies are Secure (HTTPS only): KB_OIDC__COOKIE_SECURE, else an https redirect URL
    or request."""
    s = components(request).settings.oidc
    if s.cookie_secure is not None:
        return s.cookie_secure
    return s.redirect_url.startswith("https://") or request.url.scheme == "https"


def cookie_name(base: str, secure: bool) -> str:
    """``__Host-`` names over HTTPS: a browser then takes the cookie only from this host, Secure, for Path=/, so
    a sibling subdomain cannot plant its own session (or login binding) on kb's users."""
    return f"__Host-{base}" if secure else base


def session_cookie(request: Request) -> str | None:
    return request.cookies.get(cookie_name("kb_session", secure_cookies(request)))


def cross_site(request: Request) -> bool:
    """A browser request that says it comes from another site: Fetch Metadata, else the Origin header
    (browsers send it with every cross-origin POST). No header at all: not a browser's cross-site request."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    allowed = {f"{request.url.scheme}://{request.url.netloc}"}
    redirect = components(request).settings.oidc.redirect_url
    if redirect:
        parsed = urlsplit(redirect)
        allowed.add(f"{parsed.scheme}://{parsed.netloc}")
    return origin not in allowed


async def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The caller, authenticated by its bearer key, an identity provider's access token or a web session,
    and counted against its rate limit.

    Async, so a key the store remembers (``KeyStore.remembered``) and an in-memory rate limit
    cost no thread-pool round trip; a database lookup or a Redis limiter runs on a worker thread."""
    if not tracing.enabled():
        return await _principal(request, credentials)
    with tracing.span("kb.auth") as span:
        who = await _principal(request, credentials)
        tracing.set_attributes(span, {"kb.principal": who.name, "kb.role": who.role})
        return who


async def _principal(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    parts = components(request)
    token = credentials.credentials if credentials is not None else ""
    if not parts.settings.auth.enabled:
        who = ANONYMOUS_ADMIN
    elif token and parts.oidc is not None and looks_like_jwt(token):
        who = await _failures_counted(request, _token_principal(parts, token))
    elif token:
        found = await authenticate(parts.keys, token)
        if found is None:
            await _failures_counted(
                request, _raise(AuthError("invalid or revoked API key", code=AuthError.INVALID_API_KEY))
            )
        who = found  # type: ignore[assignment]
    elif parts.oidc is not None and (cookie := session_cookie(request)):
        who = await _session_principal(request, parts, cookie)
    else:
        how = "sign in on the web page, or send 'Authorization: Bearer <API key or access token>'"
        if parts.oidc is None:
            how = "send 'Authorization: Bearer <key>' (an admin creates keys with 'kb keys create')"
        raise AuthError(f"missing API key: {how}", code=AuthError.MISSING_API_KEY)
    request.state.principal = who
    limiter: RateLimiter = request.app.state.rate_limiter
    if limiter.in_memory:
        limiter.hit(who.key_id)
    else:
        await run_in_threadpool(limiter.hit, who.key_id)
    return who


def looks_like_jwt(token: str) -> bool:
    """kb keys start with ``kb_``; a JWT is three base64url parts."""
    return not token.startswith("kb_") and token.count(".") == 2


async def _raise(error: KbError) -> Principal:
    raise error


async def _failures_counted(request: Request, attempt: Any) -> Principal:
    """Run an authentication; a refused credential counts against its address (wrong keys and forged tokens
    are throttled per address; right ones never are: behind a shared proxy one misconfigured client must
    not lock every employee out)."""
    try:
        return await attempt  # type: ignore[no-any-return]
    except AuthError:
        address = request.client.host if request.client else "unknown"
        guard: RateLimiter = request.app.state.rate_limiter
        await _limiter_call(guard, guard.check_address, address)
        await _limiter_call(guard, guard.failed, address)
        raise


async def _token_principal(parts: Components, token: str) -> Principal:
    """An identity provider's access token: verified (signature, issuer, audience, expiry), then its groups mapped."""
    oidc = parts.oidc
    assert oidc is not None
    s = parts.settings.oidc
    claims = await oidc.verify(token, audience=s.expected_audience)
    oidc.check_access_token(token, claims)
    who = identity_from(claims, groups_claim=s.groups_claim, name_claim=s.name_claim)
    return await _mapped(parts, who)


async def _mapped(parts: Components, who: Identity) -> Principal:
    """The identity's principal: on the event loop when the group mappings are in memory, else on a worker thread."""
    if parts.groups.fresh():
        return parts.groups.principal_for(who)
    return await run_in_threadpool(parts.groups.principal_for, who)


async def _session_principal(request: Request, parts: Components, cookie: str) -> Principal:
    """A web session: its identity's groups mapped now (a mapping changed since sign-in holds at once).

    The cookie is SameSite=Strict, so another site cannot make the browser send it; a state-changing
    request that says it comes from another origin is refused all the same (defence in depth)."""
    if request.method in UNSAFE_METHODS and cross_site(request):
        raise ForbiddenError("a signed-in request from another site is refused", code=ForbiddenError.CROSS_SITE_REQUEST)
    found = parts.sessions.remembered(cookie) or await run_in_threadpool(parts.sessions.find, cookie)
    if found is None:
        raise AuthError("your sign-in has expired or ended: sign in again", code=AuthError.SESSION_EXPIRED)
    return await _mapped(parts, found)


async def _limiter_call(limiter: RateLimiter, fn: Any, arg: str) -> None:
    """In-memory limits run on the event loop; Redis ones on a worker thread (a network call)."""
    if limiter.in_memory:
        fn(arg)
    else:
        await run_in_threadpool(fn, arg)


def admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.is_admin:
        raise ForbiddenError("this endpoint needs an admin API key", code=ForbiddenError.ADMIN_REQUIRED)
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
                code=ForbiddenError.COLLECTION_FORBIDDEN,
            )
    if names:
        return names
    names = readable_collections(who, parts)
    if not names:
        raise CollectionNotFoundError(
            "none of the collections this API key may read has documents yet",
            code=CollectionNotFoundError.NO_READABLE_COLLECTIONS,
        )
    return names


def audit(request: Request, who: Principal, question: str, answer: Answer) -> None:
    """One audit row per answered request (a cache hit's deferred), as the request's bookkeeping span."""
    with tracing.span("kb.bookkeeping", {"kb.deferred": answer.cached}):
        audit_row(request, who, question, answer)


def audit_row(request: Request, who: Principal, question: str, answer: Answer) -> None:
    record = answer_record(answer, question, who.name, who.key_id)
    record_or_log(components(request).audit, record, defer=answer.cached)
