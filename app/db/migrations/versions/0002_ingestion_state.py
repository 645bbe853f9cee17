"""ingestion state: manifest (documents, writers, runs, stamps) and the BM25 chunks

Which version of each document is live, who is writing which document, and the stemmed
tokens of every chunk: read on every query, so with several hosts they must live in the
shared database. Same tables and columns as the per-data-dir files ``manifest.sqlite3`` and
``lexical.sqlite3`` had (the upgrade imports those files: ``app.db.legacy``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("collection", sa.Text(), primary_key=True),
        sa.Column("source", sa.Text(), primary_key=True),
        sa.Column("document_id", sa.Text(), nullable=False),
        sa.Column("doc_hash", sa.Text(), nullable=False),
        sa.Column("chunk_ids", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.Text()),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("clean", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("documents_id", "documents", ["collection", "document_id"])
    op.create_table(
        "writers",
        sa.Column("collection", sa.Text(), primary_key=True),
        sa.Column("source", sa.Text(), primary_key=True),
        sa.Column("document_id", sa.Text(), nullable=False),
        sa.Column("doc_hash", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", _RowId, primary_key=True, autoincrement=True),
        sa.Column("collection", sa.Text(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double()),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text()),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "manifest_stamps",
        sa.Column("collection", sa.Text(), primary_key=True),
        sa.Column("stamp", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "chunks",
        sa.Column("collection", sa.Text(), primary_key=True),
        sa.Column("chunk_id", sa.Text(), primary_key=True),
        sa.Column("document_id", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
    )
    op.create_index("chunks_doc", "chunks", ["collection", "document_id"])
    op.create_table(
        "versions",
        sa.Column("collection", sa.Text(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    for table in ("versions", "chunks", "manifest_stamps", "runs", "writers", "documents"):
        op.drop_table(table)
