"""Files within the size limit that would cost unbounded memory or CPU are refused (issue #15, 3 and 4)."""

from __future__ import annotations

import io
import re
import shutil
import threading
import time
import zipfile
from pathlib import Path

from app.bootstrap import Components
from tests.conftest import EXAMPLES
from tests.ingest.test_ingest import _docx_bytes
from tests.servers import api_client


def docx_bomb(expanded_mib: int = 1024) -> bytes:
    """A real DOCX whose document.xml expands to ``expanded_mib`` MiB (1.6 MB on the wire for 1.5 GiB)."""
    source = zipfile.ZipFile(io.BytesIO(_docx_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as bomb:
        for item in source.infolist():
            if item.filename != "word/document.xml":
                bomb.writestr(item, source.read(item))
                continue
            xml = source.read(item).decode()
            head, tail = xml.split("</w:body>")
            with bomb.open("word/document.xml", "w", force_zip64=True) as member:
                member.write(head.encode() + b"<w:p><w:r><w:t>")
                block = b"a" * (1024 * 1024)
                for _ in range(expanded_mib):
                    member.write(block)
                member.write(b"</w:t></w:r></w:p></w:body>" + tail.encode())
    return out.getvalue()


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def test_a_docx_zip_bomb_is_refused_before_it_is_inflated(handbook_components: Components) -> None:
    bomb = docx_bomb()
    assert len(bomb) < 6_000_000  # far below the 50 MB file size limit
    peak, done = [rss_mb()], threading.Event()
    start = peak[0]

    def sample() -> None:
        while not done.is_set():
            peak.append(rss_mb())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with api_client(handbook_components) as client:
            files = [("files", ("bomb.docx", bomb)), ("files", ("good.docx", _docx_bytes()))]
            job = client.post("/admin/collections/bombs/documents", files=files).json()
            deadline = time.monotonic() + 120
            while (state := client.get(f"/admin/jobs/{job['id']}").json())["status"] in ("queued", "running"):
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        done.set()
        sampler.join()
    assert max(peak) - start < 200, f"RSS grew {max(peak) - start:.0f} MB during the bomb upload"
    assert state["status"] == "succeeded"  # the good file went in
    failed = {f["source"]: f["error"] for f in state["summary"]["failed"]}
    assert "zip bomb" in failed["bomb.docx"] and "KB_LIMITS__" in failed["bomb.docx"]
    assert state["summary"]["added"] == 1


def test_pages_text_and_chunks_per_file_are_bounded(handbook_components: Components, tmp_path: Path) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    shutil.copy(EXAMPLES / "handbook.pdf", folder / "handbook.pdf")  # 5 pages
    (folder / "headings.md").write_text("# heading\nsome text\n" * 500_000)  # half a million sections
    (folder / "one-line.html").write_text("<p>" + "word " * 4_200_000 + "</p>")  # 21 MB on one line
    shutil.copy(EXAMPLES / "oncall.md", folder / "fine.md")
    pipeline = handbook_components.ingest_pipeline
    pipeline.limits = type(pipeline.limits)(max_pages=4)
    started = time.monotonic()
    report = pipeline.ingest([folder], "hostile")
    assert time.monotonic() - started < 60
    reasons = {f["source"]: f["error"] for f in report.failed}
    assert "has 5 pages, over the 4 page limit" in reasons["handbook.pdf"]
    assert "KB_LIMITS__MAX_PAGES_PER_FILE" in reasons["handbook.pdf"]
    assert "makes 500,000 chunks, over the 50,000 chunk limit" in reasons["headings.md"]
    assert "million bytes of text" in reasons["one-line.html"]
    assert report.added == 1


def test_limits_are_settings(settings_factory) -> None:  # type: ignore[no-untyped-def]
    components = Components(settings_factory(limits={"max_pages_per_file": 7, "max_unzipped_mb": 5}))
    limits = components.ingest_pipeline.limits
    assert (limits.max_pages, limits.max_unzipped_bytes) == (7, 5 * 1024 * 1024)
    components.close()


def test_the_zip_check_reads_headers_only() -> None:
    from app.errors import IngestError
    from ingest.limits import FileLimits, check_zip

    check_zip(_docx_bytes(), "ok.docx", FileLimits())
    try:
        check_zip(docx_bomb(150), "bomb.docx", FileLimits())
    except IngestError as exc:
        assert "over the 100 MB limit (a zip bomb?)" in exc.message
    else:
        raise AssertionError("a 150 MB bomb passed")
