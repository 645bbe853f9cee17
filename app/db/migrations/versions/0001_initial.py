"""initial schema: usage ledger, audit log, API keys, conversations and their turns

The tables the four per-store SQLite files had, written out here rather than imported
from ``app.db.schema`` (a shipped revision must not change when the schema module does).

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "usage",
        sa.Column("id", _RowId, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Double()),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("cached", sa.Integer(), nullable=False),
        sa.Column("streamed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("collection", sa.Text()),
        sa.Column("key", sa.Text()),
        sqlite_autoincrement=True,
    )
    op.create_index("usage_ts", "usage", ["ts"])

    op.create_table(
        "audit",
        sa.Column("id", _RowId, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("key_name", sa.Text()),
        sa.Column("collections", sa.Text(), nullable=False),
        sa.Column("question_sha256", sa.Text(), nullable=False),
        sa.Column("question", sa.Text()),
        sa.Column("standalone_question", sa.Text()),
        sa.Column("conversation_id", sa.Text()),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text()),
        sa.Column("retrieved", sa.Text(), nullable=False),
        sa.Column("cited", sa.Text(), nullable=False),
        sa.Column("grounded", sa.Integer(), nullable=False),
        sa.Column("cached", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Double()),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("audit_ts", "audit", ["ts"])
    op.create_index("audit_key_ts", "audit", ["key_name", "ts"])
    op.create_index("audit_request", "audit", ["request_id"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("collections", sa.Text(), nullable=False),
        sa.Column("token_sha256", sa.Text(), nullable=False, unique=True),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("revoked_at", sa.Double()),
    )
    op.create_index("api_keys_name", "api_keys", ["name"])

    op.create_table(
        "conversations",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "turns",
        sa.Column(
            "conversation_id",
            sa.Text(),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("standalone", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    for table in ("turns", "conversations", "api_keys", "audit", "usage"):
        op.drop_table(table)
