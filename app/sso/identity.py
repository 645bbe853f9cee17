"""Who a verified token or web session says the user is: subject, display name and groups."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SUBJECT_PREFIX = "sso:"


@dataclass(frozen=True)
class Identity:
    subject: str
    name: str
    groups: tuple[str, ...]

    @property
    def label(self) -> str:
        """What audit rows, the ledger and logs show: the name people know and the subject that is unique."""
        return f"{self.name} ({SUBJECT_PREFIX}{self.subject})"

    @property
    def owner_id(self) -> str:
        """Stands where a key id stands (rate limits, conversation owner): stable across the user's sessions."""
        return SUBJECT_PREFIX + self.subject


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``realm_access.roles``); a plain name that contains dots is tried first."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def groups_in(claims: Mapping[str, Any], path: str) -> tuple[str, ...]:
    """The user's groups: a list of names; a single string is one group (never split: a group named
    "not admins" must not become "admins", nor "CN=x,OU=y" its parts)."""
    value = claim_at(claims, path)
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list | tuple):
        items = [str(v) for v in value if isinstance(v, str | int)]
    else:
        items = []
    return tuple(dict.fromkeys(g.strip() for g in items if g.strip()))


def identity_from(claims: Mapping[str, Any], *, groups_claim: str, name_claim: str) -> Identity:
    subject = str(claims.get("sub") or "")
    name = ""
    for key in (name_claim, "name", "preferred_username", "email"):
        value = claim_at(claims, key)
        if isinstance(value, str) and value.strip():
            name = value.strip()
            break
    return Identity(subject, name or subject, groups_in(claims, groups_claim))
