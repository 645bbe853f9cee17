"""The ``kb`` command line. Commands live in one module per area and register on ``cli``."""

from __future__ import annotations

from app.cli import (  # noqa: F401  (importing a module registers its commands)
    ask_cmds,
    audit_cmds,
    backup_cmds,
    cache_cmds,
    db_cmds,
    eval_cmds,
    feedback_cmds,
    gaps_cmds,
    group_cmds,
    ingest_cmds,
    job_cmds,
    key_cmds,
    mcp_cmds,
    prompt_cmds,
    search_cmds,
    serve_cmds,
    usage_cmds,
    worker_cmds,
)
from app.cli.common import cli


def main() -> None:
    cli()


__all__ = ["cli", "main"]
