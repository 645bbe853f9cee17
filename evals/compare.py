"""Compare two variants: metric deltas and the cases that flipped between pass and fail.

Used inside one run (the first variant is the baseline of the others) and across runs
(``kb eval compare A.json B.json``): with one variant in each file those two are compared,
otherwise variants are paired by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import EvalError
from evals.scoring import METRICS, format_value

# Changes this small read as "same": the third decimal of a share, 10 % of a latency, any cost change.
SAME_SHARE = 0.0005
SAME_LATENCY = 0.10


@dataclass(frozen=True)
class Delta:
    metric: str
    label: str
    before: float | None
    after: float | None
    higher_is_better: bool
    unit: str = ""

    @property
    def change(self) -> float | None:
        return None if self.before is None or self.after is None else self.after - self.before

    @property
    def verdict(self) -> str:
        """better / worse / same, or "" when either side was not measured."""
        change = self.change
        if change is None:
            return ""
        if self.unit == "ms":
            same = abs(change) <= SAME_LATENCY * abs(self.before or 0.0)
        else:
            same = abs(change) <= (SAME_SHARE if not self.unit else 1e-12)
        if same:
            return "same"
        return "better" if (change > 0) == self.higher_is_better else "worse"


@dataclass
class Comparison:
    before: str
    after: str
    deltas: list[Delta]
    regressions: list[dict[str, Any]] = field(default_factory=list)  # passed before, failed after
    fixes: list[dict[str, Any]] = field(default_factory=list)  # failed before, passed after
    only_before: list[str] = field(default_factory=list)
    only_after: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before, "after": self.after,
            "deltas": {d.metric: {"before": d.before, "after": d.after, "change": d.change, "verdict": d.verdict}
                       for d in self.deltas},
            "regressions": [c["id"] for c in self.regressions], "fixes": [c["id"] for c in self.fixes],
            "only_before": self.only_before, "only_after": self.only_after,
        }  # fmt: skip


def compare_variants(a: dict[str, Any], b: dict[str, Any], a_name: str = "", b_name: str = "") -> Comparison:
    deltas = [Delta(d.key, d.label, a["metrics"].get(d.key), b["metrics"].get(d.key), d.higher_is_better, d.unit)
              for d in METRICS]  # fmt: skip
    cmp = Comparison(a_name or a["name"], b_name or b["name"], deltas)
    before = {c["id"]: c for c in a["cases"]}
    after = {c["id"]: c for c in b["cases"]}
    for cid, case in after.items():
        old = before.get(cid)
        if old is None:
            cmp.only_after.append(cid)
        elif old["passed"] and not case["passed"]:
            cmp.regressions.append({"id": cid, "question": case["question"], "before": old, "after": case})
        elif not old["passed"] and case["passed"]:
            cmp.fixes.append({"id": cid, "question": case["question"], "before": old, "after": case})
    cmp.only_before = [cid for cid in before if cid not in after]
    return cmp


def load_results(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EvalError(f"no results file {str(path)!r}", code=EvalError.EVAL_RESULTS_NOT_FOUND) from exc
    except ValueError as exc:
        raise EvalError(f"{path}: not a JSON results file ({exc})", code=EvalError.EVAL_RESULTS_INVALID) from exc
    if not isinstance(data, dict) or not isinstance(data.get("variants"), list) or "schema" not in data:
        raise EvalError(f"{path}: not a kb eval results file (kb eval run --json)", code=EvalError.EVAL_RESULTS_INVALID)
    return data


def compare_runs(
    a: dict[str, Any], b: dict[str, Any], variant: str | None = None, labels: tuple[str, str] = ("A", "B")
) -> list[Comparison]:
    """Pairs of variants across two results files; ``labels`` name the files in the headings."""
    va, vb = a["variants"], b["variants"]

    def pair(x: dict[str, Any], y: dict[str, Any]) -> Comparison:
        return compare_variants(x, y, f"{x['name']} ({labels[0]})", f"{y['name']} ({labels[1]})")

    if variant is not None:
        pick_a = [v for v in va if v["name"] == variant]
        pick_b = [v for v in vb if v["name"] == variant]
        if not pick_a or not pick_b:
            raise EvalError(f"variant {variant!r} is not in both files", code=EvalError.EVAL_USAGE)
        return [pair(pick_a[0], pick_b[0])]
    if len(va) == 1 and len(vb) == 1:
        return [pair(va[0], vb[0])]
    by_name = {v["name"]: v for v in va}
    pairs = [pair(by_name[v["name"]], v) for v in vb if v["name"] in by_name]
    if not pairs:
        raise EvalError("the two files share no variant name; name one with --variant", code=EvalError.EVAL_USAGE)
    return pairs


def signed(metric: str, change: float | None) -> str:
    if change is None:
        return "—"
    sign = "+" if change >= 0 else "−"
    return sign + format_value(metric, abs(change))


def comparison_markdown(cmp: Comparison) -> str:
    lines = [f"### {cmp.before} → {cmp.after}", "", "| metric | before | after | change | |", "|---|---|---|---|---|"]
    for d in cmp.deltas:
        if d.before is None and d.after is None:
            continue
        mark = {"better": "▲ better", "worse": "▼ worse"}.get(d.verdict, "")
        lines.append(f"| {d.label} | {format_value(d.metric, d.before)} | {format_value(d.metric, d.after)} | "
                     f"{signed(d.metric, d.change)} | {mark} |")  # fmt: skip
    lines.append("")
    if not cmp.regressions and not cmp.fixes:
        lines.append("No case flipped between pass and fail.")
    for title, cases in (("pass → fail", cmp.regressions), ("fail → pass", cmp.fixes)):
        if cases:
            lines.append(f"**{title}** ({len(cases)}):")
            for c in cases:
                failed = c["after"] if title == "pass → fail" else c["before"]
                why = "; ".join(failed["failures"]) or "—"
                lines.append(f"- `{c['id']}` {c['question']} — {why}")
    if cmp.only_before or cmp.only_after:
        lines.append(f"Cases in one run only: {', '.join(cmp.only_before + cmp.only_after)}")
    return "\n".join(lines)
