"""single sign-on: identity-provider groups mapped to collections, web sessions, logins in progress

OpenID Connect users (app/sso) reach kb with the groups their identity provider says they are in;
``sso_groups`` turns each group into the collection scope and role an API key has. A web sign-in is
a server-side session (``web_sessions``: only the sha256 of the cookie's random id is stored), and a
login between the redirect to the provider and its callback is a row of ``sso_logins`` (state, PKCE
verifier, nonce), consumed once: a replayed callback finds nothing. All three live in the shared
database, so any replica can finish a login another one started.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sso_groups",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("collections", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id_sha256", sa.Text(), primary_key=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("groups", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
    )
    op.create_index("web_sessions_expires", "web_sessions", ["expires_at"])
    op.create_table(
        "sso_logins",
        sa.Column("state", sa.Text(), primary_key=True),
        sa.Column("browser_sha256", sa.Text(), nullable=False),
        sa.Column("code_verifier", sa.Text(), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sso_logins")
    op.drop_index("web_sessions_expires", table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_table("sso_groups")
