"""Eval suite files: YAML validated by pydantic, unknown keys rejected.

A suite names what to search and what answers to expect::

    name: handbook
    documents: ../../examples/handbook      # a folder to ingest (relative to this file), or
    # corpus: ${KB_EVAL_DATASETS:-../../../shared/datasets}/r-manuals   # a BEIR corpus.jsonl folder, or
    collection: handbook                    # alone: an existing collection of the configured data dir
    variants:                               # optional: what to compare when the command line names none
      - {name: top3, set: {retrieval.top_k: 3}}
    cases:
      - id: leave-days
        question: How many days of annual leave do I get?
        facts: ["27 days"]                  # each must appear in the answer; a list = alternatives
        reference: Full-time employees receive 27 days of paid annual leave per year.
        sources: [{source: handbook.pdf, page: 2}]   # or just "handbook.pdf"
      - id: probation-contractors
        turns: ["How long is probation?"]   # earlier questions of the same conversation
        question: And for contractors?
      - {id: dress-code, question: What is the dress code?, unanswerable: true}

Paths may use ``${VAR}`` or ``${VAR:-default}``; relative paths are relative to the suite file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from app.errors import EvalError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SUITES_DIR = Path(__file__).parent / "suites"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedSource(_Strict):
    """A document (path relative to the ingested folder), optionally one page of it."""

    source: str
    page: int | None = None

    def label(self) -> str:
        return self.source if self.page is None else f"{self.source} p.{self.page}"


class Case(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    question: str = Field(min_length=1)
    turns: list[str] = Field(default_factory=list, description="Earlier questions of the conversation.")
    facts: list[str | list[str]] = Field(default_factory=list, description="Must appear in the answer.")
    reference: str | None = Field(None, description="A reference answer, for token F1.")
    sources: list[ExpectedSource] = Field(default_factory=list)
    evidence: list[str] = Field(
        default_factory=list, description="Text a correctly cited chunk contains (default: the facts)."
    )
    unanswerable: bool = False
    tags: list[str] = Field(default_factory=list)

    @field_validator("sources", mode="before")
    @classmethod
    def _source_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"source": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Case:
        if self.unanswerable and (self.facts or self.reference or self.sources):
            raise ValueError(f"case {self.id}: an unanswerable case has no facts, reference or sources")
        if not self.unanswerable and not (self.facts or self.reference or self.sources):
            raise ValueError(f"case {self.id}: give facts, a reference or sources (or mark it unanswerable)")
        return self

    def fact_alternatives(self) -> list[list[str]]:
        return [[f] if isinstance(f, str) else list(f) for f in self.facts]

    def supporting_texts(self) -> list[str]:
        return self.evidence or [alt for group in self.fact_alternatives() for alt in group]


class VariantSpec(_Strict):
    """One configuration to measure: a prompt version, a provider and setting overrides."""

    name: str | None = None
    prompt: str | None = None
    provider: str | None = None
    set: dict[str, Any] = Field(default_factory=dict, description="Settings overrides, e.g. retrieval.top_k: 3")

    def label(self) -> str:
        if self.name:
            return self.name
        parts = [p for p in (self.prompt, self.provider) if p]
        parts += [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.set.items()]
        return " ".join(parts) or "default"


class Suite(_Strict):
    name: str
    description: str = ""
    documents: str | None = Field(None, description="A folder ingested into a private store for the run.")
    corpus: str | None = Field(None, description="A BEIR dataset folder (corpus.jsonl), ingested likewise.")
    collection: str = "eval"
    missing_hint: str = Field("", description="Said when the documents or corpus are not there.")
    groundedness_threshold: float = Field(0.6, ge=0, le=1)
    variants: list[VariantSpec] = Field(default_factory=list)
    cases: list[Case] = Field(min_length=1)
    _path: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _unique(self) -> Suite:
        ids = [c.id for c in self.cases]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate case ids: {', '.join(dupes)}")
        if self.documents and self.corpus:
            raise ValueError("give documents or corpus, not both")
        names = [v.label() for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        return self

    @property
    def path(self) -> Path | None:
        return self._path

    def _resolve(self, raw: str) -> Path:
        expanded = _ENV.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), raw)
        path = Path(expanded).expanduser()
        if not path.is_absolute() and self._path is not None:
            path = self._path.parent / path
        return path.resolve()

    def documents_path(self) -> Path | None:
        """The folder or BEIR dataset to ingest, checked to exist; None: use an existing collection."""
        raw = self.documents or self.corpus
        if raw is None:
            return None
        path = self._resolve(raw)
        wanted = path / "corpus.jsonl" if self.corpus else path
        if not wanted.exists():
            hint = f" {self.missing_hint}" if self.missing_hint else ""
            raise EvalError(
                f"suite {self.name!r}: {wanted} does not exist.{hint}", code=EvalError.EVAL_DOCUMENTS_MISSING
            )
        return path

    def select(self, tags: list[str] | None = None, ids: list[str] | None = None, limit: int | None = None) -> Suite:
        cases = [c for c in self.cases if (not tags or set(tags) & set(c.tags)) and (not ids or c.id in ids)]
        if not cases:
            raise EvalError(f"suite {self.name!r}: no case matches the selection", code=EvalError.EVAL_NO_CASES)
        return self.model_copy(update={"cases": cases[:limit] if limit else cases})


def find_suite(ref: str) -> Path:
    """A path, or the name of a shipped suite (``handbook`` → evals/suites/handbook.yaml)."""
    path = Path(ref)
    if path.exists():
        return path
    shipped = SUITES_DIR / f"{ref}.yaml"
    if shipped.exists():
        return shipped
    known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
    raise EvalError(f"no suite file {ref!r} (shipped suites: {known})", code=EvalError.EVAL_SUITE_NOT_FOUND)


def load_suite(ref: str | Path) -> Suite:
    path = find_suite(str(ref))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise EvalError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise EvalError(f"{path}: expected a mapping with name and cases")
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        raise EvalError(f"{path}: {_explain(exc)}") from exc
    suite._path = path.resolve()
    return suite


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors()[:8]:
        where = ".".join(str(p) for p in err["loc"])
        lines.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(lines)
