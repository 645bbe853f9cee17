"""Eval cases from what employees said about real answers (``kb eval cases --from-feedback``).

Each judged answer becomes a case an engineer reviews before adding it to a suite:
- marked helpful: the question, with the sources (document and page) the answer cited as the
  expected sources and the answer itself as the reference;
- marked unhelpful with a corrected answer: the question, the correction as the reference, and the
  documents the correction names ("handbook.pdf, page 3") as the expected sources;
- marked out of scope by an admin (a topic of ``kb gaps`` kb should not answer): an unanswerable case,
  the question must be refused;
- marked unhelpful with no correction: left out (nothing says what the right answer is), counted.
Questions whose text was not stored (``KB_AUDIT__STORE_TEXT`` off) cannot become cases: counted.
The latest verdict per answer wins (an admin's overrides the receiver's). The file is a suite
``kb eval run`` accepts unchanged, over the collection the answers came from.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from app.errors import EvalError

# "handbook.pdf, page 3", "guide.md p. 2", "(faq.txt)": a file name with a document extension, maybe a page.
_NAMED_SOURCE = re.compile(
    r"([\w./-]+\.(?:pdf|md|markdown|html?|txt|docx))(?:\s*,?\s*(?:page|p\.?)\s*(\d+))?", re.IGNORECASE
)


@dataclass
class Harvest:
    suite: dict[str, Any]
    skipped: dict[str, int] = field(default_factory=dict)


def named_sources(text: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for name, page in _NAMED_SOURCE.findall(text):
        entry: dict[str, Any] = {"source": name} if not page else {"source": name, "page": int(page)}
        if entry not in found:
            found.append(entry)
    return found


def cases_from_feedback(
    rows: Iterable[dict[str, Any]],
    cited_sources: Callable[[list[str], list[str]], list[dict[str, Any]]],
    answers: dict[str, str],
    *,
    collection: str | None = None,
) -> Harvest:
    """``rows``: feedback rows (app/feedback.py), oldest first; ``cited_sources(collections, chunk_ids)``
    the source/page of cited chunks; ``answers`` request id → the judged answer's text (for references)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest[row["request_id"]] = row
    skipped = {"no question text (KB_AUDIT__STORE_TEXT off)": 0, "marked down without a correction": 0}
    by_collection: dict[str, list[dict[str, Any]]] = {}
    for request_id, row in latest.items():
        if collection is not None and collection not in row["collections"]:
            continue
        if not row["question"]:
            skipped["no question text (KB_AUDIT__STORE_TEXT off)"] += 1
            continue
        case: dict[str, Any] = {"id": f"fb-{request_id[:12]}", "question": row["question"]}
        if row.get("out_of_scope"):
            case["unanswerable"] = True
        elif row["verdict"] == "up":
            sources = cited_sources(row["collections"], row["cited"])
            reference = answers.get(request_id)
            if not sources and not reference:
                continue
            if sources:
                case["sources"] = sources
            if reference:
                case["reference"] = reference
        elif row["correction"]:
            case["reference"] = row["correction"]
            sources = named_sources(row["correction"])
            if sources:
                case["sources"] = sources
        else:
            skipped["marked down without a correction"] += 1
            continue
        case["tags"] = ["feedback", row["verdict"], row["prompt"]]
        for name in row["collections"]:
            by_collection.setdefault(name, []).append(case)
            break  # one suite names one collection: the answer's first
    if not by_collection:
        raise EvalError("no feedback in this period can become a case" + _why(skipped))
    if len(by_collection) > 1:
        names = ", ".join(sorted(by_collection))
        raise EvalError(f"the feedback covers several collections ({names}): choose one with --collection")
    [(name, cases)] = by_collection.items()
    suite = {
        "name": f"feedback-{name}-{time.strftime('%Y%m%d')}",
        "description": f"Cases from employees' feedback on answers from {name!r}: review each before adding it "
        "to a suite (references are what users wrote or accepted).",
        "collection": name,
        "cases": cases,
    }
    return Harvest(suite, {k: v for k, v in skipped.items() if v})


def _why(skipped: dict[str, int]) -> str:
    counts = [f"{n} {what}" for what, n in skipped.items() if n]
    return f" (left out: {'; '.join(counts)})" if counts else ""
