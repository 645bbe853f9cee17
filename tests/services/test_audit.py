"""The audit log (real SQLite files) and `kb audit` (the real CLI)."""

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.audit import AuditLog, AuditRecord, question_sha256
from app.errors import InvalidRequestError
from app.since import since_timestamp
from tests.threads import run_together


def _record(i: int = 0, **changes: object) -> AuditRecord:
    values: dict[str, object] = {
        "request_id": f"req-{i}",
        "question": f"How many leave days, case {i}?",
        "prompt": "answer@v2",
        "provider": "extractive",
        "model": "extractive",
        "answer": f"27 days [1]. ({i})",
        "key_name": "alice",
        "collections": ["handbook", "hr"],
        "retrieved": ["c1", "c2", "c3"],
        "cited": ["c1"],
        "grounded": True,
        "prompt_tokens": 120,
        "completion_tokens": 8,
        "cost_usd": 0.00012,
        "latency_ms": 42.5,
        "conversation_id": "conv-1",
        "standalone_question": "How many days of annual leave?",
    }
    values.update(changes)
    return AuditRecord(**values)  # type: ignore[arg-type]


def test_a_record_reads_back_with_every_field(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite3")
    rec = _record(ts=1_700_000_000.5)
    log.record(rec)
    log.record(_record(1, cost_usd=None, cached=True, grounded=False, key_name=None, conversation_id=None))
    log.close()

    rows = AuditLog(tmp_path / "audit.sqlite3").rows()  # reopened: it is on disk
    assert len(rows) == 2
    row = rows[0]
    assert row["ts"] == 1_700_000_000.5 and row["request_id"] == "req-0" and row["key_name"] == "alice"
    assert (
        row["collections"] == ["handbook", "hr"] and row["retrieved"] == ["c1", "c2", "c3"] and row["cited"] == ["c1"]
    )
    assert row["question"] == rec.question and row["answer"] == rec.answer
    assert row["question_sha256"] == hashlib.sha256(rec.question.encode()).hexdigest()
    assert row["standalone_question"] == "How many days of annual leave?" and row["conversation_id"] == "conv-1"
    assert (row["prompt"], row["provider"], row["model"]) == ("answer@v2", "extractive", "extractive")
    assert row["grounded"] is True and row["cached"] is False
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_usd"], row["latency_ms"]) == (
        120,
        8,
        0.00012,
        42.5,
    )
    assert rows[1]["cost_usd"] is None and rows[1]["cached"] is True and rows[1]["grounded"] is False
    assert rows[1]["key_name"] is None


def test_without_store_text_only_the_question_hash_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    AuditLog(path, store_text=False).record(_record())
    row = AuditLog(path).rows()[0]
    assert row["question"] is None and row["answer"] is None and row["standalone_question"] is None
    assert row["question_sha256"] == question_sha256("How many leave days, case 0?")
    raw = path.read_bytes() + (path.parent / "audit.sqlite3-wal").read_bytes()
    assert b"leave days" not in raw and b"27 days" not in raw


