"""kb groups: map identity-provider groups to the collections (and role) their members may read.

Single sign-on users (KB_OIDC__*) get what their groups grant: ``kb groups map hr-team --collections
handbook`` lets everyone in hr-team read handbook. Stored in the shared database the server uses
(KB_DATABASE__URL), so it holds on every replica within KB_AUTH__KEY_CACHE_S (default 5 s).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from app.auth import ROLES
from app.cli.common import cli, console, database, fail, out, setup
from app.errors import GroupNotFoundError, InvalidRequestError, KbError
from app.sso.groups import GroupStore
from app.sso.sessions import SessionStore

groups_cli = typer.Typer(
    help="Single sign-on: which collections each identity-provider group may read.", no_args_is_help=True
)
cli.add_typer(groups_cli, name="groups")
sessions_cli = typer.Typer(help="Single sign-on: the web sessions of signed-in users.", no_args_is_help=True)
cli.add_typer(sessions_cli, name="sessions")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


@groups_cli.command("map")
def map_group(
    group: Annotated[str, typer.Argument(help="The group as the identity provider names it in the token.")],
    collections: Annotated[
        str, typer.Option("--collections", "-c", help="Comma-separated collections its members may read; '*': all.")
    ] = "",
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}. Admins read everything.")] = "employee",
) -> None:
    """Grant a group's members these collections (replaces the group's earlier mapping)."""
    settings = setup()
    with database(settings) as engine:
        try:
            grant = GroupStore(engine).map(group, [c for c in collections.split(",") if c.strip()], role)
        except KbError as exc:
            raise fail(exc) from exc
    grants = ", ".join(grant.collections) if grant.role == "employee" else "all (admin)"
    console.print(f"group {grant.group!r} ({grant.role}): {grants}")


@groups_cli.command("unmap")
def unmap_group(group: Annotated[str, typer.Argument(help="The group to remove.")]) -> None:
    """Remove a group's mapping: its members lose what it granted (a running server within a few seconds)."""
    settings = setup()
    with database(settings) as engine:
        removed = GroupStore(engine).unmap(group)
    if not removed:
        raise fail(GroupNotFoundError(f"no mapping for group {group!r} (see kb groups list)"))
    console.print(f"group {group!r} unmapped")


@groups_cli.command("list")
def list_groups(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """The groups that give access, with their role and collections."""
    settings = setup()
    with database(settings) as engine:
        grants = GroupStore(engine).all()
    if as_json:
        for g in grants:
            out.print(json.dumps(g.__dict__), markup=False, highlight=False)
        return
    table = Table("group", "role", "collections", "updated (UTC)")
    for g in grants:
        table.add_row(g.group, g.role, ",".join(g.collections) if g.role == "employee" else "*", _when(g.updated_at))
    out.print(table if grants else "no groups mapped yet: kb groups map GROUP --collections NAME")


@sessions_cli.command("list")
def list_sessions() -> None:
    """Signed-in users' sessions that have not expired (never the session ids)."""
    settings = setup()
    with database(settings) as engine:
        rows = SessionStore(engine, ttl_s=0).active()
    table = Table("subject", "name", "signed in (UTC)", "expires (UTC)")
    for subject, name, created, expires in rows:
        table.add_row(subject, name, _when(created), _when(expires))
    out.print(table if rows else "no active sessions")


@sessions_cli.command("revoke")
def revoke_sessions(
    subject: Annotated[
        str, typer.Argument(help="The user's subject at the identity provider (see kb sessions list).")
    ] = "",
    everyone: Annotated[bool, typer.Option("--all", help="End every session (everyone signs in again).")] = False,
) -> None:
    """End a user's sessions at once (a user disabled or moved out of a group at the provider)."""
    if bool(subject) == everyone:
        raise fail(InvalidRequestError("name one subject, or --all"))
    settings = setup()
    with database(settings) as engine:
        ended = SessionStore(engine, ttl_s=0).end_for(subject or None)
    console.print(f"{ended} session{'s' if ended != 1 else ''} ended")
