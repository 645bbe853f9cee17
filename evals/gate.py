"""Quality gates: thresholds a run must meet, or ``kb eval run --gate`` exits 1.

A thresholds file::

    metrics:                         # every variant must meet these
      fact_coverage: {min: 0.8}
      false_refusal_rate: {max: 0.1}
      latency_p95_ms: {max: 500}
    variants:                        # and a named variant these as well (they win on the same metric)
      answer@v2:
        fact_coverage: {min: 0.9}

A metric the run did not measure (``None``, e.g. the judge with the extractive provider)
fails the gate: a gate that silently passes on missing data guards nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.errors import EvalError
from evals.scoring import METRIC_KEYS, format_value

GATES_DIR = Path(__file__).parent / "gates"


class Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        return self


def _known(metrics: dict[str, Threshold]) -> dict[str, Threshold]:
    unknown = sorted(set(metrics) - set(METRIC_KEYS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRIC_KEYS)}")
    return metrics


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    metrics: dict[str, Threshold] = Field(default_factory=dict)
    variants: dict[str, dict[str, Threshold]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Gate:
        _known(self.metrics)
        for per_variant in self.variants.values():
            _known(per_variant)
        if not self.metrics and not self.variants:
            raise ValueError("a gate needs at least one threshold")
        return self

    def for_variant(self, name: str) -> dict[str, Threshold]:
        return {**self.metrics, **self.variants.get(name, {})}


@dataclass(frozen=True)
class Failure:
    variant: str
    metric: str
    value: float | None
    threshold: str

    def __str__(self) -> str:
        if self.metric == "variant":
            return f"{self.variant}: the gate names this variant but the run has none of that name"
        shown = "not measured" if self.value is None else format_value(self.metric, self.value)
        return f"{self.variant}: {self.metric} = {shown}, required {self.threshold}"


def load_gate(path: str | Path) -> Gate:
    p = Path(path)
    if not p.exists() and (GATES_DIR / f"{path}.yaml").exists():
        p = GATES_DIR / f"{path}.yaml"
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EvalError(f"no gate file {str(path)!r}", code=EvalError.EVAL_GATE_NOT_FOUND) from exc
    except yaml.YAMLError as exc:
        raise EvalError(f"{p}: invalid YAML ({exc})", code=EvalError.EVAL_GATE_INVALID) from exc
    try:
        return Gate.model_validate(raw or {})
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise EvalError(f"{p}: {msg}", code=EvalError.EVAL_GATE_INVALID) from exc


def check_gate(gate: Gate, results: dict[str, Any]) -> list[Failure]:
    """Every threshold every variant breaks (empty: the gate passes)."""
    names = {v["name"] for v in results["variants"]}
    missing = sorted(set(gate.variants) - names)
    failures = [Failure(n, "variant", None, "present in the run") for n in missing]
    for variant in results["variants"]:
        for metric, t in gate.for_variant(variant["name"]).items():
            value = variant["metrics"].get(metric)
            if value is None:
                failures.append(Failure(variant["name"], metric, None, _describe(t)))
            elif (t.min is not None and value < t.min) or (t.max is not None and value > t.max):
                failures.append(Failure(variant["name"], metric, value, _describe(t)))
    return failures


def _describe(t: Threshold) -> str:
    parts = []
    if t.min is not None:
        parts.append(f">= {t.min:g}")
    if t.max is not None:
        parts.append(f"<= {t.max:g}")
    return " and ".join(parts)
