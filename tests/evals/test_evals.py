"""kb eval end to end: the handbook suite through the real RagService, the CI gate, reports, compare.

The suite runs in-process with the offline extractive provider and the session's embedding
model; this is the CI gate on answer quality: a change that loses handbook answers fails here.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.bootstrap import Components
from app.cli import cli
from evals.compare import compare_runs
from evals.gate import check_gate, load_gate
from evals.report import markdown_summary, write_report
from evals.runner import plan_variants, run_suite
from evals.suite import load_suite
from evals.workspace import open_workspace
from tests.servers import FakeOpenAI

runner = CliRunner()


@pytest.fixture(scope="module")
def handbook_run(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[tuple[Components, Any]]:  # type: ignore[no-untyped-def]
    """The suite's documents ingested once into a private data dir (as ``kb eval run`` does)."""
    from app.settings import Settings

    suite = load_suite("handbook")
    data = tmp_path_factory.mktemp("eval") / "data"
    settings = Settings(_env_file=None, data_dir=data, llm={"provider": "extractive"})  # type: ignore[call-arg, arg-type]
    components, workspace = open_workspace(suite, settings, data_dir=data, embedder=embedder)
    yield components, workspace
    components.close()


@pytest.fixture(scope="module")
def default_results(handbook_run: tuple[Components, Any]) -> dict[str, Any]:
    """The whole handbook suite, default configuration: what docs/benchmarks.md records."""
    components, workspace = handbook_run
    suite = load_suite("handbook")
    return run_suite(suite, components, plan_variants(suite, only=["default"]), workspace=workspace)


def test_handbook_suite_passes_the_ci_gate(default_results: dict[str, Any], handbook_run: Any) -> None:
    failures = check_gate(load_gate("ci"), default_results)
    assert failures == [], "\n".join(map(str, failures))
    variant = default_results["variants"][0]
    components, _ = handbook_run
    assert variant["provider"] == "extractive" and variant["prompt"] == components.settings.prompts.answer
    assert len(variant["cases"]) == len(load_suite("handbook").cases)
    metrics = variant["metrics"]
    assert all(metrics[k] is not None for k in ("hit_at_k", "mrr", "ndcg_at_10", "token_f1", "groundedness"))
    assert metrics["cost_total_usd"] == 0.0 and metrics["latency_p95_ms"] >= metrics["latency_p50_ms"] > 0
    assert default_results["workspace"]["ingested"]["added"] == 4


def test_cases_record_what_happened(default_results: dict[str, Any]) -> None:
    cases = {c["id"]: c for c in default_results["variants"][0]["cases"]}
    leave = cases["annual-leave"]
    assert leave["passed"] and "27 days" in leave["answer"] and leave["metrics"]["fact_coverage"] == 1.0
    assert leave["retrieved"][0]["source"] == "handbook.pdf" and leave["ledger_rows"] == 1
    assert cases["stock-price"]["refused"] and cases["stock-price"]["passed"]
    follow_up = cases["probation-notice"]
    assert len(follow_up["request_ids"]) == 2  # the earlier question was asked first
    assert follow_up["standalone_question"] != follow_up["question"]  # condensed with the history


def test_a_broken_gate_exits_1_naming_the_metric(default_results: dict[str, Any], tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(default_results))
    strict = tmp_path / "strict.yaml"
    strict.write_text("metrics:\n  fact_coverage: {min: 0.99}\n  false_refusal_rate: {max: 0.0}\n")
    broken = runner.invoke(cli, ["eval", "gate", str(results), str(strict)])
    assert broken.exit_code == 1
    assert "default: fact_coverage = " in broken.output and "required >= 0.99" in broken.output
    ok = runner.invoke(cli, ["eval", "gate", str(results), "ci"])
    assert ok.exit_code == 0, ok.output


