"""kb prompts: list, show, diff, check and release the versioned prompt files.

A prompt version is released by recording its file's sha256 in
``prompts/prompts.lock.json``; from then on the file must not change (a change is a
new version), which ``kb prompts check`` and the test suite enforce. ``--dir``
points at another prompts folder (its lock file lives in it).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from app.cli.common import cli, console, fail, out, setup
from app.errors import PromptError, PromptNotFoundError
from app.settings import PromptSettings
from prompts.lock import PromptReleaseError
from prompts.registry import PROMPTS_DIR, Prompt, PromptFileError, PromptLookupError, PromptRegistry, parse_ref
from prompts.selection import PromptSelector

prompts_cli = typer.Typer(help="Versioned prompt files: list, show, diff, check, release.", no_args_is_help=True)
cli.add_typer(prompts_cli, name="prompts")


@prompts_cli.callback()
def _options(
    ctx: typer.Context,
    prompts_dir: Annotated[Path, typer.Option("--dir", help="Prompts folder (default: the bundled prompts/).")] = (
        PROMPTS_DIR
    ),
) -> None:
    ctx.obj = prompts_dir


def _registry(ctx: typer.Context) -> PromptRegistry:
    try:
        return PromptRegistry(ctx.obj or PROMPTS_DIR)
    except PromptFileError as exc:
        raise fail(PromptError(str(exc))) from exc


def _get(registry: PromptRegistry, ref: str) -> Prompt:
    try:
        return registry.get(ref)
    except PromptLookupError as exc:
        raise fail(PromptNotFoundError(str(exc))) from exc


def _plain(text: str) -> None:
    """Prompt text holds [n] and {fields}: print it verbatim, never as rich markup."""
    out.print(text, markup=False, highlight=False, emoji=False)


def _active(settings: PromptSettings) -> dict[str, str]:
    """ref → how settings use it: 'default', 'default (split overrides)' or 'A/B 90%'."""
    selector = PromptSelector(settings.split)
    marks: dict[str, str] = {}
    for value in settings.model_dump().values():
        if isinstance(value, str) and "@" in value:
            try:
                name, version = parse_ref(value)
            except PromptLookupError:
                continue  # not a prompt reference
            marks[f"{name}@v{version}"] = "default" + (" (split overrides)" if selector.split.get(name) else "")
    for name in selector.split:
        for ref, share in selector.shares(name).items():
            marks[ref] = f"A/B {share:.0%}"
    return marks


@prompts_cli.command("list")
def list_prompts(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON list of versions.")] = False
) -> None:
    """Every prompt version: released?, changelog, and which ones settings make active."""
    settings = setup()
    registry = _registry(ctx)
    try:
        problems = {p.ref: p.kind for p in registry.check_lock()}
    except PromptReleaseError as exc:
        raise fail(PromptError(str(exc))) from exc
    active = _active(settings.prompts)
    rows: list[dict[str, Any]] = [
        {
            "ref": p.id,
            "name": p.name,
            "version": p.version,
            "released": p.id not in problems or problems[p.id] == "changed",
            "changed_since_release": problems.get(p.id) == "changed",
            "active": active.get(p.id, ""),
            "changelog": p.changelog,
        }
        for p in registry.all()
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "version", "released", "active", "changelog")
    for r in rows:
        released = "CHANGED (make a new version)" if r["changed_since_release"] else ("yes" if r["released"] else "no")
        table.add_row(r["name"], f"v{r['version']}", released, r["active"], Text(r["changelog"]))
    out.print(table)


@prompts_cli.command()
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="name@vN, or a name for its latest version.")],
    as_json: Annotated[bool, typer.Option("--json", help="Every field as JSON.")] = False,
) -> None:
    """One prompt version: metadata, system text and template."""
    registry = _registry(ctx)
    prompt = _get(registry, ref)
    released = registry.is_released(prompt.id)
    if as_json:
        data: dict[str, Any] = {
            "ref": prompt.id, "name": prompt.name, "version": prompt.version, "description": prompt.description,
            "changelog": prompt.changelog, "variables": list(prompt.variables), "model_hints": prompt.model_hints,
            "released": released, "sha256": prompt.sha256, "system": prompt.system, "template": prompt.template,
        }  # fmt: skip
        out.print_json(json.dumps(data))
        return
    _plain(f"{prompt.id}  ({'released' if released else 'unreleased'}, sha256 {prompt.sha256[:12]})")
    _plain(f"description: {prompt.description}\nchangelog:   {prompt.changelog}")
    _plain(f"variables:   {', '.join(prompt.variables)}\nmodel hints: {json.dumps(prompt.model_hints)}")
    _plain(f"\n--- system ---\n{prompt.system.rstrip()}\n\n--- template ---\n{prompt.template.rstrip()}")


def _diff_text(prompt: Prompt) -> list[str]:
    text = f"# model_hints: {json.dumps(prompt.model_hints, sort_keys=True)}\n# system\n{prompt.system.rstrip()}\n"
    text += f"# template\n{prompt.template.rstrip()}\n"
    return text.splitlines(keepends=True)


@prompts_cli.command()
def diff(
    ctx: typer.Context,
    old: Annotated[str, typer.Argument(help="The version to compare from, like answer@v1.")],
    new: Annotated[str, typer.Argument(help="The version to compare to, like answer@v2.")],
) -> None:
    """Unified diff of two versions' system text, template and model hints."""
    registry = _registry(ctx)
    a, b = _get(registry, old), _get(registry, new)
    lines = list(difflib.unified_diff(_diff_text(a), _diff_text(b), fromfile=a.id, tofile=b.id))
    if not lines:
        console.print(f"{a.id} and {b.id} have the same system text, template and model hints")
        return
    _plain("".join(lines).rstrip("\n"))


@prompts_cli.command()
def check(ctx: typer.Context) -> None:
    """Exit 1 if a released version changed or vanished, or a version is unreleased (for CI and hooks)."""
    registry = _registry(ctx)
    try:
        problems = registry.check_lock()
    except PromptReleaseError as exc:
        raise fail(PromptError(str(exc))) from exc
    for problem in problems:
        console.print(f"[red]{problem.kind}[/red]: ", Text(problem.message), sep="")
    if problems:
        raise typer.Exit(1)
    out.print(f"{len(registry.all())} prompt versions, all released and unchanged")


@prompts_cli.command()
def release(
    ctx: typer.Context,
    refs: Annotated[list[str] | None, typer.Argument(help="Versions to release, like answer@v3; default: all.")] = None,
) -> None:
    """Record unreleased versions' sha256 in the lock file; refuses if a released version changed."""
    registry = _registry(ctx)
    if refs:
        for ref in refs:
            _get(registry, ref)
    try:
        released = registry.release(refs or None)
    except PromptReleaseError as exc:
        raise fail(PromptError(f"nothing released: {exc}", code=PromptError.PROMPT_RELEASE_REFUSED)) from exc
    if not released:
        out.print("nothing to release: every version is already in the lock file")
        return
    out.print(f"released {', '.join(released)} into {registry.lock_path}")
