"""kb keys: create, list and revoke API keys, in the shared database the server uses (KB_DATABASE__URL).

The plaintext key is printed once, at creation, on stdout only (so it can be piped
into a secret store); the database keeps its sha256.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from app.auth import ROLES, KeyStore
from app.cli.common import cli, console, database, fail, out, setup
from app.errors import KbError

keys_cli = typer.Typer(help="API keys: who may ask, with which role and collections.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else ""


@keys_cli.command("create")
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="Who or what uses the key (shown in logs and audit).")],
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}. Admins read everything.")] = "employee",
    collections: Annotated[
        str, typer.Option("--collections", "-c", help="Comma-separated collections the key may read; '*': all.")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the key and its record as JSON.")] = False,
) -> None:
    """Create a key and print it once: store it now, it cannot be shown again."""
    settings = setup()
    with database(settings) as engine:
        try:
            issued = KeyStore(engine).create(name, role, [c for c in collections.split(",") if c.strip()])
        except KbError as exc:
            raise fail(exc) from exc
    if as_json:
        out.print_json(json.dumps({"token": issued.token, **issued.key.__dict__}))
        return
    grants = ", ".join(issued.key.collections) if issued.key.role == "employee" else "all (admin)"
    console.print(f"created {issued.key.role} key {issued.key.id} for {issued.key.name!r}; collections: {grants}")
    console.print("the key is shown only now; send it as 'Authorization: Bearer <key>':")
    out.print(issued.token, markup=False, highlight=False)


@keys_cli.command("list")
def list_keys(
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """Keys with their role and collections (never the keys themselves)."""
    settings = setup()
    with database(settings) as engine:
        keys = KeyStore(engine).all(include_revoked=all_keys)
    if as_json:
        for key in keys:
            out.print(json.dumps(key.__dict__), markup=False, highlight=False)
        return
    table = Table("id", "name", "role", "collections", "prefix", "created (UTC)", "revoked (UTC)")
    for key in keys:
        grants = ",".join(key.collections) if key.role == "employee" else "*"
        table.add_row(
            key.id, key.name, key.role, grants, key.prefix + "…", _when(key.created_at), _when(key.revoked_at)
        )
    out.print(table if keys else "no keys yet: kb keys create --name NAME --role employee --collections hr")


@keys_cli.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="Key id, or a name (revokes every active key with that name).")],
) -> None:
    """Revoke keys: requests with them get 401 (a running server within KB_AUTH__KEY_CACHE_S, default 5 s)."""
    settings = setup()
    with database(settings) as engine:
        try:
            revoked = KeyStore(engine).revoke(key)
        except KbError as exc:
            raise fail(exc) from exc
    out.print(f"revoked {len(revoked)} key(s): {', '.join(f'{k.id} ({k.name})' for k in revoked)}")
    if settings.auth.key_cache_s > 0:
        out.print(f"running servers refuse them within {settings.auth.key_cache_s:g} s (KB_AUTH__KEY_CACHE_S)")
