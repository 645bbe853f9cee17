"""Chunks that never went live must not hide live documents, and are swept (issue #15, 2).

A `kb ingest` killed (SIGKILL) after writing a large document's chunks and before switching
it live used to leave them in Chroma for ever; a dense search whose candidates were all such
chunks returned nothing, because they were filtered out only after retrieval.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.bootstrap import Components
from app.settings import Settings
from tests.servers import api_client

ORPHAN_TEXT = "The parking garage opens at 7am and closes at 11pm for all staff on weekdays."
LIVE_TEXT = "Parking: staff may use the garage from 7am; the gates close at 11pm."
QUERY = "When does the parking garage open?"

# Runs the real CLI, but the process kills itself (SIGKILL) the moment it would switch a version live:
# a crash exactly between "chunks written" and "version live".
KILL_AT_SWITCH = (
    "import os, signal, sys; import vectorstore.manifest as m; "
    "m.Manifest.switch = lambda self, record, owner=None: os.kill(os.getpid(), signal.SIGKILL); "
    "sys.argv = ['kb', *sys.argv[1:]]; from app.cli import main; main()"
)


def run_kb(args: list[str], data: Path, *, crash: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KB_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", KILL_AT_SWITCH, *args] if crash else [sys.executable, "-m", "app.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def crashed(tmp_path: Path) -> Path:
    """A data dir with one live document and ~330 chunks of a killed ingestion."""
    data = tmp_path / "data"
    live, big = tmp_path / "live", tmp_path / "big"
    live.mkdir()
    big.mkdir()
    (live / "parking.md").write_text(f"# Parking\n\n{LIVE_TEXT}\n")
    assert run_kb(["ingest", str(live), "-c", "facilities"], data).returncode == 0
    # ~330 chunks, all about the garage: closer to the question than the live document is
    paragraphs = "\n\n".join(f"{ORPHAN_TEXT} Level {i % 7}, bay {i}." for i in range(2400))
    (big / "garage-manual.md").write_text(f"# Garage manual\n\n{paragraphs}\n")
    proc = run_kb(["ingest", str(big), "-c", "facilities"], data, crash=True)
    assert proc.returncode == -9, proc.stderr
    return data


def chunk_count(data: Path) -> int:
    components = Components(Settings(_env_file=None, data_dir=data))  # type: ignore[call-arg]
    try:
        return components.store.count("facilities")
    finally:
        components.close()


@pytest.mark.slow
def test_chunks_of_a_killed_ingestion_hide_no_live_document_and_are_swept(crashed: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    components = Components(Settings(_env_file=None, data_dir=crashed), embedder=embedder)  # type: ignore[call-arg]
    try:
        assert components.store.count("facilities") > 250  # the killed run's chunks are there
        for mode in ("dense", "hybrid", "lexical"):
            hits = components.retriever.search(QUERY, ["facilities"], 5, mode=mode)  # type: ignore[arg-type]
            assert [h.metadata["source"] for h in hits] == ["parking.md"], mode
        # the server's search says the same over HTTP
        with api_client(components) as client:
            found = client.post("/search", json={"query": QUERY, "collection": "facilities", "mode": "dense"})
            assert found.status_code == 200, found.text
            assert [h["source"] for h in found.json()["results"]] == ["parking.md"]
    finally:
        components.close()
    # `kb collections repair` sweeps them, and says so
    proc = run_kb(["collections", "repair", "facilities"], crashed)
    assert proc.returncode == 0, proc.stderr
    assert "swept" in proc.stdout and "facilities" in proc.stdout
    assert chunk_count(crashed) == 1


@pytest.mark.slow
def test_the_next_ingestion_sweeps_a_killed_runs_chunks(crashed: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "canteen.md").write_text("# Canteen\n\nThe canteen serves lunch from noon.\n")
    assert run_kb(["ingest", str(other), "-c", "facilities"], crashed).returncode == 0
    assert chunk_count(crashed) == 2  # parking + canteen; the killed run's chunks are gone


@pytest.mark.slow
def test_a_server_start_sweeps_a_killed_runs_chunks(crashed: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    components = Components(Settings(_env_file=None, data_dir=crashed), embedder=embedder)  # type: ignore[call-arg]
    try:
        assert components.store.count("facilities") > 250
        with api_client(components) as client:  # the app's start-up has run
            assert client.get("/readyz").status_code == 200
            assert components.store.count("facilities") == 1
            assert components.manifest.writers("facilities") == []
    finally:
        components.close()


@pytest.mark.slow
def test_dead_chunks_no_claim_names_are_searched_past_and_repaired(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    """Leftovers of an older kb's crash (no claim records them): search looks deeper, repair sweeps them."""
    data = tmp_path / "data"
    components = Components(Settings(_env_file=None, data_dir=data), embedder=embedder)  # type: ignore[call-arg]
    try:
        live = tmp_path / "live"
        live.mkdir()
        (live / "parking.md").write_text(f"# Parking\n\n{LIVE_TEXT}\n")
        components.ingest_pipeline.ingest([live], "facilities")
        # 300 real chunks about the garage, closer to the question than the live document (as a real
        # document's are: distinct texts; HNSW degenerates on hundreds of identical or near-identical vectors)
        texts = [f"{ORPHAN_TEXT} Level {i % 7}, bay {i}, row {i // 7}." for i in range(300)]
        vectors = embedder.embed_documents(texts)
        ids = [f"lost-{i:05d}" for i in range(300)]
        meta = {"collection": "facilities", "source": "lost.md", "document_id": "lostdoc", "doc_hash": "gone"}
        components.store.upsert("facilities", ids, vectors, texts, [meta] * 300)
        components.lexical.upsert("facilities", ids, texts, [meta] * 300)
        for mode in ("dense", "hybrid", "lexical"):
            hits = components.retriever.search(QUERY, ["facilities"], 5, mode=mode)  # type: ignore[arg-type]
            assert [h.metadata["source"] for h in hits] == ["parking.md"], mode
    finally:
        components.close()
    proc = run_kb(["collections", "repair"], data)
    assert proc.returncode == 0, proc.stderr
    assert "swept 300 chunks" in proc.stdout
    assert chunk_count(data) == 1


