"""Shared fixtures: no network, one embedding model per session, a store with the sample set.

The suite must pass with the network unavailable: ``make test`` runs it in a network
namespace where it can, and this guard refuses any non-loopback connection in-process
everywhere else, so a hidden download fails loudly instead of passing on a dev box.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The PostgreSQL server `make test` started for this run (tests/postgres.py); not a kb setting.
POSTGRES_URL = os.environ.pop("KB_TEST_POSTGRES_URL", None)
for var in list(os.environ):  # a developer's own KB_ settings must not leak into tests
    if var.startswith("KB_"):
        del os.environ[var]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "handbook"

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return True  # AF_UNIX paths


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_local(address):
        raise OSError(f"network access blocked in tests: {address!r}")
    return _real_connect(self, address)  # type: ignore[arg-type]


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if not _is_local(address):
        raise OSError(f"network access blocked in tests: {address!r}")
    return _real_connect_ex(self, address)  # type: ignore[arg-type]


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    from vectorstore.embeddings import Embedder

    return Embedder()


@pytest.fixture
def settings_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    from app.settings import Settings

    def make(**overrides):  # type: ignore[no-untyped-def]
        overrides.setdefault("data_dir", tmp_path / "data")
        return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]

    return make


@pytest.fixture(scope="session")
def handbook_data_dir(tmp_path_factory: pytest.TempPathFactory, embedder) -> Path:  # type: ignore[no-untyped-def]
    """A data dir with the sample handbook ingested into collection 'handbook' (built once)."""
    from app.bootstrap import Components
    from app.settings import Settings

    data_dir = tmp_path_factory.mktemp("handbook") / "data"
    components = Components(Settings(_env_file=None, data_dir=data_dir), embedder=embedder)  # type: ignore[call-arg]
    report = components.ingest_pipeline.ingest([EXAMPLES], "handbook")
    components.close()
    assert report.added == 4 and not report.failed, report
    return data_dir


@pytest.fixture
def handbook_components(handbook_data_dir: Path, tmp_path: Path, embedder) -> Iterator:  # type: ignore[no-untyped-def]
    """Components over a private copy of the ingested store (tests may write to it)."""
    from app.bootstrap import Components
    from app.settings import Settings

    data_dir = tmp_path / "data"
    shutil.copytree(handbook_data_dir, data_dir)
    components = Components(Settings(_env_file=None, data_dir=data_dir), embedder=embedder)  # type: ignore[call-arg]
    yield components
    components.close()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (skips the test when none can be had; tests/postgres.py)."""
    from tests.postgres import postgres_server

    with postgres_server(POSTGRES_URL) as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database of this test's own, dropped after it."""
    from tests.postgres import fresh_database

    with fresh_database(postgres_server_url) as url:
        yield url