def test_rows_filter_by_time_and_key_and_keep_the_newest(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite3")
    for i in range(6):
        log.record(_record(i, ts=1000.0 + i, key_name="alice" if i % 2 else "bob"))
    assert [r["request_id"] for r in log.rows(since_ts=1003.0)] == ["req-3", "req-4", "req-5"]
    assert [r["request_id"] for r in log.rows(key_name="bob")] == ["req-0", "req-2", "req-4"]
    assert [r["request_id"] for r in log.rows(limit=2)] == ["req-4", "req-5"]  # newest two, oldest first
    assert [r["request_id"] for r in log.rows(since_ts=1001.0, key_name="alice", limit=1)] == ["req-5"]
    assert log.rows(since_ts=2000.0) == []


def test_retention_deletes_old_rows_and_zero_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    now = time.time()
    keep_all = AuditLog(path)
    keep_all.record(_record(0, ts=now - 40 * 86400))
    keep_all.record(_record(1, ts=now - 10 * 86400))
    keep_all.record(_record(2, ts=now))
    keep_all.close()
    assert len(AuditLog(path).rows()) == 3
    assert [r["request_id"] for r in AuditLog(path, retention_days=30).rows()] == ["req-1", "req-2"]
    assert AuditLog(path).purge(now - 86400) == 1


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite3")

    def write(worker: int) -> None:
        for i in range(50):
            log.record(_record(worker * 1000 + i))

    errors = run_together(write, range(8))
    assert errors == []
    ids = [r["request_id"] for r in log.rows()]
    assert len(ids) == 400 and len(set(ids)) == 400


def test_since_accepts_windows_and_iso_dates() -> None:
    now = 1_800_000_000.0
    assert since_timestamp("1h", now=now) == now - 3600
    assert since_timestamp("7d", now=now) == now - 7 * 86400
    assert since_timestamp("2026-11-20", now=now) == 1_795_132_800.0  # midnight UTC
    assert since_timestamp("2026-11-20T08:00+01:00") == 1_795_132_800.0 + 7 * 3600
    with pytest.raises(InvalidRequestError, match="ISO date"):
        since_timestamp("yesterday")


@pytest.fixture
def kb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    from app.settings import get_settings

    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_kb_audit_prints_rows_as_a_table_or_json_lines(
    kb: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.cli import cli
    from app.cli.common import out

    monkeypatch.setattr(out, "width", 250)  # a wide terminal: the table's cells are not folded

    from app.db import open_database
    from app.settings import get_settings

    empty = kb.invoke(cli, ["audit"])
    assert empty.exit_code == 0 and "no audit log yet" in empty.stderr
    assert not (tmp_path / "data" / "kb.sqlite3").exists()  # reading creates no database

    engine = open_database(get_settings())  # the database the server would write to
    log = AuditLog(engine)
    now = time.time()
    log.record(_record(0, ts=now - 3 * 86400, key_name="bob"))
    log.record(_record(1, ts=now - 7200, question="What does [n] mean in {sources}?"))
    log.record(_record(2, ts=now - 60, key_name="bob"))
    log.close()
    engine.dispose()

    lines = kb.invoke(cli, ["audit", "--json"])
    assert lines.exit_code == 0, lines.output
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [r["request_id"] for r in rows] == ["req-1", "req-2"]  # default window: the last day
    assert rows[0]["question"] == "What does [n] mean in {sources}?" and rows[0]["retrieved"] == ["c1", "c2", "c3"]

    week = kb.invoke(cli, ["audit", "--since", "7d", "--key", "bob", "--json"])
    assert [json.loads(line)["request_id"] for line in week.stdout.splitlines()] == ["req-0", "req-2"]
    newest = kb.invoke(cli, ["audit", "--since", "2000-01-01", "--limit", "1", "--json"])
    assert [json.loads(line)["request_id"] for line in newest.stdout.splitlines()] == ["req-2"]

    table = kb.invoke(cli, ["audit", "--since", "1h"])
    assert table.exit_code == 0 and "req-2" in table.stdout and "answer@v2" in table.stdout
    assert "req-1" not in table.stdout and "1 requests since" in table.stderr
    marked_up = kb.invoke(cli, ["audit", "--since", "3h"])
    assert "[n]" in marked_up.stdout  # user text is printed, not read as rich markup

    # a client may send one X-Request-ID twice: each row still has its own id, shown in the table too
    engine = open_database(get_settings())
    log = AuditLog(engine)
    log.record(_record(7, ts=now - 30))
    log.record(_record(7, ts=now - 20))
    log.close()
    engine.dispose()
    twice = [json.loads(line) for line in kb.invoke(cli, ["audit", "--since", "1m", "--json"]).stdout.splitlines()]
    assert [r["request_id"] for r in twice] == ["req-7", "req-7"] and twice[0]["id"] != twice[1]["id"]
    shown = kb.invoke(cli, ["audit", "--since", "1m"]).stdout
    assert all(f" {r['id']} " in shown for r in twice)

    bad = kb.invoke(cli, ["audit", "--since", "last tuesday"])
    assert bad.exit_code == 2 and "invalid_since" in bad.stderr


def test_a_failed_write_is_a_kb_error_naming_the_request(tmp_path: Path) -> None:
    from app.audit import AuditError

    log = AuditLog(tmp_path / "audit.sqlite3")
    with log._engine.begin() as conn:  # the table replaced by something an insert cannot satisfy
        conn.exec_driver_sql("DROP TABLE audit")
        conn.exec_driver_sql("CREATE TABLE audit (id INTEGER PRIMARY KEY, ts REAL NOT NULL)")
    with pytest.raises(AuditError, match="req-7"):
        log.record(_record(7))
