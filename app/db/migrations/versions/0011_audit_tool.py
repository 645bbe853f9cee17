"""the audit log says which MCP tool a row came from (``tool``; NULL: an answer of /chat or /v1)

An MCP client calls ``search``, ``ask``, ``list_collections``, lists or reads document resources; each call is
audited like /chat, and a search or a read has no answer, so its row must not pass for one: the
knowledge-gap report reads only answers (NULL or ``mcp.ask``), ``kb audit`` shows the tool.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("tool", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("tool")
