"""an index on the live documents' versions: the query that finds versions readers must not see

Every search during an ingestion asks which versions are being written and not live yet
(``Manifest.dead_hashes``, once per manifest change). It compared the writers' few rows against every
live version of the collection with ``NOT IN (SELECT doc_hash FROM documents ...)``, which SQLite
answers by copying all of them into a temporary B-tree first: 2.8-3.5 s per search at a million
chunks (330k documents), the searches' longest stall while the server ingested (docs/benchmarks.md,
"Scale"). With this index each writer's version is one lookup (0.1-0.2 ms); built in 0.7 s there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("documents_hash", "documents", ["collection", "doc_hash"])


def downgrade() -> None:
    op.drop_index("documents_hash", table_name="documents")