def test_variants_are_compared_case_by_case(handbook_run: tuple[Components, Any], tmp_path: Path) -> None:
    """Dense-only retrieval loses the lexical share of the evidence and refuses answerable cases."""
    components, workspace = handbook_run
    suite = load_suite("handbook").select(tags=["smoke"])
    results = run_suite(suite, components, plan_variants(suite, only=["default", "dense"]), workspace=workspace)
    default, dense = results["variants"]
    assert dense["metrics"]["false_refusal_rate"] > default["metrics"]["false_refusal_rate"]
    summary = markdown_summary(results)
    assert "### default → dense" in summary and "**pass → fail**" in summary

    page = write_report(results, tmp_path / "report")
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 3 and "pass → fail" in html
    for name in ("metrics", "latency", "cost_quality"):
        assert (tmp_path / "report" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    one = copy.deepcopy(results)
    one["variants"] = [default]
    a.write_text(json.dumps(one))
    one["variants"] = [dense]
    b.write_text(json.dumps(one))
    [cmp] = compare_runs(json.loads(a.read_text()), json.loads(b.read_text()))
    flipped = [c["id"] for c in cmp.regressions]
    assert flipped and all(not c["passed"] for c in dense["cases"] if c["id"] in flipped)
    shown = runner.invoke(cli, ["eval", "compare", str(a), str(b)])
    assert shown.exit_code == 0, shown.output
    assert "false refusal rate" in shown.output and f"`{flipped[0]}`" in shown.output


class JudgingOpenAI(FakeOpenAI):
    """Answers questions with a fixed cited sentence, and judge prompts with grades."""

    def _completion(self, body: dict[str, Any], reply: str) -> dict[str, Any]:
        payload = super()._completion(body, reply)
        if "You grade answers" in body["messages"][0]["content"]:
            payload["choices"][0]["message"]["content"] = '{"faithfulness": 5, "relevance": 4, "reason": "fine"}'
        return payload


def test_generative_provider_is_judged_and_costed(handbook_run: tuple[Components, Any]) -> None:
    components, workspace = handbook_run
    suite = load_suite("handbook").select(ids=["annual-leave", "stock-price"])
    with JudgingOpenAI() as fake:
        sets = {"llm.base_url": fake.base_url, "llm.api_key": "sk-test", "llm.max_retries": 0}
        variants = plan_variants(suite, ["answer@v2"], ["openai"], sets)
        results = run_suite(suite, components, variants, workspace=workspace)
    v = results["variants"][0]
    assert (v["name"], v["provider"], v["judge"]) == ("answer@v2 openai", "openai", "judge@v1")
    cases = {c["id"]: c for c in v["cases"]}
    leave = cases["annual-leave"]
    assert leave["prompt"] == "answer@v2" and leave["passed"], leave
    assert leave["metrics"]["judge_faithfulness"] == 1.0 and leave["metrics"]["judge_relevance"] == 0.75
    # gpt-4o-mini at $0.15 / $0.60 per million tokens; the fake reports 321 + 12 tokens per call
    assert leave["cost_usd"] == pytest.approx((321 * 0.15 + 12 * 0.60) / 1e6)
    # The fake model answers everything: unless the evidence floor refused it first (no model call,
    # no cost), the unanswerable case is answered, which fails it.
    off_topic = cases["stock-price"]
    assert off_topic["passed"] == off_topic["refused"]
    assert off_topic["cost_usd"] == (0.0 if off_topic["refused"] else pytest.approx(leave["cost_usd"]))
    assert v["metrics"]["cost_total_usd"] == pytest.approx(leave["cost_usd"] + off_topic["cost_usd"])
    judged = 2 - off_topic["refused"]
    assert v["judge_cost_usd"] == pytest.approx(judged * leave["cost_usd"])


@pytest.mark.slow
def test_kb_eval_run_as_a_user_runs_it(tmp_path: Path) -> None:
    """One real process: `kb eval run handbook --tag smoke --gate` with a gate it must break."""
    strict = tmp_path / "strict.yaml"
    strict.write_text("metrics:\n  latency_p50_ms: {max: 0.01}\n")  # no answer takes 10 µs
    env = {**os.environ, "KB_DATA_DIR": str(tmp_path / "unused"), "HF_HUB_OFFLINE": "1"}
    args = ["eval", "run", "handbook", "--tag", "smoke", "--variant", "default", "--report", str(tmp_path / "r"),
            "--json", str(tmp_path / "r.json"), "--gate", str(strict)]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "gate failed" in proc.stderr and "latency_p50_ms" in proc.stderr
    assert "| cases passed |" in proc.stdout
    assert (tmp_path / "r" / "report.html").exists() and json.loads((tmp_path / "r.json").read_text())["variants"]
    assert not (tmp_path / "unused").exists()  # the suite's documents went to a private data dir


def test_a_variant_whose_cases_all_fail_stops_with_the_reason(handbook_run: tuple[Components, Any]) -> None:
    from evals.suite import EvalError

    components, workspace = handbook_run
    suite = load_suite("handbook").select(ids=["annual-leave", "probation", "password-length", "lunch"])
    with FakeOpenAI() as fake:
        fake.status = 500
        sets = {"llm.base_url": fake.base_url, "llm.api_key": "sk-test", "llm.max_retries": 0}
        with pytest.raises(EvalError, match="first 3 cases all failed") as err:
            run_suite(suite, components, plan_variants(suite, None, ["openai"], sets), workspace=workspace)
    assert err.value.code == "eval_variant_failed" and len(fake.requests) == 3
