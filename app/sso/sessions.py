"""Web sessions and logins in progress, server-side in the shared database.

A session cookie holds 256 random bits; the database keeps only their sha256 with the user's identity
and an expiry, so a copy of the database opens no session, logout or expiry ends it everywhere, and
any replica serves it. A login in progress (between the redirect to the provider and its callback) is
a row keyed by the OAuth ``state``; ``take`` deletes it in the same statement that reads it, so a
replayed callback (the same code and state again) finds nothing, and it is bound to the browser that
started it by a second random cookie (its sha256 in the row), so a callback URL planted in another
browser cannot sign that browser in. Rows past their time are swept as new ones are written.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select

from app.db.engine import retry_on_disconnect
from app.db.schema import sso_logins, web_sessions
from app.sso.identity import Identity

LOGIN_TTL_S = 600.0  # a sign-in at the provider must finish within ten minutes


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class PendingLogin:
    state: str
    code_verifier: str
    nonce: str
    redirect_uri: str


class SessionStore:
    """``cache_s``: a session found is remembered this long in this process (as API keys are), so a signed-in
    page's requests cost no database round trip each; one ended by another process (logout on another
    replica, ``kb sessions revoke``) is refused here within that time, one ended through this store at once."""

    _MAX_REMEMBERED = 10_000

    def __init__(self, engine: Engine, *, ttl_s: float, cache_s: float = 0.0):
        self._engine = engine
        self.ttl_s = ttl_s
        self.cache_s = cache_s
        self._remembered: dict[str, tuple[float, Identity]] = {}

    def remembered(self, token: str) -> Identity | None:
        entry = self._remembered.get(_sha(token))
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    # ---- sessions ----------------------------------------------------------------------------
    def create(self, who: Identity) -> str:
        """A new session for this identity; returns the cookie value (shown once, stored hashed)."""
        token, now = new_secret(), time.time()
        with self._engine.begin() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.expires_at < now))
            conn.execute(
                insert(web_sessions).values(
                    id_sha256=_sha(token), subject=who.subject, name=who.name, groups=json.dumps(list(who.groups)),
                    created_at=now, expires_at=now + self.ttl_s,
                )
            )  # fmt: skip
        return token

    def find(self, token: str) -> Identity | None:
        query = select(web_sessions.c.subject, web_sessions.c.name, web_sessions.c.groups).where(
            web_sessions.c.id_sha256 == _sha(token), web_sessions.c.expires_at > time.time()
        )

        def read() -> tuple[str, str, str] | None:
            with self._engine.connect() as conn:
                row = conn.execute(query).first()
            return None if row is None else (row[0], row[1], row[2])

        row = retry_on_disconnect(read, "session lookup")
        if row is None:
            return None
        found = Identity(row[0], row[1], tuple(json.loads(row[2])))
        if self.cache_s > 0:
            if len(self._remembered) >= self._MAX_REMEMBERED:
                self._remembered.clear()
            self._remembered[_sha(token)] = (time.monotonic() + self.cache_s, found)
        return found

    def end(self, token: str) -> None:
        self._remembered.pop(_sha(token), None)
        with self._engine.begin() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.id_sha256 == _sha(token)))

    def active(self) -> list[tuple[str, str, float, float]]:
        """(subject, name, created_at, expires_at) of each session not yet expired, newest first."""
        cols = (web_sessions.c.subject, web_sessions.c.name, web_sessions.c.created_at, web_sessions.c.expires_at)
        query = select(*cols).where(web_sessions.c.expires_at > time.time()).order_by(web_sessions.c.created_at.desc())
        with self._engine.connect() as conn:
            return [(r[0], r[1], r[2], r[3]) for r in conn.execute(query)]

    def end_for(self, subject: str | None) -> int:
        """End every session of this subject (None: everyone's); returns how many ended. A user removed at the
        identity provider keeps a session until it expires unless it is ended here."""
        self._remembered.clear()
        query = delete(web_sessions)
        if subject is not None:
            query = query.where(web_sessions.c.subject == subject)
        with self._engine.begin() as conn:
            return int(conn.execute(query).rowcount or 0)

    # ---- logins in progress ------------------------------------------------------------------
    def begin_login(self, *, browser: str, redirect_uri: str) -> PendingLogin:
        login = PendingLogin(new_secret(), secrets.token_urlsafe(48), new_secret(), redirect_uri)
        now = time.time()
        with self._engine.begin() as conn:
            conn.execute(delete(sso_logins).where(sso_logins.c.created_at < now - LOGIN_TTL_S))
            conn.execute(
                insert(sso_logins).values(
                    state=login.state, browser_sha256=_sha(browser), code_verifier=login.code_verifier,
                    nonce=login.nonce, redirect_uri=redirect_uri, created_at=now,
                )
            )  # fmt: skip
        return login

    def take_login(self, state: str, browser: str) -> PendingLogin | None:
        """The login this state names, started by this browser within LOGIN_TTL_S: once, then never again."""
        with self._engine.begin() as conn:
            row = conn.execute(
                select(sso_logins.c.browser_sha256, sso_logins.c.code_verifier, sso_logins.c.nonce,
                       sso_logins.c.redirect_uri, sso_logins.c.created_at)
                .where(sso_logins.c.state == state)
                .with_for_update()
            ).first()  # fmt: skip
            if row is None:
                return None
            removed = conn.execute(delete(sso_logins).where(sso_logins.c.state == state)).rowcount
        if removed != 1 or not secrets.compare_digest(row[0], _sha(browser)):
            return None
        if row[4] < time.time() - LOGIN_TTL_S:
            return None
        return PendingLogin(state, row[1], row[2], row[3])
