"""kill -9 during `kb ingest`, then the same command again: the store must equal a clean run's.

Real subprocesses, real Chroma, real SQLite. The corpus is generated so the run lasts
long enough to be killed while embedding, upserting, switching and sweeping.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.bootstrap import Components
from app.settings import Settings

TOPICS = ["leave", "expenses", "security", "on-call", "travel", "hiring", "benefits", "offices"]


def write_corpus(folder: Path, version: int, count: int = 90) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        # every third document changes between versions; the rest stay byte-identical
        v = version if i % 3 == 0 else 1
        body = "\n\n".join(
            f"## Part {p}\n\nPolicy {i}.{p} on {topic} (revision {v}): employees in team {i} follow rule {p * 7 + i} "
            f"and report to desk {i % 11}. " + " ".join(f"Clause {p}-{k} of {topic} applies." for k in range(12))
            for p in range(4)
        )
        (folder / f"{topic}-{i:03d}.md").write_text(f"# {topic.title()} policy {i}\n\n{body}\n")
    if version > 1:
        (folder / "brand-new.md").write_text("# New\n\nA brand new policy about parking spaces.\n")


def kb(args: list[str], data_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "KB_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def runs_started(data_dir: Path) -> int:
    db = data_dir / "kb.sqlite3"  # the shared database holds the manifest's runs
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.Error:
        return 0


def snapshot(data_dir: Path, collection: str) -> tuple[dict[str, dict], dict[str, tuple[str, tuple[str, ...]]]]:
    components = Components(Settings(_env_file=None, data_dir=data_dir))  # type: ignore[call-arg]
    try:
        chunks = components.store.get_metadatas(collection, None)
        manifest = {r.source: (r.doc_hash, r.chunk_ids) for r in components.manifest.documents(collection)}
        assert all(r.clean for r in components.manifest.documents(collection))
    finally:
        components.close()
    return chunks, manifest


@pytest.mark.slow
def test_killed_ingest_converges_to_a_clean_run(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    docs, crashed = tmp_path / "docs", tmp_path / "crashed"
    write_corpus(docs, version=1)
    first = kb(["ingest", str(docs), "-c", "policies", "--json"], crashed)
    assert first.wait(timeout=300) == 0, first.stderr.read() if first.stderr else ""

    write_corpus(docs, version=2)
    rng = random.Random(20261122)
    killed_at = []
    for _ in range(3):
        before = runs_started(crashed)
        proc = kb(["ingest", str(docs), "-c", "policies", "--json"], crashed)
        deadline = time.monotonic() + 120
        while runs_started(crashed) == before and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        delay = rng.uniform(0.0, 1.5)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_at.append(round(delay, 2))
        proc.wait(timeout=60)
    assert killed_at, "no run was killed mid-way; the corpus is too small to test anything"

    final = kb(["ingest", str(docs), "-c", "policies", "--json"], crashed)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert json.loads(out)["failed"] == []

    clean = tmp_path / "clean"
    components = Components(Settings(_env_file=None, data_dir=clean), embedder=embedder)  # type: ignore[call-arg]
    components.ingest_pipeline.ingest([docs], "policies")
    components.close()

    crashed_chunks, crashed_manifest = snapshot(crashed, "policies")
    clean_chunks, clean_manifest = snapshot(clean, "policies")
    assert set(crashed_chunks) == set(clean_chunks), f"killed at {killed_at}"
    assert crashed_manifest == clean_manifest
    strip = lambda chunks: {cid: {k: v for k, v in m.items()} for cid, m in chunks.items()}  # noqa: E731
    assert strip(crashed_chunks) == strip(clean_chunks)
    live_ids = {cid for _, ids in crashed_manifest.values() for cid in ids}
    assert live_ids == set(crashed_chunks), "orphan or missing chunks"
    assert all(m["doc_hash"] == crashed_manifest[m["source"]][0] for m in crashed_chunks.values())
