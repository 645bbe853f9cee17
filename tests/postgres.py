"""A real PostgreSQL server for the tests, and a fresh database per test on it.

``make test`` starts a throwaway server with ``scripts/test-postgres.sh`` *before* entering
its network namespace and passes its URL in ``KB_TEST_POSTGRES_URL`` (a Unix socket path,
which works across the namespace boundary; tests/conftest.py takes the variable out of the
environment before it clears the ``KB_*`` settings). Without it, the session starts its own
server with the same script where it can (a normal user, or real root through ``runuser``);
where it cannot (no PostgreSQL installed, or uid 0 of a user namespace, which PostgreSQL
refuses and which cannot switch users) the PostgreSQL tests skip and say why. Given a URL
that does not answer, they fail: someone asked for PostgreSQL explicitly.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "test-postgres.sh"


def _driver_or_skip() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[postgres]' (make test does)")


@contextmanager
def postgres_server(given_url: str | None) -> Iterator[str]:
    """The URL of a PostgreSQL server's maintenance database (``kb_test``), for the whole session."""
    _driver_or_skip()
    from sqlalchemy import create_engine, text

    if given_url:
        engine = create_engine(given_url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            pytest.fail(f"KB_TEST_POSTGRES_URL={given_url} does not answer: {exc}")
        finally:
            engine.dispose()
        yield given_url
        return
    # A short directory: the socket path (DIR/sock/.s.PGSQL.5432) must stay under 107 bytes.
    workdir = tempfile.mkdtemp(prefix="kb-pg.", dir="/tmp")
    started = subprocess.run(["sh", str(SCRIPT), "start", workdir], capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        reason = (started.stderr.strip().splitlines() or ["unknown error"])[-1]
        pytest.skip(f"no PostgreSQL server for the tests ({reason}); make test starts one, or set KB_TEST_POSTGRES_URL")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["sh", str(SCRIPT), "stop", workdir], capture_output=True, timeout=120)


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server (so tests never see each other's rows), dropped afterwards."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"kb_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:  # WITH (FORCE): engines a failed test left open do not block the drop
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()
