"""feedback on answers: thumbs up/down, a comment, a corrected answer; and who received each answer

An employee judges an answer by its request id (POST /feedback). Only the credential that received the
answer (or an admin) may, so each audit row now keeps the receiving key's id (or ``sso:<subject>``) in
``key_id``; rows written before have NULL, and only an admin may judge those. A ``feedback`` row copies
what it judges from the audit row (question, prompt version, provider/model, collections, cited chunks,
grounded), so reports and eval cases built from it stand on their own after audit retention.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("key_id", sa.Text()))
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "feedback",
        sa.Column("id", id_type, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text()),
        sa.Column("key_name", sa.Text()),
        sa.Column("verdict", sa.Text(), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("correction", sa.Text()),
        sa.Column("question", sa.Text()),
        sa.Column("question_sha256", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("collections", sa.Text(), nullable=False),
        sa.Column("cited", sa.Text(), nullable=False),
        sa.Column("grounded", sa.Integer(), nullable=False),
        sa.Column("out_of_scope", sa.Integer(), nullable=False, server_default="0"),
        sqlite_autoincrement=True,
    )
    op.create_index("feedback_ts", "feedback", ["ts"])
    op.create_index("feedback_request", "feedback", ["request_id"])


def downgrade() -> None:
    op.drop_index("feedback_request", table_name="feedback")
    op.drop_index("feedback_ts", table_name="feedback")
    op.drop_table("feedback")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("key_id")
