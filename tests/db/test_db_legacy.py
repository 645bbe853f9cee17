"""Upgrading an installation of the per-store SQLite era: its keys, ledger, audit log and conversations
are imported into the shared database once (SQLite and a real PostgreSQL), then the files are set aside.

The legacy files are written with the CREATE TABLE statements those versions shipped (copied here
verbatim), WAL mode included, and with rows written as those versions wrote them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from app.audit import AuditLog
from app.auth import KeyStore
from app.db import open_database
from app.db.engine import sqlite_url
from app.llm.costs import UsageLedger, UsageRow
from app.rag.conversation import ConversationStore, Turn
from app.settings import Settings
from tests.conftest import EXAMPLES

OLD_SCHEMAS = {
    "keys.sqlite3": """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    collections TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS api_keys_name ON api_keys (name);
""",
    "usage.sqlite3": """
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL,
    latency_ms REAL NOT NULL,
    cached INTEGER NOT NULL,
    streamed INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    error TEXT,
    collection TEXT,
    "key" TEXT
);
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
""",
    "audit.sqlite3": """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    key_name TEXT,
    collections TEXT NOT NULL,
    question_sha256 TEXT NOT NULL,
    question TEXT,
    standalone_question TEXT,
    conversation_id TEXT,
    prompt TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    answer TEXT,
    retrieved TEXT NOT NULL,
    cited TEXT NOT NULL,
    grounded INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL,
    latency_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE INDEX IF NOT EXISTS audit_key_ts ON audit (key_name, ts);
CREATE INDEX IF NOT EXISTS audit_request ON audit (request_id);
""",
    "conversations.sqlite3": """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    question TEXT NOT NULL,
    standalone TEXT NOT NULL,
    answer TEXT NOT NULL,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
""",
}
# The ingestion state of the per-file era (vectorstore/manifest.py and lexical.py until revision 0002).
OLD_INGESTION_SCHEMAS = {
    "manifest.sqlite3": """
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL,
    source TEXT NOT NULL,
    document_id TEXT NOT NULL,
    doc_hash TEXT NOT NULL,
    chunk_ids TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    title TEXT,
    updated_at REAL NOT NULL,
    clean INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (collection, source)
);
CREATE INDEX IF NOT EXISTS documents_id ON documents (collection, document_id);
CREATE TABLE IF NOT EXISTS writers (
    collection TEXT NOT NULL,
    source TEXT NOT NULL,
    document_id TEXT NOT NULL,
    doc_hash TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (collection, source)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,
    summary TEXT
);
""",
    "lexical.sqlite3": """
