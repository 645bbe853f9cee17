"""Load, validate and render versioned prompt files.

A prompt is ``prompts/<name>/v<N>.yaml`` with ``system``, ``template`` (Python
``str.format`` fields), declared ``variables``, ``model_hints`` and a
``changelog`` line. Files are immutable once released: a change is a new version,
and every answer records ``name@version``. Validation is strict (unknown keys,
undeclared or unused variables) so a broken prompt fails at load, not mid-request.
"""

from __future__ import annotations

import logging
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).parent
_ALLOWED_KEYS = {"name", "version", "description", "changelog", "variables", "model_hints", "system", "template"}
_REF = re.compile(r"^([a-z][a-z0-9_-]*)@v?(\d+)$")


class PromptLookupError(LookupError):
    """No such prompt name or version."""


class PromptFileError(ValueError):
    """A prompt file breaks the schema."""


@dataclass(frozen=True)
class RenderedPrompt:
    system: str
    user: str
    prompt_id: str


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    system: str
    template: str
    variables: tuple[str, ...]
    description: str = ""
    changelog: str = ""
    model_hints: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}@v{self.version}"

    def render(self, **values: str) -> RenderedPrompt:
        missing = set(self.variables) - set(values)
        extra = set(values) - set(self.variables)
        if missing or extra:
            raise PromptFileError(f"{self.id}: missing {sorted(missing)}, unexpected {sorted(extra)}")
        return RenderedPrompt(self.system.strip(), self.template.format(**values).strip(), self.id)


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``answer@v2`` / ``answer@2`` → ("answer", 2); ``answer`` → ("answer", None)."""
    if "@" not in ref:
        return ref, None
    match = _REF.match(ref.strip())
    if not match:
        raise PromptLookupError(f"prompt reference {ref!r} is not of the form name@vN")
    return match.group(1), int(match.group(2))


def _template_fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def load_prompt_file(path: Path) -> Prompt:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PromptFileError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise PromptFileError(f"{path}: expected a mapping")
    unknown = set(raw) - _ALLOWED_KEYS
    if unknown:
        raise PromptFileError(f"{path}: unknown keys {sorted(unknown)}")
    for key in ("name", "version", "system", "template", "variables"):
        if key not in raw:
            raise PromptFileError(f"{path}: missing required key {key!r}")
    prompt = Prompt(
        name=str(raw["name"]),
        version=int(raw["version"]),
        system=str(raw["system"]),
        template=str(raw["template"]),
        variables=tuple(raw["variables"]),
        description=str(raw.get("description", "")),
        changelog=str(raw.get("changelog", "")),
        model_hints=dict(raw.get("model_hints") or {}),
    )
    if path.stem != f"v{prompt.version}" or path.parent.name != prompt.name:
        raise PromptFileError(f"{path}: name/version must match its path ({prompt.id})")
    fields = _template_fields(prompt.template)
    if fields != set(prompt.variables):
        raise PromptFileError(f"{path}: template uses {sorted(fields)} but declares {sorted(prompt.variables)}")
    return prompt


class PromptRegistry:
    def __init__(self, root: Path = PROMPTS_DIR):
        self.root = root
        self._prompts: dict[tuple[str, int], Prompt] = {}
        for path in sorted(root.glob("*/v*.yaml")):
            prompt = load_prompt_file(path)
            self._prompts[(prompt.name, prompt.version)] = prompt
        log.debug("loaded %d prompt versions from %s", len(self._prompts), root)

    def get(self, ref: str) -> Prompt:
        name, version = parse_ref(ref)
        if version is None:
            versions = [v for (n, v) in self._prompts if n == name]
            if not versions:
                raise PromptLookupError(f"no prompt named {name!r}")
            version = max(versions)
        try:
            return self._prompts[(name, version)]
        except KeyError:
            known = ", ".join(p.id for p in self.all()) or "none"
            raise PromptLookupError(f"no prompt {name}@v{version} (known: {known})") from None

    def all(self) -> list[Prompt]:
        return [self._prompts[k] for k in sorted(self._prompts)]
