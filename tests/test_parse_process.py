"""PDFs are parsed in a child process (ingest/parse_process.py): same documents, and a dying parser costs one file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from app.errors import IngestError
from ingest import parse_process
from ingest.limits import FileLimits
from ingest.loaders import LoadedDocument, load
from tests.real_pdfs import MANUALS

MANUAL = MANUALS[0]
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not MANUAL.exists(), reason=f"{MANUAL} missing: run make test")


def _long_pdf(path: Path, copies: int) -> Path:
    """The real manual's pages ``copies`` times over: seconds of parsing, long enough to be interrupted."""
    writer = PdfWriter()
    reader = PdfReader(MANUAL)
    for _ in range(copies):
        for page in reader.pages:
            writer.add_page(page)
    with path.open("wb") as f:
        writer.write(f)
    return path


def test_a_pdf_parsed_in_the_child_is_the_document_parsed_in_this_process():
    data = MANUAL.read_bytes()
    in_child = parse_process.parse(MANUAL, data, FileLimits())
    busy, idle = parse_process.parser_pids()
    assert not busy and idle and os.getpid() not in idle  # it ran elsewhere, and that process waits for the next
    in_thread = parse_process.parse(MANUAL, data, FileLimits(), in_child=False)
    assert parse_process.parser_pids() == (busy, idle)
    assert in_child == in_thread == load(MANUAL, data, FileLimits())
    assert isinstance(in_child, LoadedDocument) and len(in_child.sections) > 10


def test_the_childs_refusal_is_raised_here_with_its_reason_and_the_child_stays():
    data = MANUAL.read_bytes()
    parse_process.parse(MANUAL, data, FileLimits())
    _, before = parse_process.parser_pids()
    with pytest.raises(IngestError) as refused:
        parse_process.parse(MANUAL, data, FileLimits(max_pages=3))
    assert refused.value.code == "file_over_limit" and "KB_LIMITS__MAX_PAGES_PER_FILE" in refused.value.message
    with pytest.raises(IngestError, match="not a readable PDF"):
        parse_process.parse(MANUAL, data[: len(data) // 3], FileLimits())
    assert parse_process.parser_pids()[1] == before  # the same child answered, no restart


def test_a_parser_killed_mid_file_fails_that_file_and_the_next_pdf_parses(tmp_path):
    long_pdf = _long_pdf(tmp_path / "long.pdf", copies=25)  # 900 pages: several seconds in pypdf
    outcome: dict[str, object] = {}

    def parse_long() -> None:
        try:
            outcome["document"] = parse_process.parse(long_pdf, long_pdf.read_bytes(), FileLimits())
        except IngestError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=parse_long)
    thread.start()
    deadline = time.monotonic() + 30
    while not parse_process.parser_pids()[0] and time.monotonic() < deadline:
        time.sleep(0.01)
    busy, _ = parse_process.parser_pids()
    assert busy, "the long PDF never reached a parser process"
    time.sleep(0.3)
    os.kill(busy[0], signal.SIGKILL)
    thread.join(timeout=60)
    assert "document" not in outcome, "the parse finished before the kill: make the PDF longer"
    error = outcome["error"]
    assert isinstance(error, IngestError)
    assert "the parser's process died" in error.message and "long.pdf" in error.message
    assert busy[0] not in parse_process.parser_pids()[1]  # the dead child is not handed out again
    assert parse_process.parse(MANUAL, MANUAL.read_bytes(), FileLimits()).sections


def test_a_parser_that_died_while_idle_is_replaced_without_failing_a_file():
    data = MANUAL.read_bytes()
    parse_process.parse(MANUAL, data, FileLimits())
    _, idle = parse_process.parser_pids()
    for pid in idle:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert parse_process.parse(MANUAL, data, FileLimits()).sections  # not "the parser's process died"
    assert not set(idle) & set(parse_process.parser_pids()[1])


def test_other_formats_are_parsed_here(tmp_path):
    note = tmp_path / "note.md"
    note.write_text("# Title\n\nSome text.\n")
    before = parse_process.parser_pids()
    assert parse_process.parse(note, note.read_bytes(), FileLimits()).sections
    assert parse_process.parser_pids() == before


def _parse_in_thread(path: Path) -> tuple[threading.Thread, dict[str, object], int]:
    """Start parsing ``path`` in a thread; returns it, where its outcome lands, and the busy child's pid."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["document"] = parse_process.parse(path, path.read_bytes(), FileLimits())
        except IngestError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not parse_process.parser_pids()[0] and time.monotonic() < deadline:
        time.sleep(0.01)
    busy, _ = parse_process.parser_pids()
    assert busy, "the PDF never reached a parser process"
    return thread, outcome, busy[0]


def test_a_stop_signal_meant_for_the_parent_does_not_cut_the_parse_short(tmp_path):
    """Ctrl-C and a service stop signal the whole group: the parent finishes its documents, parser included."""
    thread, outcome, pid = _parse_in_thread(_long_pdf(tmp_path / "long.pdf", copies=10))
    time.sleep(0.2)
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    thread.join(timeout=60)
    assert "error" not in outcome and isinstance(outcome["document"], LoadedDocument)
    assert pid in parse_process.parser_pids()[1]


def test_a_parser_whose_parent_is_killed_mid_file_exits(tmp_path):
    long_pdf = _long_pdf(tmp_path / "long.pdf", copies=40)
    script = (
        "import sys, threading, time\n"
        "from pathlib import Path\n"
        "from ingest import parse_process\n"
        "from ingest.limits import FileLimits\n"
        f"p = Path({str(long_pdf)!r})\n"
        "threading.Thread(target=parse_process.parse, args=(p, p.read_bytes(), FileLimits())).start()\n"
        "while not parse_process.parser_pids()[0]: time.sleep(0.01)\n"
        "print(parse_process.parser_pids()[0][0], flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child), "the parser outlived its killed parent"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (its new parent reaps it)


def test_a_parser_whose_memory_grew_past_the_limit_is_replaced_after_the_file(monkeypatch):
    data = MANUAL.read_bytes()
    monkeypatch.setattr(parse_process, "RETIRE_RSS_MB", 1)  # passed to children started from now on
    _, idle_before = parse_process.parser_pids()
    for pid in idle_before:  # children started before keep their own limit: stop them
        os.kill(pid, signal.SIGKILL)
    assert parse_process.parse(MANUAL, data, FileLimits()).sections
    assert parse_process.parser_pids() == ([], [])  # retired after answering, not kept idle
    assert parse_process.parse(MANUAL, data, FileLimits()).sections  # and the next file gets a new one


def test_the_setting_chooses_where_the_pipeline_parses(tmp_path):
    from app.bootstrap import Components
    from app.settings import Settings

    for setting in (False, True):
        settings = Settings(_env_file=None, data_dir=tmp_path / str(setting), chunking={"parse_pdfs_in_child": setting})  # type: ignore[call-arg]
        components = Components(settings)
        try:
            assert components.ingest_pipeline.parse_pdfs_in_child is setting
        finally:
            components.close()
