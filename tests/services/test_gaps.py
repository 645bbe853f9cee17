"""Knowledge gaps from real questions: what the handbook does not answer, grouped into topics.

Through the API, an employee asks the handbook suite's answerable questions (covered) and the R FAQ's
and SQLite FAQ's real questions (tests/data/gaps, from the shared datasets' queries: not covered by a
company handbook), with feedback: thumbs up on covered answers, thumbs down on SQLite answers kb gave
anyway. ``kb gaps`` must group the uncovered questions into topics that are each mostly R or mostly
SQLite (purity >= 0.8), keep covered questions out, and carry what it promises per topic.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from app.api.main import create_app
from app.bootstrap import Components
from app.cli import cli
from app.gaps import gap_questions, gap_report
from app.settings import get_settings
from tests.conftest import ROOT
from tests.servers import serve_app

DATA = ROOT / "tests" / "data" / "gaps"


def _questions() -> dict[str, str]:
    suite = yaml.safe_load((ROOT / "evals" / "suites" / "handbook.yaml").read_text())
    origin = {c["question"]: "covered" for c in suite["cases"] if not c.get("unanswerable") and not c.get("turns")}
    for name in ("r-faq", "sqlite-faq"):
        for line in (DATA / f"{name}.txt").read_text().splitlines():
            origin.setdefault(line, name)
    return origin


@pytest.mark.slow
def test_gaps_group_what_the_documents_do_not_answer(
    handbook_components: Components, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = _questions()
    assert len(origin) >= 130
    started = time.time() - 1
    parts = handbook_components
    token = parts.keys.create("employee", "employee", ["handbook"]).token
    admin = parts.keys.create("ops", "admin", ["*"]).token
    marked_down = []
    limits = parts.settings.limits.model_copy(update={"requests_per_minute": 0})  # 134 questions in a minute
    unlimited = parts.settings.model_copy(update={"limits": limits})
    with (
        serve_app(create_app(unlimited, components=parts)) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client,
    ):
        for question, where in origin.items():
            response = client.post("/chat", json={"question": question})
            assert response.status_code == 200, response.text
            answer = response.json()
            if where == "covered" and answer["grounded"]:
                client.post("/feedback", json={"request_id": answer["request_id"], "verdict": "up"})
            elif where == "sqlite-faq" and answer["grounded"]:  # answered from the handbook anyway: wrong
                client.post("/feedback", json={"request_id": answer["request_id"], "verdict": "down"})
                marked_down.append(question)
        over_http = httpx.get(url + "/admin/gaps", params={"since": "1h"}, headers={"Authorization": f"Bearer {admin}"})
        forbidden = client.get("/admin/gaps")
    assert over_http.status_code == 200 and forbidden.status_code == 403

    report = gap_report(parts.db, parts.embedder, parts.store, since_ts=started)
    questions, hidden = gap_questions(parts.db, started)
    text = {q.request_id: q.question for q in questions}
    seen = Counter(origin[text[rid]] for topic in report.topics for rid in topic.request_ids)
    assert hidden == 0 and seen["covered"] <= 2, seen  # a covered question only when kb wrongly refused it
    assert seen["r-faq"] >= 60 and seen["sqlite-faq"] >= 20, seen  # uncovered: refused or marked down
    majority = sum(
        Counter(origin[text[rid]] for rid in t.request_ids).most_common(1)[0][1] for t in report.topics
    )  # fmt: skip
    purity = majority / sum(t.size for t in report.topics)
    assert purity >= 0.8, purity
    down_reasons = {text[rid] for t in report.topics for rid in t.request_ids if t.reasons.get("down")}
    assert set(marked_down) <= down_reasons | {q for q in origin if origin[q] == "covered"}
    biggest = report.topics[0]
    assert biggest.size >= 5 and biggest.label and len(biggest.examples) == 3
    assert biggest.trend in ("new", "rising", "steady", "falling")
    assert biggest.first_half + biggest.second_half == biggest.size == sum(biggest.by_day.values())
    assert biggest.documents and biggest.documents[0]["collection"] == "handbook"
    assert json.loads(json.dumps(over_http.json()))["questions"] == report.questions
    parts.close()

    monkeypatch.setenv("KB_DATA_DIR", str(parts.settings.data_dir))
    # the CLI embeds the questions again: with the same model backend as `parts` (the tests' torch
    # Embedder), so both reports cluster the same vectors and their topics can be compared
    monkeypatch.setenv("KB_EMBEDDING__BACKEND", "torch")
    get_settings.cache_clear()
    page = tmp_path / "gaps.html"
    ran = CliRunner().invoke(cli, ["gaps", "--since", "1h", "--html", str(page), "--json"])
    get_settings.cache_clear()
    assert ran.exit_code == 0, ran.output
    html = page.read_text()
    assert "data:image/png;base64," in html and "Knowledge gaps" in html and "<script" not in html
    assert json.loads(ran.stdout[ran.stdout.index("{") :])["topics"][0]["size"] == biggest.size

    # An admin marks the largest topic as not kb's to answer: its questions become refusal cases.
    marked = CliRunner().invoke(cli, ["gaps", "--since", "1h", "--out-of-scope", "1"])
    assert marked.exit_code == 0 and f"{biggest.size} questions marked out of scope" in marked.output, marked.output
    cases_file = tmp_path / "cases.yaml"
    made = CliRunner().invoke(cli, ["eval", "cases", "--from-feedback", "--since", "1h", "--out", str(cases_file)])
    assert made.exit_code == 0, made.output
    cases = yaml.safe_load(cases_file.read_text())["cases"]
    refusals = {c["question"] for c in cases if c.get("unanswerable")}
    assert refusals == {text[rid] for rid in biggest.request_ids}
    assert CliRunner().invoke(cli, ["gaps", "--out-of-scope", "999"]).exit_code == 1
    get_settings.cache_clear()


def test_gaps_say_what_cannot_be_shown_without_question_text(handbook_components: Components) -> None:
    """KB_AUDIT__STORE_TEXT=false: the questions are counted, not shown."""
    from app.audit import AuditLog, AuditRecord

    log = AuditLog(handbook_components.db, store_text=False)
    log.record(AuditRecord(request_id="r1", question="What is the dress code?", prompt="answer@v2",
                           provider="extractive", model="x", answer="I don't know", grounded=False))  # fmt: skip
    report = gap_report(handbook_components.db, handbook_components.embedder, None, since_ts=0)
    assert (report.hidden, report.questions, report.topics) == (1, 0, [])


def test_only_answers_are_gaps_not_mcp_searches_or_reads(handbook_components: Components) -> None:
    """An MCP search that found nothing is audited (tool mcp.search, not grounded) but asked no question."""
    from app.audit import AuditLog, AuditRecord

    log = AuditLog(handbook_components.db)
    common = {"prompt": "", "provider": "", "model": "", "answer": "", "grounded": False}
    log.record(AuditRecord(request_id="s1", question="dress code", tool="mcp.search", **common))  # type: ignore[arg-type]
    log.record(AuditRecord(request_id="d1", question="kb://handbook/x.md", tool="mcp.read", **common))  # type: ignore[arg-type]
    log.record(AuditRecord(request_id="a1", question="What is the dress code?", tool="mcp.ask", **common))  # type: ignore[arg-type]
    log.record(AuditRecord(request_id="c1", question="Is there a gym?", **common))  # type: ignore[arg-type]
    found, hidden = gap_questions(handbook_components.db, since_ts=0)
    assert sorted(q.request_id for q in found) == ["a1", "c1"] and hidden == 0
