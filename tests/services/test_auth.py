"""API keys (CLI and storage), the first admin key, auth switched off, rate and size limits."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from app.api.main import create_app
from app.auth import KeyStore, hash_token
from app.bootstrap import Components
from app.cli import cli
from app.errors import ConfigurationError, ForbiddenError
from app.settings import get_settings
from tests.servers import api_client, redis_server, serve_app


@pytest.fixture
def kb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(cli, list(args))
    get_settings.cache_clear()


def test_keys_cli_creates_lists_and_revokes(kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    created = kb("keys", "create", "--name", "alice", "--collections", "hr,eng", "--json")
    assert created.exit_code == 0, created.output
    record = json.loads(created.stdout)
    token = record["token"]
    assert token.startswith("kb_") and record["role"] == "employee" and record["collections"] == ["eng", "hr"]
    assert kb("keys", "create", "--name", "ops", "--role", "admin").exit_code == 0
    listed = kb("keys", "list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["alice", "ops"] and all("token" not in r for r in rows)
    assert token not in listed.stdout
    # Only a hash is stored: the key itself is nowhere in the database file (nor in its write-ahead log).
    database = tmp_path / "data" / "kb.sqlite3"
    stored = b"".join(p.read_bytes() for p in (database, database.with_name("kb.sqlite3-wal")) if p.exists())
    assert hash_token(token).encode() in stored and token.encode() not in stored
    store = KeyStore(database)
    principal = store.authenticate(token)
    assert principal is not None and principal.can_read("hr") and not principal.can_read("legal")
    assert kb("keys", "revoke", "alice").exit_code == 0
    assert store.authenticate(token) is None
    store.close()
    assert "alice" not in kb("keys", "list").stdout
    bad_role = kb("keys", "create", "--name", "x", "--role", "root", "--collections", "hr")
    no_grants = kb("keys", "create", "--name", "x")
    assert bad_role.exit_code == no_grants.exit_code == 1
    assert "role must be one of" in bad_role.output and "at least one collection" in no_grants.output
    assert kb("keys", "revoke", "nobody").exit_code == 1


def test_groups_cli_maps_lists_and_unmaps(kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Single sign-on groups → collections, in the shared database a server reads (app/sso/groups.py)."""
    from app.db import engine_for
    from app.sso.groups import GroupStore
    from app.sso.identity import Identity

    assert kb("groups", "map", "hr-team", "--collections", "handbook,hr").exit_code == 0
    assert kb("groups", "map", "it-admins", "--role", "admin").exit_code == 0
    changed = kb("groups", "map", "hr-team", "--collections", "handbook")  # a new mapping replaces the old one
    assert changed.exit_code == 0 and "handbook" in changed.output
    rows = [json.loads(line) for line in kb("groups", "list", "--json").stdout.splitlines()]
    assert [(r["group"], r["role"], r["collections"]) for r in rows] == [
        ("hr-team", "employee", ["handbook"]),
        ("it-admins", "admin", []),
    ]
    engine, _ = engine_for(tmp_path / "data" / "kb.sqlite3")
    groups = GroupStore(engine)
    alice = groups.principal_for(Identity("a1", "Alice", ("everyone", "hr-team")))
    assert alice.collections == frozenset({"handbook"}) and alice.role == "employee"
    assert alice.name == "Alice (sso:a1)" and alice.key_id == "sso:a1"
    assert groups.principal_for(Identity("d1", "Dana", ("hr-team", "it-admins"))).is_admin
    assert kb("groups", "unmap", "hr-team").exit_code == 0
    with pytest.raises(ForbiddenError, match="none of your groups \\(everyone, hr-team\\)"):
        groups.principal_for(Identity("a1", "Alice", ("everyone", "hr-team")))
    engine.dispose()
    assert kb("groups", "unmap", "hr-team").exit_code == 1
    from app.sso.identity import groups_in

    assert groups_in({"groups": "not admins"}, "groups") == ("not admins",)  # one string is one group, never split
    assert groups_in({"realm_access": {"roles": ["a", "b"]}}, "realm_access.roles") == ("a", "b")
    ended = kb("sessions", "revoke", "--all")
    assert ended.exit_code == 0 and "0 sessions ended" in ended.output
    assert kb("sessions", "revoke").exit_code == 1
    no_grants = kb("groups", "map", "eng")
    assert no_grants.exit_code == 1 and "at least one collection" in no_grants.output


def test_first_start_writes_an_admin_key_file(handbook_components: Components) -> None:
    key_file = handbook_components.settings.admin_key_file
    with serve_app(create_app(handbook_components.settings, components=handbook_components)) as url:
        token = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/admin/collections", headers=headers).status_code == 200
    with serve_app(create_app(handbook_components.settings, components=handbook_components)):
        assert key_file.read_text().strip() == token  # not replaced on the next start
    assert len(handbook_components.keys.all()) == 1


