"""The release lock: which prompt versions are released, and the sha256 of each one's file.

A released prompt is part of the record (answers, ledger rows, audit rows and eval
results name ``answer@v2``), so its meaning must never change behind that name. The
lock file ``prompts.lock.json`` maps ``name@vN`` to the sha256 of the file's bytes;
``check_lock`` reports a released file that changed or disappeared, and any version
not released yet, and ``release_versions`` (``kb prompts release``) adds the new
versions without ever rewriting a recorded hash. A test asserts ``check_lock() == []``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

log = logging.getLogger(__name__)


class Prompt(Protocol):
    """What the lock needs of a prompt version (``prompts.registry.Prompt`` has it): the lock works on
    any such value, so it does not import the registry that reads and releases through it."""

    @property
    def id(self) -> str: ...  # name@vN

    @property
    def version(self) -> int: ...

    @property
    def path(self) -> Path | None: ...

    @property
    def sha256(self) -> str: ...


LOCK_FILENAME = "prompts.lock.json"


class PromptReleaseError(ValueError):
    """Releasing would rewrite the hash of an already released version, or the lock file is unreadable."""


@dataclass(frozen=True)
class LockProblem:
    ref: str
    kind: Literal["changed", "missing", "unreleased"]
    message: str

    @property
    def is_error(self) -> bool:
        """A changed or deleted release can't be fixed by releasing; an unreleased version can."""
        return self.kind != "unreleased"


def read_lock(path: Path) -> dict[str, str]:
    """``{"answer@v1": "<sha256>", ...}``; an absent file is an empty lock (nothing released yet)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise PromptReleaseError(f"{path}: cannot read the prompt lock file ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise PromptReleaseError(f'{path}: expected a JSON object of "name@vN": "sha256" entries')
    return data


def write_lock(path: Path, lock: dict[str, str]) -> None:
    """Sorted and indented so a release is a readable one-line diff; atomic so a crash leaves the old file."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(lock.items())), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _shown(prompt: Prompt, root: Path) -> str:
    if prompt.path is None:
        return prompt.id
    try:
        return str(prompt.path.relative_to(root.parent))
    except ValueError:
        return str(prompt.path)


def check_lock(prompts: Iterable[Prompt], lock: dict[str, str], root: Path) -> list[LockProblem]:
    problems: list[LockProblem] = []
    present = {p.id: p for p in prompts}
    for ref, prompt in present.items():
        recorded = lock.get(ref)
        if recorded is None:
            problems.append(
                LockProblem(
                    ref, "unreleased", f"{ref} ({_shown(prompt, root)}) is unreleased; run `kb prompts release`"
                )
            )
        elif recorded != prompt.sha256:
            problems.append(
                LockProblem(
                    ref,
                    "changed",
                    f"{_shown(prompt, root)} changed after {ref} was released; restore it and create "
                    f"v{prompt.version + 1} instead",
                )
            )
    for ref in sorted(set(lock) - set(present)):
        problems.append(LockProblem(ref, "missing", f"{ref} is released but its file is gone from {root}; restore it"))
    return problems


def release_versions(
    prompts: Iterable[Prompt], lock_path: Path, root: Path, only: Iterable[str] | None = None
) -> list[str]:
    """Add unreleased versions (all, or those in ``only``) to the lock and return their refs.

    Never touches an existing entry, and refuses outright while any released file has
    changed or vanished, so a release can't paper over an edited release.
    """
    prompts = list(prompts)
    lock = read_lock(lock_path)
    errors = [p for p in check_lock(prompts, lock, root) if p.is_error]
    if errors:
        raise PromptReleaseError("; ".join(p.message for p in errors))
    wanted = None if only is None else set(only)
    new = {p.id: p.sha256 for p in prompts if p.id not in lock and (wanted is None or p.id in wanted)}
    if new:
        write_lock(lock_path, {**lock, **new})
        log.info("released %s into %s", ", ".join(sorted(new)), lock_path)
    return sorted(new)
