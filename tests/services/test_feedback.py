"""Feedback on answers over HTTP: who may judge which answer, what is kept, the errors, the metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.api.main import create_app
from app.bootstrap import Components
from app.cli import cli
from app.db.schema import feedback
from app.settings import get_settings
from tests.servers import metric, serve_app

QUESTION = "How many days of annual leave do I get?"


@pytest.fixture
def clients(handbook_components: Components) -> Iterator[dict[str, httpx.Client]]:
    keys = handbook_components.keys
    tokens = {
        "alice": keys.create("alice", "employee", ["handbook"]).token,
        "bob": keys.create("bob", "employee", ["handbook"]).token,
        "admin": keys.create("ops", "admin", ["*"]).token,
    }
    with serve_app(create_app(handbook_components.settings, components=handbook_components)) as url:
        made = {
            n: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {t}"}, timeout=60)
            for n, t in tokens.items()
        }
        yield made
        for client in made.values():
            client.close()


def test_the_receiver_judges_an_answer_and_the_verdict_keeps_what_it_judged(
    clients: dict[str, httpx.Client], handbook_components: Components
) -> None:
    alice, bob, admin = clients["alice"], clients["bob"], clients["admin"]
    answer = alice.post("/chat", json={"question": QUESTION}).json()
    before = admin.get("/metrics").text  # counters are per process: compare before and after
    rid = answer["request_id"]
    given = alice.post("/feedback", json={"request_id": rid, "verdict": "down", "comment": "too vague",
                                          "correction": "27 days, page 2 of the handbook"})  # fmt: skip
    assert given.status_code == 201, given.text
    assert given.json()["prompt"] == answer["prompt"] and given.json()["replaced"] is False
    [row] = handbook_components.feedback.rows()
    assert row["question"] == QUESTION and row["collections"] == ["handbook"] and row["grounded"] is True
    assert row["cited"] == [c["chunk_id"] for c in answer["citations"]] and row["key_name"] == "alice"
    assert (row["comment"], row["correction"]) == ("too vague", "27 days, page 2 of the handbook")

    again = alice.post("/feedback", json={"request_id": rid, "verdict": "up"})  # changed her mind: replaces
    assert again.status_code == 201 and again.json()["replaced"] is True
    assert [r["verdict"] for r in handbook_components.feedback.rows()] == ["up"]

    other = bob.post("/feedback", json={"request_id": rid, "verdict": "down"})  # not his answer
    assert other.status_code == 403 and other.json()["error"]["code"] == "feedback_forbidden"
    assert admin.post("/feedback", json={"request_id": rid, "verdict": "down"}).status_code == 201
    with handbook_components.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(feedback)).scalar() == 2

    rates = handbook_components.feedback.rates()
    assert rates == [{"prompt": answer["prompt"], "up": 1, "down": 1, "total": 2, "down_rate": 0.5}]
    after = admin.get("/metrics").text

    def counted(verdict: str) -> float:
        labels = {"verdict": verdict, "prompt": answer["prompt"]}
        return metric(after, "kb_feedback_total", **labels) - metric(before, "kb_feedback_total", **labels)

    assert (counted("down"), counted("up")) == (2, 1)


def test_an_openai_compatible_answer_is_judged_by_its_id(clients: dict[str, httpx.Client]) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    completion = clients["alice"].post("/v1/chat/completions", json={"model": "kb", "messages": messages}).json()
    assert completion["id"].startswith("chatcmpl-")
    given = clients["alice"].post("/feedback", json={"request_id": completion["id"], "verdict": "up"})
    assert given.status_code == 201 and given.json()["request_id"] == completion["kb"]["request_id"]


def test_a_cache_hit_can_be_judged_at_once(clients: dict[str, httpx.Client]) -> None:
    """A cached answer's audit row is written after the response (deferred): feedback still finds it."""
    alice = clients["alice"]
    alice.post("/chat", json={"question": QUESTION})
    hit = alice.post("/chat", json={"question": QUESTION}).json()
    assert hit["cached"] is True
    assert alice.post("/feedback", json={"request_id": hit["request_id"], "verdict": "up"}).status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"request_id": "nope", "verdict": "up"}, 404, "answer_not_found"),
        ({"request_id": "RID", "verdict": "down", "comment": "x" * 2001}, 413, "comment_too_long"),
        ({"request_id": "RID", "verdict": "down", "correction": "x" * 8001}, 413, "correction_too_long"),
        ({"request_id": "RID", "verdict": "meh"}, 422, "invalid_request"),
        ({"request_id": "RID"}, 422, "invalid_request"),
    ],
)
def test_bad_feedback_gets_a_json_error(clients: dict[str, httpx.Client], body: dict, status: int, code: str) -> None:
    alice = clients["alice"]
    rid = alice.post("/chat", json={"question": QUESTION}).json()["request_id"]
    response = alice.post("/feedback", json={k: (rid if v == "RID" else v) for k, v in body.items()})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_feedback_becomes_eval_cases_that_kb_eval_run_gates(
    handbook_components: Components, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Helpful answers keep their cited pages, a correction becomes the reference with the page it names; the
    file runs through `kb eval run` unchanged and gates."""
    token = handbook_components.keys.create("alice", "employee", ["handbook"]).token
    admin_token = handbook_components.keys.create("ops", "admin", ["*"]).token
    with (
        serve_app(create_app(handbook_components.settings, components=handbook_components)) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as alice,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60) as admin,
    ):
        good = alice.post("/chat", json={"question": QUESTION}).json()["request_id"]
        alice.post("/feedback", json={"request_id": good, "verdict": "up"}).raise_for_status()
        bad = alice.post("/chat", json={"question": "How long is the probation period?"}).json()["request_id"]
        correction = "New employees have a probation period of 6 months (handbook.pdf, page 3)."
        alice.post(
            "/feedback", json={"request_id": bad, "verdict": "down", "correction": correction}
        ).raise_for_status()
        vague = alice.post("/chat", json={"question": "Who approves expenses?"}).json()["request_id"]
        alice.post("/feedback", json={"request_id": vague, "verdict": "down"}).raise_for_status()
        stock = alice.post("/chat", json={"question": "What is our share price today?"}).json()["request_id"]
        scope = {"request_id": stock, "verdict": "down", "out_of_scope": True}
        assert alice.post("/feedback", json=scope).json()["error"]["code"] == "admin_required"
        admin.post("/feedback", json=scope).raise_for_status()  # kb should refuse this: a refusal case
    handbook_components.close()

    monkeypatch.setenv("KB_DATA_DIR", str(handbook_components.settings.data_dir))
    get_settings.cache_clear()
    runner = CliRunner()
    cases_file = tmp_path / "feedback-cases.yaml"
    made = runner.invoke(cli, ["eval", "cases", "--from-feedback", "--since", "1h", "--out", str(cases_file)])
    assert made.exit_code == 0, made.output
    assert "3 cases written" in made.output and "1 marked down without a correction" in made.output
    suite = yaml.safe_load(cases_file.read_text())
    by_question = {c["question"]: c for c in suite["cases"]}
    assert suite["collection"] == "handbook"
    assert {"source": "handbook.pdf", "page": 2} in by_question[QUESTION]["sources"]
    probation = by_question["How long is the probation period?"]
    assert probation["reference"] == correction and probation["sources"] == [{"source": "handbook.pdf", "page": 3}]
    assert by_question["What is our share price today?"]["unanswerable"] is True

    rates = runner.invoke(cli, ["feedback", "rates", "--since", "1h", "--json"])
    assert rates.exit_code == 0, rates.output
    [row] = json.loads(rates.stdout)
    assert (row["up"], row["down"], row["total"]) == (1, 3, 4) and row["prompt"].startswith("answer@")
    downs = runner.invoke(cli, ["feedback", "list", "--verdict", "down", "--json"])
    listed = [json.loads(line) for line in downs.stdout.splitlines()]
    assert [r["question"] for r in listed] == [
        "How long is the probation period?",
        "Who approves expenses?",
        "What is our share price today?",
    ]
    assert [r["out_of_scope"] for r in listed] == [False, False, True]
    assert listed[0]["correction"] == correction

    gate = tmp_path / "gate.yaml"
    gate.write_text("metrics:\n  hit_at_k: {min: 1.0}\n  refusal_accuracy: {min: 1.0}\n", encoding="utf-8")
    ran = runner.invoke(cli, ["eval", "run", str(cases_file), "--gate", str(gate), "--json", str(tmp_path / "r.json")])
    assert ran.exit_code == 0, ran.output
    strict = tmp_path / "strict.yaml"
    strict.write_text("metrics:\n  hit_at_k: {min: 1.01}\n", encoding="utf-8")  # cannot hold: the gate bites
    assert runner.invoke(cli, ["eval", "run", str(cases_file), "--gate", str(strict)]).exit_code == 1
    get_settings.cache_clear()
