"""Shared pieces of the ``kb`` command line: the Typer app, consoles, settings and errors.

Each command reads Settings once and builds only what it needs. Errors are printed
as one line saying what to do, with a non-zero exit code (1: the command failed,
2: it was used wrongly).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from sqlalchemy import Engine

from app import tracing
from app.db import open_database
from app.errors import KbError
from app.logging_setup import configure_logging
from app.settings import Settings, get_settings, private_files

cli = typer.Typer(
    help="kb: answers questions from your company's documents, with sources. "
    "Configure with KB_* environment variables or a .env file (see .env.example).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # commands must stay copy-pasteable
out = Console(soft_wrap=True)


def setup() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)  # KB_LOG_FORMAT=text|json
    private_files(settings)
    try:
        tracing.configure(settings.audit.store_text)  # on only if the OTEL_* variables ask (app/tracing.py)
    except KbError as exc:
        raise fail(exc) from exc
    return settings


def fail(exc: KbError) -> typer.Exit:
    console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
    return typer.Exit(1)


@contextmanager
def database(settings: Settings) -> Iterator[Engine]:
    """The shared SQL database for one command (migrated as on start), disposed at the end; errors exit 1."""
    try:
        engine = open_database(settings)
    except KbError as exc:
        raise fail(exc) from exc
    try:
        yield engine
    finally:
        engine.dispose()
