"""Two ingestions of the same documents at once must leave one whole version of each (issue #15, 1).

Before writers claimed documents, two runs into one collection interleaved so that one run's
sweep deleted the other's freshly written chunks, which then went live empty: documents were
listed with a chunk count but found by no search, and later runs called them "unchanged".
Real processes race here; each loads the model once and ingests round after round. They share a
`chroma run` server: embedded Chroma is a library for one process (docs/operations.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.bootstrap import Components
from app.settings import Settings
from tests.chroma_server import chroma_server

FILES = 60
ROUNDS = 20


def write_folder(folder: Path, side: str) -> None:
    folder.mkdir(parents=True)
    for i in range(FILES):
        body = "\n\n".join(
            f"Section {p} of policy {i}: the {side} edition says rule {p} applies to team {i}. "
            + " ".join(f"Clause {k} of section {p} reads as the {side} text intends." for k in range(12))
            for p in range(2)
        )
        (folder / f"policy-{i:03d}.md").write_text(f"# Policy {i}\n\nmarker{side}{i}x\n\n{body}\n")


def wait_for(path: Path, procs: list[subprocess.Popen[str]], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        for p in procs:
            if p.poll():
                raise AssertionError(f"worker exited with {p.returncode}: {p.stderr.read() if p.stderr else ''}")
        assert time.monotonic() < deadline, f"timed out waiting for {path.name}"
        time.sleep(0.01)


def check_round(components: Components, collection: str) -> list[str]:
    """Every document: live version is one of the two, all its chunks are in both indexes, nothing else is."""
    problems = []
    records = components.manifest.documents(collection)
    if len(records) != FILES:
        problems.append(f"{len(records)} documents listed, not {FILES}")
    store_ids = set(components.store.get_ids(collection, None))
    live_ids: set[str] = set()
    for record in records:
        ids = set(record.chunk_ids)
        live_ids |= ids
        lexical_ids = set(components.lexical.texts(collection, list(ids)))
        if not ids <= store_ids or not ids <= lexical_ids:
            problems.append(f"{record.source}: {len(ids - store_ids)} chunks missing in Chroma, "
                            f"{len(ids - lexical_ids)} in BM25")  # fmt: skip
            continue
        number = int(record.source[7:10])
        hits = [
            h for side in "ab"
            for h in components.lexical.search(collection, f"marker{side}{number}x", 5)
        ]  # fmt: skip
        if not hits or hits[0].metadata["doc_hash"] != record.doc_hash:
            problems.append(f"{record.source}: its unique word finds no chunk of the live version")
    if store_ids != live_ids:
        problems.append(f"{len(store_ids - live_ids)} chunks in Chroma belong to no live version")
    if getattr(components.manifest, "writers", lambda c: [])(collection) != []:
        problems.append("claims left behind")
    return problems


@pytest.fixture(params=["one-host", "two-hosts"])
def database(request: pytest.FixtureRequest) -> str | None:
    """one-host: both writers share a data dir (kb.sqlite3); two-hosts: each its own, PostgreSQL shared."""
    return None if request.param == "one-host" else str(request.getfixturevalue("postgres_url"))


@pytest.mark.slow
def test_two_concurrent_ingestions_into_one_collection_lose_nothing(tmp_path: Path, database: str | None) -> None:
    go = tmp_path / "go"
    go.mkdir()
    rounds = ROUNDS if database is None else ROUNDS // 2  # the same code races; half the rounds on PostgreSQL
    data = {side: tmp_path / ("data" if database is None else f"data-{side}") for side in "ab"}
    write_folder(tmp_path / "a", "a")
    write_folder(tmp_path / "b", "b")
    chroma = chroma_server(tmp_path)
    server = chroma.__enter__()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "KB_VECTORSTORE__MODE": "http",
        "KB_VECTORSTORE__PORT": str(server.port),
        **({"KB_DATABASE__URL": database} if database else {}),
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.race_worker",
                str(data[side]),
                str(tmp_path / side),
                str(go),
                str(rounds),
                side,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for side in "ab"
    ]
    try:
        for side in "ab":
            wait_for(go / f"ready.{side}", procs)
        failures = {}
        settings = Settings(
            _env_file=None, data_dir=data["a"] if database is None else tmp_path / "data-check",
            vectorstore={"mode": "http", "port": server.port}, database={"url": database},
        )  # type: ignore[call-arg]  # fmt: skip
        components = Components(settings)
        for n in range(rounds):
            (go / str(n)).touch()
            for side in "ab":
                wait_for(go / f"{n}.{side}.json", procs)
                report = json.loads((go / f"{n}.{side}.json").read_text())
                assert report["failed"] == [], report["failed"]
            problems = check_round(components, f"race-{n}")
            if problems:
                failures[n] = [*problems[:5], f"... {len(problems)} problems"]
        assert failures == {}
        # and a later run of either folder changes nothing: every document is whole already
        report = components.ingest_pipeline.ingest([tmp_path / "a"], "race-0")
        assert report.failed == []
        assert check_round(components, "race-0") == []
        components.close()
    finally:
        for p in procs:
            p.kill()
            p.wait()
        chroma.__exit__(None, None, None)


@pytest.mark.slow
def test_two_kb_ingest_runs_at_once_on_the_embedded_store(tmp_path: Path) -> None:
    """The default setup (embedded Chroma), as the defect was reported: two `kb ingest` at once, same names.

    The worker test above is the one that reproduces the loss (it races many rounds with the model
    loaded); here two whole `kb ingest` processes must also end whole, and the second waits for the
    first on an embedded store (one writing process at a time)."""
    from tests.ingest.test_ingest_orphans import run_kb

    data = tmp_path / "data"
    write_folder(tmp_path / "a", "a")
    write_folder(tmp_path / "b", "b")
    env = {**os.environ, "KB_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    for _ in range(2):
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "app.cli", "ingest", str(tmp_path / side), "-c", "race"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for side in "ab"
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-2000:]
        components = Components(Settings(_env_file=None, data_dir=data))  # type: ignore[call-arg]
        try:
            assert check_round(components, "race") == []
        finally:
            components.close()
    assert run_kb(["collections", "repair", "race"], data).returncode == 0


def test_processes_opening_a_new_embedded_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Chroma creates its tables on first open with no lock of its own ("table collections already exists")."""
    code = (
        "import os, sys, time; from vectorstore.store import VectorStore\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        "VectorStore.embedded(sys.argv[1])"
    )
    for attempt in range(4):
        go = tmp_path / f"go-{attempt}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(tmp_path / f"store-{attempt}"), str(go)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        time.sleep(3)  # every process has imported chromadb and waits
        go.touch()
        errors = [err for p in procs if (err := p.communicate(timeout=120)[1]) and p.returncode != 0]
        assert errors == [], errors[0][-1500:]
