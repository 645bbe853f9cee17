"""The shared tables, as SQLAlchemy Core ``Table`` objects the stores query with.

The columns are those the per-store SQLite files had (``usage.sqlite3``, ``audit.sqlite3``,
``keys.sqlite3``, ``conversations.sqlite3``), so reports, exports and the legacy import see
the same rows. Types are chosen to mean the same on SQLite and PostgreSQL: ``Double`` for
Unix times and money (float8; SQLite REAL), ``Text`` for strings, and ``Integer`` 0/1 for
the flags that were 0/1 before (``cached``, ``grounded``), so ``sum(cached)`` and the usage
report keep working unchanged. JSON lists stay JSON text (no JSONB): the stores encode and
decode them, and nothing queries inside them.

This module describes the *current* schema for the code; the database itself is built by
the Alembic revisions in ``app/db/migrations/versions``, which never import it (a revision
must keep meaning what it meant when it shipped). ``tests/db/test_db.py`` checks that the
migrated database and this metadata agree.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Double, ForeignKey, Index, Integer, LargeBinary, MetaData, Table, Text

from vectorstore import tables as vectorstore_tables

metadata = MetaData()

# BIGINT ids on PostgreSQL (a ledger row per model call adds up); on SQLite an id must be
# declared INTEGER to be the rowid, which AUTOINCREMENT then never reuses.
_RowId = BigInteger().with_variant(Integer(), "sqlite")

usage = Table(
    "usage",
    metadata,
    Column("id", _RowId, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cost_usd", Double),
    Column("latency_ms", Double, nullable=False),
    Column("cached", Integer, nullable=False),
    Column("streamed", Integer, nullable=False, server_default="0"),
    Column("status", Text, nullable=False),
    Column("error", Text),
    Column("collection", Text),
    Column("key", Text),
    Index("usage_ts", "ts"),
    sqlite_autoincrement=True,
)

audit = Table(
    "audit",
    metadata,
    Column("id", _RowId, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("key_name", Text),
    Column("collections", Text, nullable=False),  # JSON list
    Column("question_sha256", Text, nullable=False),
    Column("question", Text),
    Column("standalone_question", Text),
    Column("conversation_id", Text),
    Column("prompt", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("answer", Text),
    Column("retrieved", Text, nullable=False),  # JSON list of chunk ids
    Column("cited", Text, nullable=False),  # JSON list of chunk ids
    Column("grounded", Integer, nullable=False),
    Column("cached", Integer, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cost_usd", Double),
    Column("latency_ms", Double, nullable=False),
    Column("support_policy", Text),  # flag | drop | refuse (revision 0004; NULL before)
    Column("claims", Integer),  # sentences that state something a source must back
    Column("unsupported", Integer),  # of them returned without support (flag)
    Column("dropped", Integer),  # removed for lack of support (drop)
    Column("refused_unsupported", Integer),  # 1: replaced by the refusal for lack of support
    Column("key_id", Text),  # the credential that received the answer: key id or sso:<subject> (0007; NULL before)
    Column("tool", Text),  # the MCP tool called (mcp.search, mcp.ask, ...); NULL: /chat or /v1 (0011)
    Index("audit_ts", "ts"),
    Index("audit_key_ts", "key_name", "ts"),
    Index("audit_request", "request_id"),
    sqlite_autoincrement=True,
)

# Feedback on answers (revision 0007, app/feedback.py): the verdict, and a copy of what it judges.
feedback = Table(
    "feedback",
    metadata,
    Column("id", _RowId, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("key_id", Text),
    Column("key_name", Text),
    Column("verdict", Text, nullable=False),  # up | down
    Column("comment", Text),
    Column("correction", Text),
    Column("question", Text),  # NULL when KB_AUDIT__STORE_TEXT is off
    Column("question_sha256", Text, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("collections", Text, nullable=False),  # JSON list
    Column("cited", Text, nullable=False),  # JSON list of chunk ids
    Column("grounded", Integer, nullable=False),
    Column("out_of_scope", Integer, nullable=False, server_default="0"),  # an admin: kb should refuse this
    Index("feedback_ts", "ts"),
    Index("feedback_request", "request_id"),
    sqlite_autoincrement=True,
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("collections", Text, nullable=False),  # JSON list
    Column("token_sha256", Text, nullable=False, unique=True),
    Column("prefix", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("revoked_at", Double),
    Index("api_keys_name", "name"),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

turns = Table(
    "turns",
    metadata,
    Column("conversation_id", Text, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("question", Text, nullable=False),
    Column("standalone", Text, nullable=False),
    Column("answer", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("ts", Double, nullable=False),
)

# Single sign-on (app/sso, revision 0006): what each identity-provider group may read, web sessions
# (only the sha256 of the cookie's id), and logins between the redirect to the provider and its callback.
sso_groups = Table(
    "sso_groups",
    metadata,
    Column("name", Text, primary_key=True),
    Column("role", Text, nullable=False),
    Column("collections", Text, nullable=False),  # JSON list
    Column("updated_at", Double, nullable=False),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id_sha256", Text, primary_key=True),
    Column("subject", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("groups", Text, nullable=False),  # JSON list
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Index("web_sessions_expires", "expires_at"),
)

sso_logins = Table(
    "sso_logins",
    metadata,
    Column("state", Text, primary_key=True),
    Column("browser_sha256", Text, nullable=False),
    Column("code_verifier", Text, nullable=False),
    Column("nonce", Text, nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("created_at", Double, nullable=False),
)

# Ingestion jobs of the shared queue (KB_QUEUE__BACKEND=postgres, ingest/shared_jobs.py): a job per
# upload, a row per file with its bytes until a worker has ingested it (the file's own task).
ingest_jobs = Table(
    "ingest_jobs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("collection", Text, nullable=False),
    Column("status", Text, nullable=False),  # queued | running | succeeded | failed | cancelled
    Column("created_at", Double, nullable=False),
    Column("started_at", Double),
    Column("finished_at", Double),
    Column("error", Text),
    Column("cancel_requested", Integer, nullable=False, server_default="0"),
    Column("submitted_by", Text),
    Index("ingest_jobs_created", "created_at"),
)

ingest_job_files = Table(
    "ingest_job_files",
    metadata,
    Column("job_id", Text, ForeignKey("ingest_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", Text, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary),  # NULL once the file reached a final status
    Column(
        "status", Text, nullable=False
    ),  # queued | running | added | updated | unchanged | skipped | failed | cancelled
    Column("error", Text),
    Column("chunks", Integer, nullable=False, server_default="0"),
    Column("worker", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("crashes", Integer, nullable=False, server_default="0"),  # starts that never recorded an outcome
    Column("lease_until", Double),  # while running: renewed by its worker (ingest/shared_tasks.py)
    Column("started_at", Double),
    Column("finished_at", Double),
)

# The ingestion state (manifest, writers, BM25 chunks): defined beside the code that queries
# it (vectorstore imports nothing of app), created by revision 0002 in this same database.
for _table in vectorstore_tables.metadata.tables.values():
    _table.to_metadata(metadata)