def test_auth_off_is_for_loopback_only(handbook_components: Components) -> None:
    settings = handbook_components.settings
    settings.auth.enabled = False
    with serve_app(create_app(settings, components=handbook_components)) as url:
        r = httpx.post(f"{url}/chat", json={"question": "How many days of annual leave do I get?"}, timeout=60)
        assert r.status_code == 200 and "27 days" in r.json()["answer"]
    settings.api.host = "0.0.0.0"
    with pytest.raises(ConfigurationError, match="local development only"):
        create_app(settings, components=handbook_components)


def test_rate_limit_per_key_with_retry_after(handbook_components: Components) -> None:
    handbook_components.settings.limits.requests_per_minute = 3
    with (
        api_client(handbook_components, role="employee", collections=("handbook",)) as alice,
        api_client(handbook_components, role="employee", collections=("handbook",)) as bob,
    ):
        codes = [alice.get("/collections").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = alice.get("/collections")
        assert limited.json()["error"]["code"] == "rate_limited" and 1 <= int(limited.headers["retry-after"]) <= 60
        assert bob.get("/collections").status_code == 200  # per key, not global


def test_guessing_keys_is_throttled_per_address(handbook_components: Components) -> None:
    handbook_components.settings.limits.failed_auth_per_minute = 5
    with api_client(handbook_components, role="employee", collections=("handbook",)) as alice:
        token = alice.headers["Authorization"]
        codes = [
            alice.get("/collections", headers={"Authorization": f"Bearer kb-guess-{i}"}).status_code for i in range(7)
        ]
        assert codes == [401] * 5 + [429] * 2
        blocked = alice.get("/collections", headers={"Authorization": "Bearer kb-guess-8"})
        assert "failed authentications" in blocked.json()["error"]["message"]
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        # a right key from the same address (a shared proxy, an office) still works
        assert alice.get("/collections", headers={"Authorization": token}).status_code == 200


def test_request_size_limits(handbook_components: Components) -> None:
    handbook_components.settings.limits.max_body_kb = 4
    with api_client(handbook_components, role="employee", collections=("handbook",)) as client:
        big = client.post("/chat", json={"question": "x" * 5000})
        assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
        assert "KB_LIMITS__MAX_BODY_KB" in big.json()["error"]["message"]

        def chunked():  # type: ignore[no-untyped-def]  # no Content-Length: counted as it arrives
            yield b'{"question": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        streamed = client.post("/chat", content=chunked(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "body_too_large"
        long_question = client.post("/chat", json={"question": "z" * 2500})
        assert long_question.status_code == 413 and long_question.json()["error"]["code"] == "question_too_long"
        assert client.post("/chat", json={"question": "What is the hotel limit?", "top_k": 0}).status_code == 422


def test_rate_limit_shared_by_replicas_through_redis(handbook_components: Components, tmp_path: Path) -> None:
    """Two API processes with one Redis: a key's requests count once, whichever replica serves them."""
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as url:
        handbook_components.settings.limits.requests_per_minute = 4
        handbook_components.settings.limits.rate_limit_storage = url
        token = handbook_components.keys.create("shared", "employee", ["handbook"]).token
        headers = {"Authorization": f"Bearer {token}"}
        with (
            serve_app(create_app(handbook_components.settings, components=handbook_components)) as a,
            serve_app(create_app(handbook_components.settings, components=handbook_components)) as b,
        ):
            codes = [httpx.get(f"{base}/collections", headers=headers).status_code for base in (a, b, a, b, a)]
        assert codes == [200, 200, 200, 200, 429]


def test_rate_limits_fail_open_when_their_redis_does_not_answer(caplog: pytest.LogCaptureFixture) -> None:
    """A Redis outage costs the shared limits, not the service: requests (uploads too) go through; the log says so."""
    from app.api.deps import RateLimiter
    from app.errors import RateLimitedError
    from tests.servers import free_port

    down = RateLimiter(1, f"redis://127.0.0.1:{free_port()}/1", failed_auth_per_minute=1)  # nothing listens there
    with caplog.at_level("WARNING", logger="app.api.deps"):
        for _ in range(3):
            down.hit("key-1")
            down.failed("10.0.0.1")
            down.check_address("10.0.0.1")
    assert caplog.text.count("rate limits not enforced: their storage does not answer") == 1  # once per 30 s
    counted = RateLimiter(1)  # the same limiter with its storage up refuses the second request
    counted.hit("key-1")
    with pytest.raises(RateLimitedError):
        counted.hit("key-1")
