"""kb cache: look after the response cache (clear it after a prompt or model change you want re-answered)."""

from __future__ import annotations

import typer

from app.bootstrap import Components
from app.cli.common import cli, fail, out, setup
from app.errors import KbError

cache_cli = typer.Typer(help="The response cache.", no_args_is_help=True)
cli.add_typer(cache_cli, name="cache")


@cache_cli.command("clear")
def clear() -> None:
    """Remove every cached response (SQLite file or Redis, whichever is configured)."""
    settings = setup()
    if not settings.cache.enabled:
        out.print("the response cache is disabled (KB_CACHE__ENABLED=false); nothing to clear")
        return
    components = Components(settings)
    try:
        cache = components.cache
        assert cache is not None
        removed = cache.clear()
    except KbError as exc:
        raise fail(exc) from exc
    finally:
        components.close()
    out.print(f"removed {removed} cached responses ({settings.cache.backend})")
