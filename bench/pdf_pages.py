"""PDF page benchmark: do the R FAQ's real questions find their answer's page in the R manuals' PDFs?

Questions and answers: the shared r-manuals dataset (73 R FAQ questions, the FAQ authors' answers).
Documents: the PDF edition of the same R manuals, from Debian's r-doc-pdf package (R 4.2.2):
    apt-get download r-doc-pdf && dpkg-deb -x r-doc-pdf_*.deb x   # then --pdf-dir x/usr/share/R/doc/manual
The seven manuals (R-FAQ, R-admin, R-data, R-exts, R-intro, R-ints, R-lang; not the reference manual)
are ingested into one collection. A question's answer pages are where its answer's text is found in
R-FAQ.pdf (its first words, then the rest of its first sentence: the page where the answer starts and
the next one when it runs over); a question whose answer is not found in the PDF text is left out and
counted. Caveat: in the PDF the question is also the section's title, right above the answer, so a
lexical match of the question is easier than in the dataset (whose gold sections omit the question).

Reported per loader and search mode: page hit@1/5/10 (a chunk of R-FAQ.pdf on an answer page in the
top k). Loaders: "structured" (kb's: outline sections, running headers removed, hyphenation joined) and
"plain" (one section per page of pypdf text, its first line as heading: what a simple pipeline does).

Usage: .venv/bin/python bench/pdf_pages.py --pdf-dir DIR [--work /tmp/kb-bench-pdf]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pypdf import PdfReader

import ingest.loaders as loaders
from app.bootstrap import Components
from app.rag.options import SearchOptions
from app.settings import Settings

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "r-manuals"
MANUALS = ("R-FAQ", "R-admin", "R-data", "R-exts", "R-intro", "R-ints", "R-lang")
K = (1, 5, 10)


def _flat(text: str) -> str:
    text = re.sub(r"(?<=[a-z])-\n(?=[a-z])", "", text)
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def answer_pages(faq: Path) -> tuple[list[dict[str, Any]], int]:
    """Each question with the R-FAQ.pdf pages its answer is on; and how many answers were not found."""
    pages = [_flat(p.extract_text() or "") for p in PdfReader(faq).pages]
    questions = {q["_id"]: q["text"] for q in map(json.loads, (SHARED / "queries.jsonl").open())}
    found, missing = [], 0
    for row in map(json.loads, (SHARED / "answers.jsonl").open()):
        words = _flat(row["answer"]).split()
        start = next((i for i, p in enumerate(pages, 1) for n in (12, 8, 5) if " ".join(words[:n]) in p), None)
        if start is None:
            missing += 1
            continue
        tail = " ".join(words[12:24])
        gold = {start} | ({start + 1} if tail and start < len(pages) and tail not in pages[start - 1] else set())
        found.append({"id": row["_id"], "question": questions[row["_id"]], "pages": sorted(gold)})
    return found, missing


def plain_pdf_sections(pages: list[list[str]], entries: Any) -> list[loaders.Section]:
    """The loader before PDF structure: one part per page, its first line as heading (pages, not sections)."""
    sections = []
    for number, lines in enumerate(pages, start=1):
        text = "\n".join(lines).strip()
        if text:
            first = lines[0].strip()
            heading = first if 0 < len(first) <= 100 else None
            sections.append(loaders.Section(text=text, page=number, heading=heading, is_section=False))
    return sections


def _on_answer_page(meta: dict[str, Any], pages: list[int]) -> bool:
    return meta.get("source") == "R-FAQ.pdf" and meta.get("page") in pages


def run(loader: str, pdf_dir: Path, work: Path, cases: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    folder = work / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    for name in MANUALS:
        shutil.copy(pdf_dir / f"{name}.pdf", folder / f"{name}.pdf")
    original = loaders._pdf_sections
    if loader == "plain":
        loaders._pdf_sections = plain_pdf_sections  # type: ignore[assignment]
    try:
        data_dir = work / f"data-{loader}"
        shutil.rmtree(data_dir, ignore_errors=True)  # a kept store would skip the unchanged PDFs: old chunks
        components = Components(Settings(_env_file=None, data_dir=data_dir))  # type: ignore[call-arg]
        report = components.ingest_pipeline.ingest([folder], "rpdf")
        print(f"{loader}: ingested {report.added + report.unchanged} PDFs, {report.chunks_embedded} chunks embedded")
        scores: dict[str, dict[int, float]] = {}
        default = components.retriever.config
        for mode in ("dense", "lexical", "hybrid", "hybrid without sections"):
            # the last: hybrid ranking each chunk on its own (section_weight 0), as before sections were kept
            components.retriever.config = replace(default, section_weight=0.0) if " " in mode else default
            hits_at = dict.fromkeys(K, 0)
            for case in cases:
                hits = components.rag.search(
                    case["question"], ["rpdf"], SearchOptions(top_k=max(K), mode=mode.split()[0])
                )  # type: ignore[arg-type]
                ranks = [i for i, h in enumerate(hits, 1) if _on_answer_page(h.metadata, case["pages"])]
                for k in K:
                    hits_at[k] += bool(ranks and ranks[0] <= k)
            scores[mode] = {k: hits_at[k] / len(cases) for k in K}
        components.close()
        return scores
    finally:
        loaders._pdf_sections = original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pdf-dir", type=Path, required=True, help="folder with R-FAQ.pdf and the other manuals")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kb-bench-pdf"))
    parser.add_argument("--loader", choices=["structured", "plain"], action="append")
    args = parser.parse_args(argv)
    cases, missing = answer_pages(args.pdf_dir / "R-FAQ.pdf")
    print(f"{len(cases)} questions with answer pages found in R-FAQ.pdf ({missing} answers not found in its text)")
    for loader in args.loader or ["plain", "structured"]:
        scores = run(loader, args.pdf_dir, args.work, cases)
        for mode, at in scores.items():
            print(f"  {loader:10s} {mode:24s} " + "  ".join(f"hit@{k} {v:.3f}" for k, v in at.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
