"""A cache hit's bookkeeping is deferred, and nothing is lost or reordered by it; remembered keys.

The deferred writer (app/db/writer.py) commits cache hits' rows after the response: these
tests check that every row still lands (and in the right place when one is bad), that a
follow-up to a just-answered conversation works at once, that another process sees the rows
within the linger, and that a key remembered by the server stops working once revoked.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from app.auth import KeyStore
from app.bootstrap import Components
from app.db import engine_for
from app.db.schema import audit, conversations, turns, usage
from app.db.writer import DeferredWriter
from app.settings import AuthSettings, DatabaseSettings, Settings
from tests.servers import api_client
from tests.threads import run_together

QUESTION = "How many days of annual leave do I get?"


def _count(engine: Any, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _conversation(cid: str, owner: str = "k") -> tuple[Any, dict[str, Any]]:
    return conversations.insert(), {"id": cid, "owner": owner, "created_at": 1.0, "updated_at": 1.0}


def _turn(cid: str) -> tuple[Any, dict[str, Any]]:
    row = {"conversation_id": cid, "seq": 1, "question": "q", "standalone": "q", "answer": "a", "request_id": "r",
           "ts": 1.0}  # fmt: skip
    return turns.insert(), row


def test_the_writer_commits_batches_isolates_a_bad_row_and_flushes_on_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine, _ = engine_for(tmp_path / "kb.sqlite3")
    writer = DeferredWriter(engine, linger_s=0.05)
    for i in range(50):
        writer.submit([_conversation(f"c{i}"), _turn(f"c{i}")])
    assert writer.flush() and writer.pending == 0
    assert _count(engine, conversations) == _count(engine, turns) == 50
    # A turn of a conversation that does not exist breaks its batch's transaction (foreign key):
    # the batch is written row by row, so only that row is lost, and it is logged.
    with caplog.at_level(logging.WARNING, logger="app.db.writer"):
        writer.submit([_conversation("good-1")])
        writer.submit([_turn("missing")])
        writer.submit([_conversation("good-2"), _turn("good-2")])
        assert writer.flush()
    assert _count(engine, conversations) == 52 and _count(engine, turns) == 51
    assert any("deferred row not written" in r.message and r.levelname == "ERROR" for r in caplog.records)
    # close() writes what is still queued; a row handed in after close is written at once.
    writer.submit([_conversation("queued")])
    writer.close()
    assert _count(engine, conversations) == 53
    writer.submit([_conversation("late")])
    assert _count(engine, conversations) == 54
    engine.dispose()


@pytest.fixture
def components(handbook_data_dir: Path, tmp_path: Path, embedder: Any, request: pytest.FixtureRequest) -> Iterator:
    """The handbook store with the deferral and key memory given by the test's parameter."""
    defer_ms, key_cache_s = getattr(request, "param", (20.0, 5.0))
    data_dir = tmp_path / "data"
    shutil.copytree(handbook_data_dir, data_dir)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=data_dir, database=DatabaseSettings(defer_writes_ms=defer_ms),
        auth=AuthSettings(key_cache_s=key_cache_s),
    )  # fmt: skip
    built = Components(settings, embedder=embedder)
    yield built
    built.close()


@pytest.mark.parametrize("components", [(20.0, 5.0), (0.0, 0.0)], indirect=True, ids=["deferred", "immediate"])
def test_cache_hits_keep_every_row_and_their_conversations_work_at_once(components: Components) -> None:
    other_process = engine_for(components.db.url.database)[0]  # its own engine and pool, as `kb audit` would have
    with api_client(components, role="employee", collections=("handbook",)) as client:
        first = client.post("/chat", json={"question": QUESTION}).json()
        hits = [client.post("/chat", json={"question": QUESTION}).json() for _ in range(5)]
        assert not first["cached"] and all(h["cached"] and h["grounded"] for h in hits)
        assert [h["citations"] for h in hits] == [first["citations"]] * 5
        # The follow-up is sent the moment the hit is answered: its conversation must be found.
        follow = client.post(
            "/chat", json={"question": "And for contractors?", "conversation_id": hits[-1]["conversation_id"]}
        )
        assert follow.status_code == 200, follow.text
        assert follow.json()["standalone_question"] == f"{QUESTION[:-1]} for contractors?"
        # Readers in the server's process see every row at once (they flush the writer first).
        audited = components.audit.rows() if components.audit else []
        assert [r["request_id"] for r in audited] == [first["request_id"]] + [h["request_id"] for h in hits] + [
            follow.json()["request_id"]
        ]
        assert [r["cached"] for r in audited[1:6]] == [True] * 5
        ledger = components.ledger.rows()
        assert [r["request_id"] for r in ledger if r["cached"]] == [h["request_id"] for h in hits]
        assert sum(r["cost_usd"] or 0.0 for r in ledger if r["cached"]) == 0.0
    # Another process sees them within the linger too (at once after the server stopped).
    deadline = time.monotonic() + 2
    while _count(other_process, audit) < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _count(other_process, audit) == 7 and _count(other_process, usage) >= 5
    assert _count(other_process, conversations) == 6 and _count(other_process, turns) == 7
    other_process.dispose()


@pytest.mark.parametrize("components", [(20.0, 1.0)], indirect=True)
def test_a_key_revoked_elsewhere_stops_working_within_the_key_memory(components: Components) -> None:
    elsewhere = KeyStore(engine_for(components.db.url.database)[0])  # `kb keys revoke` in another process
    with api_client(components, role="employee", collections=("handbook",)) as client:
        assert client.post("/chat", json={"question": QUESTION}).status_code == 200
        elsewhere.revoke("test-employee")
        time.sleep(1.2)
        refused = client.post("/chat", json={"question": QUESTION})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        # A key created elsewhere works on its first request: unknown keys are never remembered.
        token = elsewhere.create("new-hire", "employee", ["handbook"]).token
        fresh = client.post("/chat", json={"question": QUESTION}, headers={"Authorization": f"Bearer {token}"})
        assert fresh.status_code == 200
    elsewhere.close()


@pytest.mark.parametrize("components", [(20.0, 1.0)], indirect=True)
def test_concurrent_requests_share_one_key_lookup_when_its_memory_expires(components: Components) -> None:
    lookups: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM api_keys" in statement:
            lookups.append(statement)
            time.sleep(0.3)  # a slow database: every request of the burst arrives while the lookup runs

    engine = components.db
    event.listen(engine, "before_cursor_execute", count)
    with api_client(components, role="employee", collections=("handbook",)) as client:
        assert client.post("/chat", json={"question": QUESTION}).status_code == 200  # remembered from here
        # Twelve clients with open connections (/healthz needs no key), so their requests arrive together.
        clients = [httpx.Client(base_url=str(client.base_url), headers=dict(client.headers), timeout=60)
                   for _ in range(12)]  # fmt: skip
        assert all(c.get("/healthz").status_code == 200 for c in clients)
        time.sleep(1.1)
        lookups.clear()
        statuses: list[int] = []
        errors = run_together(lambda c: statuses.append(c.post("/chat", json={"question": QUESTION}).status_code),
                              clients)  # fmt: skip
        for c in clients:
            c.close()
        assert not errors and statuses == [200] * 12
        assert len(lookups) == 1, f"{len(lookups)} key lookups for 12 concurrent requests"
    event.remove(engine, "before_cursor_execute", count)
