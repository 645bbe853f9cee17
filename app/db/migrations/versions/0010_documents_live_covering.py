"""the live-version lookup answered from an index alone: (collection, document_id) now carries doc_hash

Every search asks which version of each candidate's document is live (``Manifest.live_hashes``, ~80
document ids per hybrid query). Through the old index each id cost a read of its table row (rows hold
the chunk id lists: 330k rows, ~400 MB at a million chunks): 1.5 ms p50, 17 ms p95 with cold pages, per
search. With the hash in the index, 0.28 ms (docs/benchmarks.md, "Scale"). Built in 0.7 s at 1M.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("documents_id", table_name="documents")
    op.create_index("documents_id", "documents", ["collection", "document_id", "doc_hash"])


def downgrade() -> None:
    op.drop_index("documents_id", table_name="documents")
    op.create_index("documents_id", "documents", ["collection", "document_id"])
