"""Identity-provider groups → the collections (and role) their members may read.

An admin maps the groups IT already manages (``kb groups map hr-team --collections handbook``); a
user gets the union of what their groups grant, admin if any of them is mapped as admin. A user
whose groups map to nothing is refused with a 403 that says which groups were seen, so the admin
knows what to map. The mappings are rows of the shared database (``sso_groups``), so a change holds
on every replica; each process remembers them for ``cache_s`` seconds (the same window as API keys).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select, update

from app.auth import ALL, ROLES, Principal, Role
from app.db.engine import retry_on_disconnect
from app.db.schema import sso_groups
from app.errors import ForbiddenError, KeyManagementError
from app.sso.identity import Identity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupGrant:
    group: str
    role: Role
    collections: tuple[str, ...]
    updated_at: float


class GroupStore:
    def __init__(self, engine: Engine, *, cache_s: float = 0.0):
        self._engine = engine
        self.cache_s = cache_s
        self._cached: tuple[float, dict[str, GroupGrant]] | None = None

    def map(self, group: str, collections: list[str] | tuple[str, ...], role: str = "employee") -> GroupGrant:
        """Grant a group's members these collections (``*``: all) and role; replaces the group's earlier mapping."""
        group = group.strip()
        if not group:
            raise KeyManagementError("a group name is needed (as the identity provider spells it in the token)")
        if role not in ROLES:
            raise KeyManagementError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        grants = tuple(sorted({c.strip() for c in collections if c.strip()}))
        if role == "employee" and not grants:
            raise KeyManagementError("an employee group needs at least one collection (--collections hr,eng or '*')")
        now = time.time()
        values = {"role": role, "collections": json.dumps(list(grants)), "updated_at": now}
        with self._engine.begin() as conn:
            changed = conn.execute(update(sso_groups).where(sso_groups.c.name == group).values(**values)).rowcount
            if not changed:
                conn.execute(insert(sso_groups).values(name=group, **values))
        self._cached = None
        log.info("group %s mapped to %s as %s", group, list(grants) or [ALL], role)
        return GroupGrant(group, role, grants, now)  # type: ignore[arg-type]

    def unmap(self, group: str) -> bool:
        with self._engine.begin() as conn:
            removed = conn.execute(delete(sso_groups).where(sso_groups.c.name == group)).rowcount
        self._cached = None
        return bool(removed)

    def all(self) -> list[GroupGrant]:
        return sorted(self._load().values(), key=lambda g: g.group)

    def _load(self) -> dict[str, GroupGrant]:
        cached = self._cached
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]

        def read() -> list[tuple[str, str, str, float]]:
            with self._engine.connect() as conn:
                query = select(sso_groups.c.name, sso_groups.c.role, sso_groups.c.collections, sso_groups.c.updated_at)
                return [tuple(r) for r in conn.execute(query).all()]  # type: ignore[misc]

        rows = retry_on_disconnect(read, "group mappings")
        found = {n: GroupGrant(n, role, tuple(json.loads(cols)), ts) for n, role, cols, ts in rows}  # type: ignore[arg-type]
        if self.cache_s > 0:
            self._cached = (time.monotonic() + self.cache_s, found)
        return found

    def fresh(self) -> bool:
        """Whether the mappings are in memory (``principal_for`` then needs no database round trip)."""
        return self._cached is not None and self._cached[0] > time.monotonic()

    def principal_for(self, who: Identity) -> Principal:
        """The user's principal: the union of their groups' grants, or a 403 naming the groups seen."""
        mapped = self._load()
        grants = [mapped[g] for g in who.groups if g in mapped]
        if not grants:
            seen = ", ".join(who.groups[:10]) if who.groups else "none in the token"
            raise ForbiddenError(
                f"you are signed in as {who.name}, but none of your groups ({seen}) gives access to any collection; "
                "ask an admin to map one: kb groups map GROUP --collections NAME",
                code=ForbiddenError.NO_GROUP_ACCESS,
            )
        role: Role = "admin" if any(g.role == "admin" for g in grants) else "employee"
        names = {c for g in grants for c in g.collections}
        collections = None if role == "admin" or ALL in names else frozenset(names)
        return Principal(who.label, role, collections, who.owner_id)
