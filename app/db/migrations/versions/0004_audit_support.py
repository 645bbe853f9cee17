"""audit support: each answer's support policy and how many of its sentences had no support

Sentence-level support (app/rag/support.py) decides per answer how many sentences its sources
back; the audit row keeps the policy applied and its outcome, so an admin can find the answers
that were flagged, trimmed or refused for lack of support. Rows written before have NULLs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("support_policy", sa.Text()))
        batch.add_column(sa.Column("claims", sa.Integer()))
        batch.add_column(sa.Column("unsupported", sa.Integer()))
        batch.add_column(sa.Column("dropped", sa.Integer()))
        batch.add_column(sa.Column("refused_unsupported", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        for name in ("refused_unsupported", "dropped", "unsupported", "claims", "support_policy"):
            batch.drop_column(name)
