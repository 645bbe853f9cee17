"""BEIR datasets (corpus.jsonl, queries.jsonl, qrels/test.tsv) as documents kb can ingest.

Each corpus entry becomes one Markdown file (``# title`` then the text) whose path is derived
from its id, so a suite's expected sources are readable: ``R-FAQ.html#What-is-R_003f`` is
ingested as ``R-FAQ/What-is-R_003f.md``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def beir_source(corpus_id: str) -> str:
    """The file (relative to the ingested folder) a corpus entry is written to."""
    page, _, anchor = corpus_id.partition("#")
    page = re.sub(r"\.html?$", "", page)
    return f"{_UNSAFE.sub('_', page)}/{_UNSAFE.sub('_', anchor) or 'index'}.md"


def write_beir_corpus(dataset: Path, folder: Path) -> int:
    """One Markdown file per corpus entry; unchanged files are not rewritten (re-ingest skips them)."""
    count = 0
    with (dataset / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            # A line starting with '#' in the text is not a heading of ours: escape it.
            text = "\n".join("\\" + x if x.lstrip().startswith("#") else x for x in row["text"].splitlines())
            body = f"# {row.get('title') or row['_id']}\n\n{text}\n"
            path = folder / beir_source(row["_id"])
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_text(encoding="utf-8") != body:
                path.write_text(body, encoding="utf-8")
            count += 1
    return count
