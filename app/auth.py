"""API keys: who is asking, with which role, and which collections they may read.

A key is ``kb_`` + 43 random URL-safe characters, shown once at creation. Only its
sha256 is stored: keys are long random secrets, so a plain hash is enough to make a
stolen database useless (a slow password hash buys nothing against 256 random bits
and would cost milliseconds on every request). Lookup is by hash, so comparing a
guess never leaks how many characters matched.

The keys are the ``api_keys`` table of the shared SQL database (``app.db``), so a key
created or revoked through one replica holds on every replica from the next request.
``authenticate`` runs on every request: one indexed SELECT on a pooled connection.

Roles: ``employee`` keys read the collections they were granted (``*`` grants all);
``admin`` keys read everything and may use the /admin API.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, bindparam, select, update

from app.db import engine_for
from app.db.engine import retry_on_disconnect
from app.db.schema import api_keys
from app.errors import KeyManagementError

log = logging.getLogger(__name__)

Role = Literal["employee", "admin"]
ROLES: tuple[str, ...] = ("employee", "admin")
ALL = "*"


@dataclass(frozen=True)
class Principal:
    """The caller of one request. ``collections`` None means every collection."""

    name: str
    role: Role
    collections: frozenset[str] | None
    key_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can_read(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def scope_label(self) -> str:
        return ALL if self.collections is None else ",".join(sorted(self.collections))


ANONYMOUS_ADMIN = Principal("local-dev", "admin", None, "auth-disabled")


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    role: Role
    collections: list[str]
    prefix: str
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def principal(self) -> Principal:
        grants = None if self.role == "admin" or ALL in self.collections else frozenset(self.collections)
        return Principal(self.name, self.role, grants, self.id)


@dataclass(frozen=True)
class IssuedKey:
    key: KeyRecord
    token: str  # the plaintext bearer key: shown once, never stored


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


_COLUMNS = (
    api_keys.c.id, api_keys.c.name, api_keys.c.role, api_keys.c.collections, api_keys.c.prefix,
    api_keys.c.created_at, api_keys.c.revoked_at,
)  # fmt: skip
_BY_HASH = select(*_COLUMNS).where(api_keys.c.token_sha256 == bindparam("token_sha256"))


class KeyStore:
    """API keys (hashed) in the shared database.

    ``authenticate`` runs on every request; a key it has just found is remembered for
    ``cache_s`` seconds, so a busy key costs one lookup per window instead of one per request
    (about a third of an answer-cache hit's time). A key revoked through this store stops
    working at once; one revoked by another process (``kb keys revoke`` beside the server,
    another replica) within ``cache_s``. Unknown keys are never remembered, so a key created
    elsewhere works on its first request."""

    _MAX_REMEMBERED = 10_000

    def __init__(self, db: Engine | str | Path, *, cache_s: float = 0.0):
        self._engine, self._owned = engine_for(db)
        self.cache_s = cache_s
        self._remembered: dict[str, tuple[float, Principal]] = {}

    def create(self, name: str, role: str, collections: list[str] | tuple[str, ...] = ()) -> IssuedKey:
        name = name.strip()
        if not name:
            raise KeyManagementError("a key needs a name (who or what uses it)")
        if role not in ROLES:
            raise KeyManagementError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        grants = sorted({c.strip() for c in collections if c.strip()})
        if role == "employee" and not grants:
            raise KeyManagementError("an employee key needs at least one collection (--collections hr,eng or '*')")
        token = "kb_" + secrets.token_urlsafe(32)
        record = KeyRecord(uuid.uuid4().hex[:12], name, role, grants, token[:7], time.time(), None)  # type: ignore[arg-type]
        with self._engine.begin() as conn:
            conn.execute(
                api_keys.insert(),
                {"id": record.id, "name": name, "role": role, "collections": json.dumps(grants),
                 "token_sha256": hash_token(token), "prefix": record.prefix, "created_at": record.created_at},
            )  # fmt: skip
        log.info("created %s key %s (%s) for collections %s", role, record.id, name, grants or [ALL])
        return IssuedKey(record, token)

    @staticmethod
    def _record(row: Any) -> KeyRecord:
        return KeyRecord(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6])

    def all(self, *, include_revoked: bool = False) -> list[KeyRecord]:
        query = select(*_COLUMNS).order_by(api_keys.c.created_at)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [self._record(r) for r in rows]

    def authenticate(self, token: str) -> Principal | None:
        """The key's principal, or None for an unknown or revoked key (a dead pooled connection is retried once)."""
        found = self.remembered(token)
        if found is not None:
            return found
        digest = hash_token(token)
        row = retry_on_disconnect(lambda: self._lookup(digest), "key lookup")
        if row is None:
            return None
        record = self._record(row)
        if not record.active:
            return None
        found = record.principal()
        if self.cache_s > 0:
            if len(self._remembered) >= self._MAX_REMEMBERED:
                self._remembered.clear()
            self._remembered[digest] = (time.monotonic() + self.cache_s, found)
        return found

    def remembered(self, token: str) -> Principal | None:
        """The principal of a key found less than ``cache_s`` ago (memory only), else None."""
        entry = self._remembered.get(hash_token(token))
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    def _lookup(self, digest: str) -> Any:
        with self._engine.connect() as conn:
            return conn.execute(_BY_HASH, {"token_sha256": digest}).first()

    def revoke(self, id_or_name: str) -> list[KeyRecord]:
        """Revoke the key with this id, or every active key with this name; returns what was revoked."""
        matches = [k for k in self.all() if id_or_name in (k.id, k.name)]
        if not matches:
            raise KeyManagementError(f"no active key with id or name {id_or_name!r} (see kb keys list)")
        now = time.time()
        with self._engine.begin() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id.in_([k.id for k in matches]), api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        self._remembered.clear()
        log.info("revoked keys %s", [k.id for k in matches])
        return matches

    def has_active_admin(self) -> bool:
        return any(k.role == "admin" for k in self.all())

    def close(self) -> None:
        if self._owned:
            self._engine.dispose()


def ensure_first_admin_key(store: KeyStore, key_file: Path) -> Path | None:
    """First run: no admin key yet → create one and write it to ``key_file`` (mode 0600).

    The operator reads it from the file (never from a log) and should move it to a
    password manager and delete the file. Returns the file written, or None.
    """
    if store.has_active_admin():
        return None
    issued = store.create("admin", "admin", [ALL])
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600, exist_ok=True)
    key_file.chmod(0o600)
    key_file.write_text(issued.token + "\n", encoding="utf-8")
    log.warning(
        "first run: created admin API key %s; it is in %s (readable only by you). Use it as "
        "'Authorization: Bearer <key>', create employee keys with 'kb keys create', then delete the file.",
        issued.key.id,
        key_file.resolve(),
    )
    return key_file
