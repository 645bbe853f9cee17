"""``kb`` as a user runs it: real subprocesses, cut off from the network where the OS allows."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES

KB = [sys.executable, "-m", "app.cli"]


def _offline_prefix() -> list[str]:
    """Run in a new network namespace (no network at all) when unprivileged namespaces work."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


def run_kb(args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KB_DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "TIKTOKEN_CACHE_DIR": str(data_dir / "tk"),
    }
    return subprocess.run(_offline_prefix() + KB + args, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_ingest_then_ask_offline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ingest = run_kb(["ingest", str(EXAMPLES), "--collection", "handbook", "--json"], data)
    assert ingest.returncode == 0, ingest.stderr
    report = json.loads(ingest.stdout)
    assert report["added"] == 4 and report["failed"] == [] and report["chunks_embedded"] > 10

    ask = run_kb(["ask", "How many days of parental leave do parents get?", "-c", "handbook", "--json"], data)
    assert ask.returncode == 0, ask.stderr
    answer = json.loads(ask.stdout)
    assert "20 weeks" in answer["answer"]
    assert (answer["citations"][0]["source"], answer["citations"][0]["page"]) == ("handbook.pdf", 2)
    assert answer["prompt"] == "answer@v2"
    assert answer["support"]["policy"] == "flag" and all(s["supported"] for s in answer["sentences"])

    usage = run_kb(["usage", "--json"], data)
    assert json.loads(usage.stdout)[0]["calls"] == 1

    printed = run_kb(["ask", "How many days of parental leave do parents get?", "-c", "handbook"], data)
    assert printed.returncode == 0, printed.stderr
    assert "support (flag): " in printed.stdout and "✓ " in printed.stdout
    assert "handbook.pdf, page 2: “" in printed.stdout

    # kb.sqlite3 holds audit rows with answers: the data dir and everything in it are the owner's alone
    exposed = [
        f"{p.relative_to(data)} {oct(p.stat().st_mode & 0o777)}"
        for p in [data, *data.rglob("*")]
        if p.stat().st_mode & 0o077 and not p.is_symlink()
    ]
    assert exposed == []


@pytest.mark.slow
def test_exit_codes_say_what_happened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.txt").write_text("Badges\nVisitor badges are returned at reception before leaving.\n")
    (docs / "bad.pdf").write_bytes(b"not a pdf at all")
    partial = run_kb(["ingest", str(docs), "-c", "mixed", "--json"], data)
    assert partial.returncode == 1
    report = json.loads(partial.stdout)
    assert report["added"] == 1 and report["failed"][0]["source"] == "bad.pdf"

    assert run_kb(["ingest", str(tmp_path / "missing"), "-c", "x"], data).returncode == 2
    assert run_kb(["ingest", str(docs)], data).returncode == 2  # --collection is required

    unknown = run_kb(["ask", "hello there", "-c", "nope"], data)
    assert unknown.returncode == 1 and "collection 'nope' does not exist" in unknown.stderr


@pytest.mark.slow
def test_edit_one_file_and_only_it_is_updated(tmp_path: Path) -> None:
    data, docs = tmp_path / "data", tmp_path / "docs"
    shutil.copytree(EXAMPLES, docs)
    assert run_kb(["ingest", str(docs), "-c", "hb"], data).returncode == 0
    (docs / "oncall.md").write_text((docs / "oncall.md").read_text().replace("15 minutes", "10 minutes"))
    (docs / "office-faq.txt").unlink()

    again = run_kb(["ingest", str(docs), "-c", "hb", "--prune", "--json"], data)
    report = json.loads(again.stdout)
    assert (report["updated"], report["unchanged"], report["deleted"], report["added"]) == (1, 2, 1, 0)
    assert report["chunks_embedded"] == 1  # only the edited section's chunk reaches the model

    listed = json.loads(run_kb(["documents", "list", "-c", "hb", "--json"], data).stdout)
    assert sorted(d["source"] for d in listed) == ["expenses.html", "handbook.pdf", "oncall.md"]
    assert run_kb(["documents", "delete", "oncall.md", "-c", "hb"], data).returncode == 0
    gone = run_kb(["documents", "delete", "oncall.md", "-c", "hb"], data)
    assert gone.returncode == 1 and "no document 'oncall.md'" in gone.stderr
    collections = json.loads(run_kb(["collections", "list", "--json"], data).stdout)
    assert collections == [{"name": "hb", "documents": 2, "chunks": collections[0]["chunks"]}]
