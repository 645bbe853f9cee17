"""Load, validate and render versioned prompt files.

A prompt is ``prompts/<name>/v<N>.yaml`` with ``system``, ``template`` (Python
``str.format`` fields), declared ``variables``, ``model_hints`` and a
``changelog`` line. Files are immutable once released: a change is a new version,
and every answer records ``name@version``. Validation is strict (unknown keys,
undeclared or unused variables, wrong types) so a broken prompt fails at load, not
mid-request. Which versions are released, and that they never change, is the lock
file's job (``prompts/lock.py``, ``prompts/prompts.lock.json``).
"""

from __future__ import annotations

import hashlib
import logging
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prompts.lock import LOCK_FILENAME, LockProblem, check_lock, read_lock, release_versions

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).parent
_ALLOWED_KEYS = {"name", "version", "description", "changelog", "variables", "model_hints", "system", "template"}
_REF = re.compile(r"^([a-z][a-z0-9_-]*)@v?(\d+)$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    path: Path | None = field(default=None, compare=False)
    sha256: str = field(default="", compare=False)  # of the file's bytes, as the lock file records it

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


def _template_fields(path: Path, template: str) -> set[str]:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:  # a lone "{" or "}"
        raise PromptFileError(
            f"{path}: template is not a valid format string ({exc}); write literal braces as {{{{ }}}}"
        ) from exc
    bad = sorted(f for f in fields if not _IDENTIFIER.match(f))
    if bad:
        raise PromptFileError(f"{path}: template fields must be plain names like {{question}}, not {bad}")
    return fields


def _check_types(path: Path, raw: dict[str, Any]) -> None:
    """Type errors with the key and what was found, so the fix is obvious from the message."""

    def wrong(key: str, expected: str) -> PromptFileError:
        return PromptFileError(f"{path}: {key!r} must be {expected}, got {type(raw[key]).__name__} {raw[key]!r}")

    if not isinstance(raw["name"], str) or not _NAME.match(raw["name"]):
        raise wrong("name", "a lowercase name like 'answer'")
    if isinstance(raw["version"], bool) or not isinstance(raw["version"], int) or raw["version"] < 1:
        raise wrong("version", "a whole number >= 1")
    for key in ("system", "template"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise wrong(key, "non-empty text")
    for key in ("description", "changelog"):
        if key in raw and not isinstance(raw[key], str):
            raise wrong(key, "text")
    variables = raw["variables"]
    if not isinstance(variables, list) or not all(isinstance(v, str) and _IDENTIFIER.match(v) for v in variables):
        raise wrong("variables", "a list of names like [question, sources]")
    if len(set(variables)) != len(variables):
        raise wrong("variables", "a list without repeated names")
    hints = raw.get("model_hints")
    if hints is not None:
        if not isinstance(hints, dict) or not all(isinstance(k, str) for k in hints):
            raise wrong("model_hints", "a mapping like {temperature: 0, max_tokens: 512}")
        temperature, max_tokens = hints.get("temperature", 0), hints.get("max_tokens", 1)
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
            raise PromptFileError(f"{path}: model_hints.temperature must be a number from 0 to 2, got {temperature!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise PromptFileError(f"{path}: model_hints.max_tokens must be a whole number >= 1, got {max_tokens!r}")


def load_prompt_file(path: Path) -> Prompt:
    data = path.read_bytes()
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PromptFileError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise PromptFileError(f"{path}: expected a mapping")
    unknown = set(raw) - _ALLOWED_KEYS
    if unknown:
        raise PromptFileError(f"{path}: unknown keys {sorted(unknown)} (allowed: {sorted(_ALLOWED_KEYS)})")
    for key in ("name", "version", "system", "template", "variables"):
        if key not in raw:
            raise PromptFileError(f"{path}: missing required key {key!r}")
    _check_types(path, raw)
    prompt = Prompt(
        name=raw["name"],
        version=raw["version"],
        system=raw["system"],
        template=raw["template"],
        variables=tuple(raw["variables"]),
        description=raw.get("description", ""),
        changelog=raw.get("changelog", ""),
        model_hints=dict(raw.get("model_hints") or {}),
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
    )
    if path.stem != f"v{prompt.version}" or path.parent.name != prompt.name:
        raise PromptFileError(f"{path}: name/version must match its path ({prompt.id})")
    fields = _template_fields(path, prompt.template)
    if fields != set(prompt.variables):
        raise PromptFileError(f"{path}: template uses {sorted(fields)} but declares {sorted(prompt.variables)}")
    return prompt


class PromptRegistry:
    """Every ``<name>/v<N>.yaml`` under ``root``, validated at construction; the lock file sits in ``root``."""

    def __init__(self, root: Path = PROMPTS_DIR):
        self.root = root
        self.lock_path = root / LOCK_FILENAME
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

    def is_released(self, ref: str) -> bool:
        """True when the version is in the lock file (whether or not its content still matches)."""
        return self.get(ref).id in read_lock(self.lock_path)

    def check_lock(self) -> list[LockProblem]:
        """Released versions whose bytes changed or vanished, and versions not released yet; [] when clean."""
        return check_lock(self.all(), read_lock(self.lock_path), self.root)

    def release(self, refs: list[str] | None = None) -> list[str]:
        """Add unreleased versions (all, or ``refs``) to the lock; PromptReleaseError if a released one changed."""
        only = None if refs is None else [self.get(ref).id for ref in refs]
        return release_versions(self.all(), self.lock_path, self.root, only)
