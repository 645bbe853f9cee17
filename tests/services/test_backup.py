"""`kb backup`: consistent copies of the SQLite stores while another thread keeps writing."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.backup import BackupError, backup_data_dir
from app.cli import cli
from app.settings import get_settings


def _count(db: Path, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_backup_while_a_writer_keeps_writing(handbook_components: Any, tmp_path: Path) -> None:
    keys = handbook_components.keys
    for i in range(20):
        keys.create(f"before-{i}", "admin", ["*"])
    stop, writing = threading.Event(), threading.Event()
    written = [0]

    def writer() -> None:
        while not stop.is_set():
            keys.create(f"during-{written[0]}", "admin", ["*"])
            written[0] += 1
            writing.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert writing.wait(10)
    try:
        done = backup_data_dir(handbook_components.settings.data_dir, tmp_path / "backup")
    finally:
        stop.set()
        thread.join()
    names = {d.name for d in done}
    assert "kb.sqlite3" in names  # the shared database: keys, ledger, and the manifest and BM25 chunks
    backup = tmp_path / "backup"
    assert 20 <= _count(backup / "kb.sqlite3", "api_keys") <= 20 + written[0]
    assert _count(backup / "kb.sqlite3", "documents") == 4  # the sample handbook's files
    summary = json.loads((backup / "backup.json").read_text())
    assert {f["name"] for f in summary["files"]} == names
    assert not (backup / "admin-key.txt").exists() and not (backup / "chroma").exists()


def test_backup_refuses_a_used_or_nested_destination(handbook_components: Any, tmp_path: Path) -> None:
    data_dir = handbook_components.settings.data_dir
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    with pytest.raises(BackupError, match="not empty"):
        backup_data_dir(data_dir, used)
    with pytest.raises(BackupError, match="inside the data directory"):
        backup_data_dir(data_dir, data_dir / "backup")
    with pytest.raises(BackupError, match="does not exist"):
        backup_data_dir(tmp_path / "nowhere", tmp_path / "b")


def test_kb_backup_command(
    handbook_components: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    monkeypatch.setenv("KB_DATA_DIR", str(handbook_components.settings.data_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["backup", str(tmp_path / "b"), "--json"])
        again = CliRunner().invoke(cli, ["backup", str(tmp_path / "b")])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "kb.sqlite3" in {row["name"] for row in json.loads(result.stdout)}
    assert again.exit_code == 1 and "not empty" in again.output
