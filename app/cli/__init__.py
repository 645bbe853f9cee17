"""The ``kb`` command line. Commands live in one module per area and register on ``cli``."""

from __future__ import annotations

from app.cli import ask_cmds, cache_cmds, ingest_cmds, search_cmds, usage_cmds  # noqa: F401  (registers the commands)
from app.cli.common import cli


def main() -> None:
    cli()


__all__ = ["cli", "main"]
