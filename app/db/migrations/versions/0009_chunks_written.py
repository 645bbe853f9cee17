"""chunks carry the version they were written at: a new document is searchable before the BM25 rebuild

A large collection's BM25 snapshot is rebuilt in the background after writes (a minute at a million
chunks), and until now a new document's chunks could be found only by the dense retriever meanwhile:
at a million chunks its first answer came once the rebuild was in (docs/benchmarks.md, "Scale"). With
the collection version a chunk was written at, and an index on it, a reader finds the rows newer than
its snapshot in one range read and searches them beside it (vectorstore/lexical_delta.py). Rows written
before get 0: as old as any snapshot, as they are.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chunks") as batch:
        batch.add_column(sa.Column("written", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_index("chunks_written", "chunks", ["collection", "written"])


def downgrade() -> None:
    op.drop_index("chunks_written", table_name="chunks")
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("written")