CREATE TABLE IF NOT EXISTS chunks (
    collection TEXT NOT NULL,
    chunk_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    tokens TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (collection, chunk_id)
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks (collection, document_id);
CREATE TABLE IF NOT EXISTS versions (collection TEXT PRIMARY KEY, version INTEGER NOT NULL);
""",
}
ADMIN_TOKEN = "kb_" + "A" * 43  # as KeyStore.create made them: only the sha256 was stored
EMPLOYEE_TOKEN = "kb_" + "E" * 43


def _write(path: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript({**OLD_SCHEMAS, **OLD_INGESTION_SCHEMAS}[path.name])
    for table, items in rows.items():
        for row in items:
            columns = ", ".join(f'"{c}"' for c in row)
            conn.execute(f'INSERT INTO "{table}" ({columns}) VALUES ({", ".join("?" * len(row))})', tuple(row.values()))
    conn.commit()
    conn.close()


def _key(id_: str, name: str, role: str, grants: list[str], token: str, revoked: float | None = None) -> dict[str, Any]:
    return {"id": id_, "name": name, "role": role, "collections": json.dumps(grants),
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(), "prefix": token[:7], "created_at": 1.0,
            "revoked_at": revoked}  # fmt: skip


def _usage(i: int) -> dict[str, Any]:
    return {"ts": 1000.0 + i, "request_id": f"old-{i}", "provider": "openai", "model": "gpt-4o-mini",
            "prompt": "answer@v1", "prompt_tokens": 10, "completion_tokens": 2, "cost_usd": 0.25, "latency_ms": 5.0,
            "cached": i % 2, "status": "ok", "collection": "hr", "key": "alice"}  # fmt: skip


def _audit(i: int) -> dict[str, Any]:
    return {"ts": 2000.0 + i, "request_id": f"old-req-{i}", "key_name": "alice", "collections": '["hr"]',
            "question_sha256": "0" * 64, "question": f"old question {i}?", "prompt": "answer@v1",
            "provider": "extractive", "model": "extractive", "answer": "old answer", "retrieved": '["c1"]',
            "cited": '["c1"]', "grounded": 1, "cached": 0, "prompt_tokens": 3, "completion_tokens": 4,
            "cost_usd": None, "latency_ms": 7.0}  # fmt: skip


@pytest.fixture
def legacy_data_dir(tmp_path: Path) -> Path:
    """A data dir as the last per-store SQLite version left it."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _write(data_dir / "keys.sqlite3", {"api_keys": [
        _key("k-admin", "admin", "admin", ["*"], ADMIN_TOKEN),
        _key("k-alice", "alice", "employee", ["hr"], EMPLOYEE_TOKEN),
        _key("k-gone", "gone", "employee", ["hr"], "kb_" + "G" * 43, revoked=5.0),
    ]})  # fmt: skip
    _write(data_dir / "usage.sqlite3", {"usage": [_usage(i) for i in range(3)]})
    _write(data_dir / "audit.sqlite3", {"audit": [_audit(i) for i in range(2)]})
    _write(data_dir / "conversations.sqlite3", {
        "conversations": [{"id": "conv-1", "owner": "k-alice", "created_at": 1.0, "updated_at": 2.0}],
        "turns": [
            {"conversation_id": "conv-1", "seq": s, "question": f"q{s}", "standalone": f"q{s}", "answer": f"a{s}",
             "request_id": f"r{s}", "ts": float(s)} for s in (1, 2)
        ] + [{"conversation_id": "lost", "seq": 1, "question": "q", "standalone": "q", "answer": "a",
              "request_id": "r", "ts": 1.0}],  # a turn whose conversation is missing: SQLite never checked
    })  # fmt: skip
    return data_dir


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "sqlite":
        return None  # the default: kb.sqlite3 in the data dir
    return str(request.getfixturevalue("postgres_url"))


def test_the_old_files_are_imported_once_and_set_aside(
    legacy_data_dir: Path, database_url: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(_env_file=None, data_dir=legacy_data_dir, database={"url": database_url})  # type: ignore[call-arg]
    with caplog.at_level(logging.INFO, logger="app.db.legacy"):
        engine = open_database(settings)
    try:
        assert "imported keys.sqlite3 into the shared database: 3 api_keys rows" in caplog.text
        assert "3 usage rows" in caplog.text and "2 audit rows" in caplog.text
        assert "1 conversations rows, 2 turns rows" in caplog.text  # the orphaned turn is dropped
        for name in ("keys", "usage", "audit", "conversations"):
            assert not (legacy_data_dir / f"{name}.sqlite3").exists()
            assert (legacy_data_dir / f"{name}.sqlite3.imported").is_file()
        # Nobody is locked out: the old keys authenticate, the revoked one stays revoked.
        keys = KeyStore(engine)
        admin, alice = keys.authenticate(ADMIN_TOKEN), keys.authenticate(EMPLOYEE_TOKEN)
        assert admin is not None and admin.is_admin and admin.key_id == "k-admin"
        assert alice is not None and alice.collections == frozenset({"hr"})
        assert keys.authenticate("kb_" + "G" * 43) is None and len(keys.all(include_revoked=True)) == 3
        # The spending history, in its order, and new rows numbered after it.
        ledger = UsageLedger(engine)
        ledger.record({**_usage(9), "request_id": "new", "streamed": 0, "error": None})  # type: ignore[typeddict-item]
        rows = ledger.rows()
        assert [r["request_id"] for r in rows] == ["old-0", "old-1", "old-2", "new"]
        assert sum(r["cost_usd"] for r in rows) == pytest.approx(1.0) and rows[1]["cached"] == 1
        audit = AuditLog(engine).rows()
        assert [r["request_id"] for r in audit] == ["old-req-0", "old-req-1"] and audit[0]["grounded"] is True
        conversations = ConversationStore(engine)
        assert conversations.history("conv-1", "k-alice") == [Turn("q1", "a1", "q1"), Turn("q2", "a2", "q2")]
        conversations.append("conv-1", "k-alice", Turn("q3", "a3"), "r3")  # the conversation goes on
        assert conversations.history("conv-1", "k-alice", last=1) == [Turn("q3", "a3", "q3")]
    finally:
        engine.dispose()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="app.db.legacy"):
        engine = open_database(settings)  # the next start: nothing left to import
    try:
        assert "imported" not in caplog.text
        assert len(UsageLedger(engine).rows()) == 4
    finally:
        engine.dispose()


