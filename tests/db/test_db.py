"""The shared SQL database: one store contract run against SQLite and a real PostgreSQL server,
Alembic migrations (from empty, idempotent, two at once), ``kb db`` and ``/readyz``.

Each PostgreSQL test gets a database of its own on the server ``make test`` starts
(tests/postgres.py); each SQLite test a file in its tmp dir.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, inspect
from typer.testing import CliRunner

from app.audit import AuditLog, AuditRecord
from app.auth import KeyStore
from app.db import migrate, open_database
from app.db.engine import make_engine, sqlite_url
from app.db.migrate import SchemaOutdatedError
from app.db.schema import metadata
from app.llm.costs import UsageLedger, UsageRow
from app.llm.usage_report import summarize
from app.rag.conversation import ConversationNotFoundError, ConversationStore, Turn
from app.settings import Settings, get_settings
from tests.threads import run_together

TABLES = {"usage", "audit", "api_keys", "conversations", "turns", "documents", "writers", "chunks", "versions"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database of each backend."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "kb.sqlite3")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on an empty database of each backend, migrated to head."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _usage_row(**changes: Any) -> UsageRow:
    row = UsageRow(
        ts=time.time(), request_id="r1", provider="openai", model="gpt-4o-mini", prompt="answer@v2",
        prompt_tokens=100, completion_tokens=20, cost_usd=0.000027, latency_ms=812.5, cached=0, streamed=0,
        status="ok", error=None, collection="handbook", key="alice",
    )  # fmt: skip
    row.update(changes)  # type: ignore[typeddict-item]
    return row


def test_ledger_rows_and_totals(engine: Engine) -> None:
    ledger = UsageLedger(engine)
    now = time.time()
    ledger.record(_usage_row(ts=now - 3 * 86400, request_id="old"))
    ledger.record(_usage_row(ts=now - 60, request_id="a"))
    ledger.record(_usage_row(ts=now - 30, request_id="a", cost_usd=0.0, cached=1, key="bob"))
    ledger.record(_usage_row(ts=now, request_id="b", status="error", error="provider_timeout", cost_usd=None,
                             prompt_tokens=0, completion_tokens=0, streamed=1))  # fmt: skip
    rows = ledger.rows()
    assert [r["request_id"] for r in rows] == ["old", "a", "a", "b"]  # insertion order
    assert rows[0]["id"] < rows[1]["id"] < rows[2]["id"] < rows[3]["id"]
    assert rows[1] == {**_usage_row(ts=now - 60, request_id="a"), "id": rows[1]["id"]}  # every column round-trips
    assert rows[3]["cost_usd"] is None and rows[3]["error"] == "provider_timeout" and rows[3]["streamed"] == 1
    recent = ledger.rows(since_ts=now - 86400)
    assert [r["request_id"] for r in recent] == ["a", "a", "b"]
    groups, total = summarize(recent, by="key")
    assert {g["key"]: (g["calls"], g["cached"], g["errors"]) for g in groups} == {"alice": (2, 0, 1), "bob": (1, 1, 0)}
    assert (total["calls"], total["cached"], total["errors"], total["prompt_tokens"]) == (3, 1, 1, 200)
    assert total["cost_usd"] == pytest.approx(0.000027)


def _audit(i: int, **changes: Any) -> AuditRecord:
    values: dict[str, Any] = dict(
        request_id=f"req-{i}", question=f"Question {i}?", prompt="answer@v2", provider="extractive",
        model="extractive", answer=f"Answer {i} [1].", key_name="alice", collections=["handbook", "hr"],
        retrieved=["c1", "c2"], cited=["c1"], grounded=True, prompt_tokens=10, completion_tokens=5,
        cost_usd=0.0001, latency_ms=12.5,
    )  # fmt: skip
    values.update(changes)
    return AuditRecord(**values)


def test_audit_rows_since_filter_and_retention(engine: Engine) -> None:
    log = AuditLog(engine)
    for i in range(5):
        log.record(_audit(i, ts=1000.0 + i, key_name="alice" if i % 2 else "bob", cached=i == 4))
    rows = log.rows(since_ts=1002.0)
    assert [r["request_id"] for r in rows] == ["req-2", "req-3", "req-4"]
    assert rows[0]["collections"] == ["handbook", "hr"] and rows[0]["cited"] == ["c1"]
    assert rows[0]["grounded"] is True and rows[0]["cached"] is False and rows[2]["cached"] is True
    assert [r["request_id"] for r in log.rows(key_name="alice")] == ["req-1", "req-3"]
    assert [r["request_id"] for r in log.rows(limit=2)] == ["req-3", "req-4"]
    assert log.purge(1002.0) == 2 and len(log.rows()) == 3
    hidden = AuditLog(engine, store_text=False)
    hidden.record(_audit(9, ts=2000.0))
    row = hidden.rows(since_ts=2000.0)[0]
    assert row["question"] is None and row["answer"] is None and len(row["question_sha256"]) == 64


def test_keys_create_lookup_revoke_and_grants(engine: Engine) -> None:
    keys = KeyStore(engine)
    assert not keys.has_active_admin()
    alice = keys.create("alice", "employee", ["hr", "eng", "hr"])
    ops = keys.create("ops", "admin", ["*"])
    principal = keys.authenticate(alice.token)
    assert principal is not None and principal.name == "alice" and principal.role == "employee"
    assert principal.collections == frozenset({"eng", "hr"}) and principal.key_id == alice.key.id
    assert principal.can_read("hr") and not principal.can_read("legal")
    admin = keys.authenticate(ops.token)
    assert admin is not None and admin.is_admin and admin.collections is None
    assert keys.has_active_admin()
    assert keys.authenticate("kb_" + "x" * 43) is None
    assert [k.name for k in keys.all()] == ["alice", "ops"]
    assert [k.id for k in keys.revoke("alice")] == [alice.key.id]
    assert keys.authenticate(alice.token) is None  # the next request with it is refused
    assert [k.name for k in keys.all()] == ["ops"]
    revoked = next(k for k in keys.all(include_revoked=True) if k.name == "alice")
    assert revoked.revoked_at is not None and revoked.collections == ["eng", "hr"]
    other = KeyStore(engine)  # another store on the same database (as another replica) sees the same keys
    assert other.authenticate(ops.token) == admin and other.authenticate(alice.token) is None


def test_the_request_path_survives_the_database_dropping_its_connections(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As after a PostgreSQL restart: every pooled connection is dead, the server is back."""
    engine = make_engine(postgres_url)
    migrate.upgrade(engine)
    keys, ledger = KeyStore(engine), UsageLedger(engine)
    token = keys.create("alice", "employee", ["hr"]).token

    def drop_connections() -> None:
        assert keys.authenticate(token) is not None  # a pooled connection exists
        with make_engine(engine.url).connect() as admin:
            killed = admin.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).scalar_one()
        assert killed >= 1

    try:
        drop_connections()
        with caplog.at_level("WARNING", logger="app.db.engine"):
            principal = keys.authenticate(token)  # the dead connection is noticed, the lookup retried
        assert principal is not None and principal.name == "alice"
        assert "key lookup: the database connection was lost" in caplog.text
        drop_connections()
        ledger.record(_usage_row(request_id="after-restart"))
        assert [r["request_id"] for r in ledger.rows()] == ["after-restart"]
    finally:
        engine.dispose()