@pytest.mark.slow
def test_an_update_killed_at_its_switch_leaves_the_live_version_whole(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    """Two versions of a document never share a chunk id: writing version 2 of a document whose first
    section did not change must not relabel (and so hide) version 1's chunk of that section."""
    data, docs = tmp_path / "data", tmp_path / "docs"
    docs.mkdir()
    v1 = "# Garage\n\nThe garage gate code is 4471 for staff.\n\n## Bikes\n\nBikes go in the basement rack.\n"
    (docs / "garage.md").write_text(v1)
    assert run_kb(["ingest", str(docs), "-c", "facilities"], data).returncode == 0
    (docs / "garage.md").write_text(v1.replace("basement rack", "courtyard shed"))
    assert run_kb(["ingest", str(docs), "-c", "facilities"], data, crash=True).returncode == -9
    components = Components(Settings(_env_file=None, data_dir=data), embedder=embedder)  # type: ignore[call-arg]
    try:
        for mode in ("dense", "lexical"):
            hits = components.retriever.search("garage gate code", ["facilities"], 3, mode=mode)  # type: ignore[arg-type]
            assert hits and "4471" in hits[0].text, mode
    finally:
        components.close()
    (docs / "garage.md").write_text(v1)  # the edit is reverted: version 1 is live and whole, nothing to do
    again = run_kb(["ingest", str(docs), "-c", "facilities", "--json"], data)
    assert '"unchanged": 1' in again.stdout, again.stdout
    repaired = run_kb(["collections", "repair", "facilities"], data)
    assert repaired.returncode == 0 and "incomplete" not in repaired.stdout, repaired.stdout


def test_a_copy_being_written_does_not_hide_the_live_original(handbook_components: Components) -> None:
    """Versions being written are excluded by hash; the same bytes live under another name stay visible."""
    components = handbook_components
    live = components.manifest.get("handbook", "oncall.md")
    assert live is not None
    held = components.manifest.claim("handbook", "oncall-copy.md", "copydoc", live.doc_hash, "elsewhere:1:x", 60)
    assert held.held
    assert live.doc_hash not in components.manifest.dead_hashes("handbook")
    hits = components.retriever.search("What is the on-call allowance per week?", ["handbook"], 3)
    assert any(h.metadata["source"] == "oncall.md" for h in hits)
