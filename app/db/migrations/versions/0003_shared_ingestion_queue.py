"""shared ingestion queue: jobs and their files in the database, procrastinate's tables on PostgreSQL

Uploads leave the host's disk: each file's bytes wait in ``ingest_job_files`` until a worker on
any host has ingested it. On PostgreSQL the queue itself is procrastinate's schema (its own
tables, functions and triggers, as the pinned procrastinate version ships them); SQLite has no
shared queue (one host: the API process ingests its uploads itself).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_jobs",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("collection", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double()),
        sa.Column("finished_at", sa.Double()),
        sa.Column("error", sa.Text()),
        sa.Column("cancel_requested", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("submitted_by", sa.Text()),
    )
    op.create_index("ingest_jobs_created", "ingest_jobs", ["created_at"])
    op.create_table(
        "ingest_job_files",
        sa.Column("job_id", sa.Text(), sa.ForeignKey("ingest_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary()),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("chunks", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("worker", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("crashes", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_until", sa.Double()),
        sa.Column("started_at", sa.Double()),
        sa.Column("finished_at", sa.Double()),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        from procrastinate.schema import SchemaManager

        # on the driver's own cursor, in the migration's transaction: without parameters, so the "%"
        # in procrastinate's SQL is not taken for a placeholder
        raw = bind.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor:
            cursor.execute(SchemaManager.get_schema())


def downgrade() -> None:
    op.drop_table("ingest_job_files")
    op.drop_table("ingest_jobs")
