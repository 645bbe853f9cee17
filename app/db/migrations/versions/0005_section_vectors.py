"""section vectors: the mean of a section's chunk vectors, kept on the section's first chunk

Hybrid retrieval ranks a chunk with the section it came from (app/rag/retrieval.py): a chunk of a
section that is about the question beats an equally similar chunk lost in a long section on
something else. The vector is written at ingestion, in the same row as the chunk's BM25 tokens,
so it follows the chunk's version and is swept with it. Rows written before have NULL: each of their
chunks ranks as a section of its own until the next `kb ingest` re-extracts the document.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chunks") as batch:
        batch.add_column(sa.Column("section_vector", sa.LargeBinary()))


def downgrade() -> None:
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("section_vector")