def test_a_file_for_a_table_that_already_has_rows_is_left_alone(
    legacy_data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A second data dir joining a filled database: its keys are not merged in silently."""
    url = sqlite_url(tmp_path / "shared.sqlite3")
    first = open_database(Settings(_env_file=None, data_dir=tmp_path / "empty", database={"url": url}))  # type: ignore[call-arg]
    KeyStore(first).create("ops", "admin")
    first.dispose()
    with caplog.at_level(logging.INFO, logger="app.db.legacy"):
        engine = open_database(Settings(_env_file=None, data_dir=legacy_data_dir, database={"url": url}))  # type: ignore[call-arg]
    try:
        assert "legacy file" in caplog.text and "keys.sqlite3 not imported" in caplog.text
        assert (legacy_data_dir / "keys.sqlite3").exists()  # kept for the operator
        assert [k.name for k in KeyStore(engine).all()] == ["ops"]
        assert not (legacy_data_dir / "usage.sqlite3").exists()  # the empty tables were still filled
        assert len(UsageLedger(engine).rows()) == 3
    finally:
        engine.dispose()


def test_a_first_release_ledger_without_the_later_columns_imports(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / "usage.sqlite3")
    conn.execute(
        "CREATE TABLE usage (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, request_id TEXT NOT NULL, "
        "provider TEXT NOT NULL, model TEXT NOT NULL, prompt TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, "
        "completion_tokens INTEGER NOT NULL, cost_usd REAL, latency_ms REAL NOT NULL, cached INTEGER NOT NULL, "
        "streamed INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, error TEXT)"
    )
    conn.execute(
        "INSERT INTO usage (ts, request_id, provider, model, prompt, prompt_tokens, completion_tokens, cost_usd, "
        "latency_ms, cached, status) VALUES (1, 'first', 'openai', 'm', 'answer@v1', 1, 1, 0.1, 5, 0, 'ok')"
    )
    conn.commit()
    conn.close()
    engine = open_database(Settings(_env_file=None, data_dir=data_dir))  # type: ignore[call-arg]
    try:
        ledger = UsageLedger(engine)
        (row,) = ledger.rows()
        assert (row["request_id"], row["collection"], row["key"], row["streamed"]) == ("first", None, None, 0)
        # New rows carry the columns later releases added, next to the imported one.
        ledger.record(UsageRow(
            ts=2.0, request_id="new", provider="openai", model="m", prompt="answer@v1", prompt_tokens=1,
            completion_tokens=1, cost_usd=0.1, latency_ms=5.0, cached=0, streamed=0, status="ok", error=None,
            collection="hr", key="key-1",
        ))  # fmt: skip
        rows = [(r["request_id"], r["collection"], r["key"]) for r in ledger.rows()]
        assert rows == [("first", None, None), ("new", "hr", "key-1")]
        assert not (data_dir / "usage.sqlite3").exists() and (data_dir / "usage.sqlite3.imported").exists()
    finally:
        engine.dispose()


def test_moving_from_the_default_sqlite_database_to_postgresql(tmp_path: Path, postgres_url: str) -> None:
    data_dir = tmp_path / "data"
    sqlite = open_database(Settings(_env_file=None, data_dir=data_dir))  # type: ignore[call-arg]
    issued = KeyStore(sqlite).create("ops", "admin")
    UsageLedger(sqlite).record({**_usage(0), "streamed": 0, "error": None})  # type: ignore[typeddict-item]
    conversation = ConversationStore(sqlite).start(issued.key.id)
    ConversationStore(sqlite).append(conversation, issued.key.id, Turn("q", "a"), "r")
    sqlite.dispose()

    moved = Settings(_env_file=None, data_dir=data_dir, database={"url": postgres_url})  # type: ignore[call-arg]
    engine = open_database(moved)
    try:
        assert engine.dialect.name == "postgresql"
        principal = KeyStore(engine).authenticate(issued.token)
        assert principal is not None and principal.is_admin
        assert [r["request_id"] for r in UsageLedger(engine).rows()] == ["old-0"]
        assert ConversationStore(engine).history(conversation, issued.key.id) == [Turn("q", "a", "q")]
        assert not (data_dir / "kb.sqlite3").exists() and (data_dir / "kb.sqlite3.imported").exists()
    finally:
        engine.dispose()


def test_a_data_dir_of_the_per_file_manifest_keeps_answering_after_the_upgrade(
    handbook_data_dir: Path, embedder: Any, tmp_path: Path, database_url: str | None
) -> None:
    """The manifest and BM25 chunks move into the database; nothing is re-ingested and answers stay the same."""
    from sqlalchemy import text

    from app.bootstrap import Components

    before = Components(Settings(_env_file=None, data_dir=handbook_data_dir), embedder=embedder)  # type: ignore[call-arg]
    data_dir = tmp_path / "old"
    shutil.copytree(handbook_data_dir / "chroma", data_dir / "chroma")
    try:
        question = "What is the guest Wi-Fi network called?"
        # that era ranked without section vectors (revision 0005): its rows have none
        then = before.retriever.config.model_copy(update={"section_weight": 0.0})
        expected = {mode: [h.id for h in before.retriever.search(question, ["handbook"], 5, mode=mode, config=then)]
                    for mode in ("hybrid", "lexical")}  # fmt: skip
        with before.db.connect() as conn:  # the rows, as the per-file era kept them in two files
            dump = {t: [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {t}"))]
                    for t in ("documents", "runs", "chunks", "versions")}  # fmt: skip
        for row in dump["chunks"]:  # and no version labels (revision 0009)
            del row["section_vector"], row["written"]
    finally:
        before.close()
    _write(data_dir / "manifest.sqlite3", {t: dump[t] for t in ("documents", "runs")})
    _write(data_dir / "lexical.sqlite3", {t: dump[t] for t in ("chunks", "versions")})

    settings = Settings(_env_file=None, data_dir=data_dir, database={"url": database_url})  # type: ignore[call-arg]
    after = Components(settings, embedder=embedder)
    try:
        assert after.manifest.collections() == {"handbook": (4, len(dump["chunks"]))}
        for mode, ids in expected.items():
            assert [h.id for h in after.retriever.search(question, ["handbook"], 5, mode=mode)] == ids
        assert not (data_dir / "manifest.sqlite3").exists() and (data_dir / "lexical.sqlite3.imported").is_file()
        report = after.ingest_pipeline.ingest([EXAMPLES], "handbook")
        assert report.unchanged == 4 and not report.added and not report.updated  # nothing re-embedded
    finally:
        after.close()