def test_conversations_ownership_and_turns(engine: Engine) -> None:
    store = ConversationStore(engine)
    cid = store.start("key-a")
    for i in range(8):
        store.append(cid, "key-a", Turn(f"q{i}", f"a{i}", f"standalone q{i}" if i % 2 else ""), f"r{i}")
    history = store.history(cid, "key-a", last=3)
    assert history == [Turn("q5", "a5", "standalone q5"), Turn("q6", "a6", "q6"), Turn("q7", "a7", "standalone q7")]
    for owner, conversation in (("key-b", cid), ("key-a", "no-such-id")):
        with pytest.raises(ConversationNotFoundError):
            store.history(conversation, owner)
        with pytest.raises(ConversationNotFoundError):
            store.append(conversation, owner, Turn("q", "a"), "r")

    # Appends racing on one conversation each get their own turn number.
    def append(worker: int) -> None:
        for i in range(6):
            store.append(cid, "key-a", Turn(f"w{worker}-{i}", "a"), f"w{worker}")

    errors = run_together(append, range(6))
    assert errors == []
    assert len(store.history(cid, "key-a", last=100)) == 8 + 36


def test_single_sign_on_state_groups_sessions_and_one_use_logins(engine: Engine) -> None:
    """The SSO stores on each backend: a login is taken once (a replayed callback finds nothing), only by the
    browser that started it; sessions are found by their cookie, end with logout or per user."""
    from app.sso.groups import GroupStore
    from app.sso.identity import Identity
    from app.sso.sessions import SessionStore

    groups = GroupStore(engine)
    groups.map("hr-team", ["handbook"])
    groups.map("hr-team", ["handbook", "hr"])  # replaces
    assert [(g.group, g.collections) for g in groups.all()] == [("hr-team", ("handbook", "hr"))]
    sessions = SessionStore(engine, ttl_s=60)
    login = sessions.begin_login(browser="browser-1", redirect_uri="https://kb.example/auth/callback")
    assert sessions.take_login(login.state, "browser-2") is None  # another browser: refused, and the login is gone
    assert sessions.take_login(login.state, "browser-1") is None
    login = sessions.begin_login(browser="browser-1", redirect_uri="https://kb.example/auth/callback")
    taken = sessions.take_login(login.state, "browser-1")
    assert taken == login and sessions.take_login(login.state, "browser-1") is None
    alice = Identity("a1", "Alice", ("hr-team",))
    cookie = sessions.create(alice)
    assert sessions.find(cookie) == alice and sessions.find(cookie + "x") is None
    assert [row[0] for row in sessions.active()] == ["a1"]
    sessions.end(cookie)
    assert sessions.find(cookie) is None
    sessions.create(alice), sessions.create(alice)
    assert sessions.end_for("a1") == 2 and sessions.end_for(None) == 0


