"""Alembic's environment for kb: always run programmatically by ``app.db.migrate``.

There is no alembic.ini at run time. ``app.db.migrate`` builds the Config and passes the
connection it holds the migration lock on in ``config.attributes["connection"]``, so the
upgrade runs inside that lock (PostgreSQL advisory lock, or the SQLite file lock). Offline
mode (``--sql``) is refused: kb always migrates a live database.
"""

from __future__ import annotations

import logging

from alembic import context

from app.db.schema import metadata

log = logging.getLogger(__name__)


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("kb migrations run through app.db.migrate (kb db upgrade), which passes a connection")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported: run kb db upgrade against the database")
run_migrations_online()
