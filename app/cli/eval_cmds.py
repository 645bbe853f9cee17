"""kb eval: run evaluation suites, compare results, gate on thresholds."""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.common import cli, console, fail, out, setup
from app.errors import InvalidRequestError, KbError

eval_cli = typer.Typer(help="Evaluation suites: run them, compare results, gate on thresholds.", no_args_is_help=True)
cli.add_typer(eval_cli, name="eval")


def _progress(quiet: bool) -> Any:
    """On a terminal a line per case; in logs (CI) a line per variant."""
    passed: dict[str, int] = {}

    def show(variant: str, done: int, total: int, case: dict[str, Any]) -> None:
        passed[variant] = passed.get(variant, 0) + bool(case["passed"])
        if console.is_terminal and not quiet:
            mark = "[green]pass[/green]" if case["passed"] else "[red]fail[/red]"
            console.print(f"  {variant} {done}/{total} {case['id']}: {mark}", highlight=False)
        elif done == total:
            console.print(f"  {variant}: {total} cases, {passed[variant]} passed", highlight=False)

    return show


@eval_cli.command("run")
def run(
    suite: Annotated[str, typer.Argument(help="Suite file, or a shipped suite's name (handbook, r-manuals).")],
    prompt: Annotated[list[str] | None, typer.Option(help="Prompt version to compare (repeat): answer@v1.")] = None,
    provider: Annotated[list[str] | None, typer.Option(help="extractive, openai or local (repeat to compare).")] = None,
    variant: Annotated[
        list[str] | None, typer.Option(help="Only this variant of the suite's own (repeatable), e.g. default.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Setting override for every variant: retrieval.top_k=3.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Only cases with this tag (repeatable), e.g. smoke.")] = None,
    case: Annotated[list[str] | None, typer.Option(help="Only this case id (repeatable).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N selected cases.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write report.html, results.json and plots here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results JSON to this file.")] = None,
    gate: Annotated[
        str | None, typer.Option(help="Thresholds YAML (or a name in evals/gates): exit 1 if broken.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where a suite's documents are ingested (kept; re-runs skip unchanged files).")
    ] = None,
    cache: Annotated[bool, typer.Option(help="Allow response-cache hits (off: every case is answered).")] = False,
    judge: Annotated[
        bool | None, typer.Option(help="LLM-as-judge (default: on when the provider is generative).")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No Markdown summary on stdout.")] = False,
) -> None:
    """Run a suite through the real answer pipeline; print metrics per variant, optionally gate them.

    Variants are the --prompt versions x --provider values, else the suite's own variants,
    else the configured defaults. Exit 1 when a --gate threshold is broken.
    """
    from evals.gate import check_gate, load_gate
    from evals.report import markdown_summary, write_report
    from evals.runner import plan_variants, run_suite
    from evals.suite import load_suite
    from evals.workspace import open_workspace, parse_sets

    settings = setup()
    with ExitStack() as stack:
        try:
            loaded = load_suite(suite).select(tag, case, limit)
            thresholds = load_gate(gate) if gate else None
            variants = plan_variants(loaded, prompt, provider, parse_sets(set_ or []), variant)
            private = None
            if loaded.documents_path() is not None:
                private = data_dir or (report / "data" if report else None)
                if private is None:
                    private = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kb-eval-")))
            components, workspace = open_workspace(loaded, settings, data_dir=private)
            stack.callback(components.close)
            console.print(f"kb eval: {loaded.name}, {len(loaded.cases)} cases x {len(variants)} variant(s)")
            results = run_suite(loaded, components, variants, use_cache=cache, judge=judge,
                                progress=_progress(quiet), workspace=workspace)  # fmt: skip
        except KbError as exc:
            raise fail(exc) from exc
    failures = [str(f) for f in check_gate(thresholds, results)] if thresholds else None
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if report:
        page = write_report(results, report, failures)
        console.print(f"report: {page}")
    if not quiet:
        out.print(markdown_summary(results, failures), markup=False, highlight=False)
    if failures:
        for f in failures:
            console.print(f"[red]gate failed[/red]: {f}", highlight=False)
        raise typer.Exit(1)


@eval_cli.command("cases")
def cases_cmd(
    out_file: Annotated[Path, typer.Option("--out", help="The suite file to write (YAML).")],
    from_feedback: Annotated[
        bool, typer.Option("--from-feedback", help="From employees' feedback on answers (the only source so far).")
    ] = False,
    since: Annotated[str, typer.Option(help="Feedback from this window (30d) or date (2026-11-01) on.")] = "30d",
    collection: Annotated[str | None, typer.Option(help="Only answers from this collection.")] = None,
) -> None:
    """Write eval cases from real feedback: helpful answers keep their cited sources, corrections become references.

    Review the file, then run it as it is (kb eval run FILE) or copy its cases into a suite.
    """
    import yaml
    from sqlalchemy import select

    from app.bootstrap import Components
    from app.db.schema import audit
    from app.since import since_timestamp
    from evals.from_feedback import cases_from_feedback

    if not from_feedback:
        raise fail(InvalidRequestError("say where the cases come from: --from-feedback"))
    settings = setup()
    components = Components(settings)
    try:
        rows = components.feedback.rows(since_ts=since_timestamp(since))
        wanted = [r["request_id"] for r in rows if r["verdict"] == "up"]
        with components.db.connect() as conn:
            found = conn.execute(select(audit.c.request_id, audit.c.answer).where(audit.c.request_id.in_(wanted)))
            answers = {rid: text for rid, text in found if text}

        def cited_sources(collections: list[str], ids: list[str]) -> list[dict[str, Any]]:
            sources: list[dict[str, Any]] = []
            for name in collections:
                for _, meta in components.store.get_records(name, ids).values():
                    entry: dict[str, Any] = {"source": meta.get("source")}
                    if meta.get("page") is not None:
                        entry["page"] = int(meta["page"])
                    if entry["source"] and entry not in sources:
                        sources.append(entry)
            return sources

        harvest = cases_from_feedback(rows, cited_sources, answers, collection=collection)
    except KbError as exc:
        raise fail(exc) from exc
    finally:
        components.close()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(yaml.safe_dump(harvest.suite, sort_keys=False, allow_unicode=True), encoding="utf-8")
    console.print(
        f"{len(harvest.suite['cases'])} cases written to {out_file} (collection {harvest.suite['collection']})"
    )
    for what, n in harvest.skipped.items():
        console.print(f"left out: {n} {what}")


@eval_cli.command("compare")
def compare(
    before: Annotated[Path, typer.Argument(help="Results JSON of the baseline run.")],
    after: Annotated[Path, typer.Argument(help="Results JSON of the run to compare with it.")],
    variant: Annotated[str | None, typer.Option(help="Compare only this variant (present in both).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Metric deltas between two runs and the cases that flipped between pass and fail."""
    from evals.compare import compare_runs, comparison_markdown, load_results

    try:
        labels = (before.name, after.name) if before.name != after.name else (str(before), str(after))
        comparisons = compare_runs(load_results(before), load_results(after), variant, labels)
    except KbError as exc:
        raise fail(exc) from exc
    if as_json:
        out.print_json(json.dumps([c.as_dict() for c in comparisons]))
        return
    for c in comparisons:
        out.print(comparison_markdown(c) + "\n", markup=False, highlight=False)


@eval_cli.command("gate")
def gate_cmd(
    results: Annotated[Path, typer.Argument(help="Results JSON of a run (kb eval run --json).")],
    thresholds: Annotated[str, typer.Argument(help="Thresholds YAML, or a name in evals/gates.")],
) -> None:
    """Check saved results against thresholds: exit 1 listing every broken one."""
    from evals.compare import load_results
    from evals.gate import check_gate, load_gate

    try:
        failures = check_gate(load_gate(thresholds), load_results(results))
    except KbError as exc:
        raise fail(exc) from exc
    for f in failures:
        console.print(f"[red]gate failed[/red]: {f}", highlight=False)
    if failures:
        raise typer.Exit(1)
    console.print("gate passed")


@eval_cli.command("list")
def list_suites() -> None:
    """The shipped suites and gates."""
    from evals.gate import GATES_DIR
    from evals.suite import SUITES_DIR, load_suite

    for path in sorted(SUITES_DIR.glob("*.yaml")):
        try:
            s = load_suite(path)
            first = s.description.strip().splitlines()[0] if s.description else ""
            out.print(f"{path.stem}: {len(s.cases)} cases — {first}")
        except KbError as exc:
            out.print(f"{path.stem}: invalid ({exc.message})")
    for path in sorted(GATES_DIR.glob("*.yaml")):
        out.print(f"gate {path.stem}: {path}")