def test_the_migrated_schema_is_the_one_the_code_queries(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= TABLES
        # procrastinate's own tables (the shared queue, PostgreSQL only) are its schema, not ours
        ours = MigrationContext.configure(
            conn, opts={"include_name": lambda name, kind, _: kind != "table" or not name.startswith("procrastinate_")}
        )
        diffs = compare_metadata(ours, metadata)
        if engine.dialect.name == "postgresql":
            assert "procrastinate_jobs" in inspect(conn).get_table_names()
    assert diffs == []


def test_the_shipped_head_constant_is_the_newest_revision() -> None:
    """Starts skip Alembic when the database is at ``migrate.HEAD``: it must name the scripts' head."""
    assert migrate.head_revision() == migrate.HEAD


def test_upgrade_from_empty_is_idempotent(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(db_url)
    try:
        assert migrate.current_revision(engine) is None
        with caplog.at_level("INFO", logger="app.db.migrate"):
            assert migrate.upgrade(engine) == migrate.head_revision()
        assert "migrating the database schema from an empty database" in caplog.text
        assert migrate.current_revision(engine) == migrate.head_revision()
        KeyStore(engine).create("kept", "admin")
        caplog.clear()
        with caplog.at_level("INFO", logger="app.db.migrate"):
            migrate.upgrade(engine)  # at head: nothing runs, nothing is lost
        assert "migrating" not in caplog.text
        assert [k.name for k in KeyStore(engine).all()] == ["kept"]
    finally:
        engine.dispose()


def test_two_replicas_migrating_an_empty_database_at_once(db_url: str) -> None:
    """Two processes' worth of engines race ``upgrade`` on one empty database: both succeed, once."""
    engines = [make_engine(db_url), make_engine(db_url)]
    results: list[str] = []
    errors = run_together(lambda engine: results.append(migrate.upgrade(engine)), engines)
    try:
        assert errors == [] and results == [migrate.head_revision()] * 2
        assert migrate.current_revision(engines[0]) == migrate.head_revision()
        with engines[0].connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar_one() == 1
    finally:
        for e in engines:
            e.dispose()


def _settings(tmp_path: Path, db_url: str, **database: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", database={"url": db_url, **database})  # type: ignore[call-arg]


def test_an_outdated_schema_is_refused_when_not_migrating_on_start(tmp_path: Path, db_url: str) -> None:
    with pytest.raises(SchemaOutdatedError, match="run 'kb db upgrade'"):
        open_database(_settings(tmp_path, db_url, migrate_on_start=False))
    engine = open_database(_settings(tmp_path, db_url))  # the default migrates
    engine.dispose()
    engine = open_database(_settings(tmp_path, db_url, migrate_on_start=False))  # at head: fine
    engine.dispose()


@pytest.fixture
def kb(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KB_DATABASE__URL", db_url)
    get_settings.cache_clear()
    from app.cli import cli

    runner = CliRunner()
    yield lambda *args: runner.invoke(cli, list(args))
    get_settings.cache_clear()


def test_kb_db_upgrade_current_and_history(kb: Any, db_url: str) -> None:
    head = migrate.head_revision()
    before = kb("db", "current")
    assert before.exit_code == 0 and before.stdout.strip() == "none" and "kb db upgrade" in before.stderr
    if db_url.startswith("sqlite:///"):
        assert not Path(db_url.removeprefix("sqlite:///")).exists()  # asking creates no database file
    upgraded = kb("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert f"upgraded from an empty database to {head} (head)" in upgraded.stdout
    assert kb("db", "current").stdout.strip() == f"{head} (head)"
    again = kb("db", "upgrade")
    assert again.exit_code == 0 and f"already at {head}" in again.stdout
    history = kb("db", "history")
    assert history.exit_code == 0
    assert f"0010 -> {head} (head): the audit log says which MCP tool a row came from" in history.stdout
    assert "0009 -> 0010: the live-version lookup answered from an index alone" in history.stdout
    assert "0008 -> 0009: chunks carry the version they were written at" in history.stdout
    assert "0007 -> 0008: an index on the live documents' versions" in history.stdout
    assert "0006 -> 0007: feedback on answers" in history.stdout
    assert "0005 -> 0006: single sign-on" in history.stdout
    assert "0004 -> 0005: section vectors" in history.stdout
    assert "0003 -> 0004: audit support" in history.stdout
    assert "0002 -> 0003: shared ingestion queue" in history.stdout
    assert "0001 -> 0002: ingestion state" in history.stdout and "<base> -> 0001: initial schema" in history.stdout
    created = kb("keys", "create", "--name", "ops", "--role", "admin")  # the store commands use the same database
    assert created.exit_code == 0 and "ops" in kb("keys", "list").stdout


def test_kb_db_upgrade_reports_an_unreachable_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psycopg")
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KB_DATABASE__URL", f"postgresql://kb:secret@/kb?host={tmp_path}/no-server-here")
    get_settings.cache_clear()
    from app.cli import cli

    try:
        result = CliRunner().invoke(cli, ["db", "upgrade"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1 and "cannot reach the database" in result.output
    assert "secret" not in result.output  # the password is masked


def test_readyz_reports_the_database(handbook_components: Any, db_url: str) -> None:
    from app.api.main import create_app
    from tests.servers import serve_app

    handbook_components.settings.database.url = db_url
    with serve_app(create_app(handbook_components.settings, components=handbook_components)) as url:
        r = httpx.get(f"{url}/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["checks"]["database"]["status"] == "ok"
        token = handbook_components.keys.create("alice", "employee", ["handbook"]).token
        assert httpx.get(f"{url}/collections", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        if handbook_components.db.dialect.name == "postgresql":
            unseen = handbook_components.keys.create("bob", "employee", ["handbook"]).token  # never used before
            # The database goes away under a running replica: /readyz says so, naming only the check.
            database = handbook_components.db.url.database
            admin = make_engine(handbook_components.db.url.set(database="postgres"))
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE "{database}" WITH (FORCE)')
            admin.dispose()
            r = httpx.get(f"{url}/readyz")
            assert r.status_code == 503 and r.json()["failing"] == ["database"], r.text
            assert database not in r.text
            # A key the server remembers (KB_AUTH__KEY_CACHE_S) still reads what needs no database;
            # one it has not seen cannot be checked: a 503 naming the database, not a 500 or a 401.
            assert httpx.get(f"{url}/collections", headers={"Authorization": f"Bearer {token}"}).status_code == 200
            r = httpx.get(f"{url}/collections", headers={"Authorization": f"Bearer {unseen}"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable", r.text
            assert database not in r.text
