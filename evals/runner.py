"""Run a suite through the real RagService, once per variant, and collect per-case results.

Every case is answered by ``RagService.answer`` exactly as ``POST /chat`` answers it (same
settings, same prompt files, same retriever); a multi-turn case first asks its earlier
questions and passes them back as ``history``. Retrieval metrics use the ranked chunks for
the question retrieval actually searched (the condensed one for a follow-up), cost comes
from the usage ledger rows of the case's request ids, latency from the answer.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from app.bootstrap import Components
from app.errors import EvalError, KbError, PromptNotFoundError
from app.rag.answer import Answer
from app.rag.conversation import Turn
from app.rag.options import AskOptions
from evals import metrics as m
from evals.judge import Judge, is_generative
from evals.scoring import Grounding, aggregate, score_case, support_scores
from evals.suite import Case, Suite, VariantSpec
from evals.workspace import release, variant_components, with_overrides

log = logging.getLogger(__name__)

RESULTS_SCHEMA = 1
RANKED_K = 10  # chunks ranked per case for MRR and nDCG@10
ABORT_AFTER = 3  # a variant whose first cases all raise errors is misconfigured: stop it
Progress = Callable[[str, int, int, dict[str, Any]], None]


def plan_variants(
    suite: Suite,
    prompts: list[str] | None = None,
    providers: list[str] | None = None,
    sets: dict[str, Any] | None = None,
    only: list[str] | None = None,
) -> list[VariantSpec]:
    """Variants from the command line (prompts x providers), else the suite's (``only``: by name), else a default.

    ``sets`` apply to every variant (they win over a suite variant's own ``set``) and are not
    part of the names, since they do not tell variants apart.
    """
    if prompts or providers:
        by_prompt: list[str | None] = [*prompts] if prompts else [None]
        by_provider: list[str | None] = [*providers] if providers else [None]
        specs = [VariantSpec(prompt=p, provider=v) for p in by_prompt for v in by_provider]
    else:
        specs = list(suite.variants) or [VariantSpec()]
        if only:
            unknown = sorted(set(only) - {s.label() for s in specs})
            if unknown:
                known = ", ".join(s.label() for s in specs)
                raise EvalError(
                    f"suite {suite.name!r} has no variant {unknown} (it has: {known})", code=EvalError.EVAL_USAGE
                )
            specs = [s for s in specs if s.label() in only]
    out = [
        VariantSpec(name=s.label(), prompt=s.prompt, provider=s.provider, set={**s.set, **(sets or {})}) for s in specs
    ]
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise EvalError(f"variants must differ: {names}", code=EvalError.EVAL_USAGE)
    return out


class Measures:
    """What the evaluator computes besides the answers, cached across cases and variants.

    The ranked list comes from the variant's own retriever (its mode and fusion settings) with
    the query embedded once per distinct question; the answer path is never given a cached
    vector, so the latencies measured stay those of a real request.
    """

    def __init__(self, components: Components):
        self.embedder = components.embedder
        self.grounding = Grounding(components.embedder)  # type: ignore[arg-type]
        self._queries: dict[str, list[float]] = {}

    def ranked(self, components: Components, query: str, collection: str) -> list[m.Ranked]:
        if query not in self._queries:
            self._queries[query] = self.embedder.embed_query(query)
        hits = components.retriever.search(query, [collection], RANKED_K, query_vector=self._queries[query])
        return [m.Ranked(str(h.metadata.get("source", "")), h.metadata.get("page"), h.id, h.text) for h in hits]


class CaseRunner:
    def __init__(
        self, components: Components, suite: Suite, measures: Measures, *, use_cache: bool, judge: Judge | None,
        run_id: str,
    ):  # fmt: skip
        self.c = components
        self.suite = suite
        self.measures = measures
        self.grounding = measures.grounding
        self.use_cache = use_cache
        self.judge = judge
        self.run_id = run_id

    def _ask(self, question: str, spec: VariantSpec, rid: str, history: list[Turn]) -> Answer:
        options = AskOptions(prompt=spec.prompt, request_id=rid, use_cache=self.use_cache, history=tuple(history))
        return self.c.rag.answer(question, self.suite.collection, options)

    def run(self, case: Case, spec: VariantSpec, index: int) -> dict[str, Any]:
        rid = f"eval-{self.run_id}-{index}-{case.id}"
        result: dict[str, Any] = {
            "id": case.id, "question": case.question, "turns": list(case.turns), "unanswerable": case.unanswerable,
            "tags": list(case.tags), "request_ids": [], "error": None,
        }  # fmt: skip
        history: list[Turn] = []
        try:
            for t, earlier in enumerate(case.turns):
                result["request_ids"].append(f"{rid}-t{t}")
                prior = self._ask(earlier, spec, f"{rid}-t{t}", history)
                history.append(Turn(earlier, prior.answer, prior.standalone_question))
            result["request_ids"].append(rid)
            answer = self._ask(case.question, spec, rid, history)
            query = answer.standalone_question or case.question
            ranked = self.measures.ranked(self.c, query, self.suite.collection)
        except KbError as exc:
            log.warning("case %s failed: %s", case.id, exc.message)
            return {**result, "error": f"{exc.code}: {exc.message}", "answer": "", "refused": False, "passed": False,
                    "failures": [f"error {exc.code}"], "metrics": {}, "latency_ms": None, "cost_usd": None}  # fmt: skip
        return {**result, **self._score(case, answer, ranked, rid)}

    def _passage_texts(self, answer: Answer, ranked: list[m.Ranked]) -> list[str]:
        texts = {r.chunk_id: r.text for r in ranked}
        shown = [texts.get(str(r.get("chunk_id")), "") for r in answer.retrieved]
        if any(not t for t in shown):  # a passage outside the re-ranked list (should not happen): ask the store
            shown = [
                t or self._chunk_text(str(r.get("chunk_id"))) for t, r in zip(shown, answer.retrieved, strict=True)
            ]
        return shown

    def _chunk_text(self, chunk_id: str) -> str:
        ids, texts, _ = self.c.store.get_all(self.suite.collection)
        return dict(zip(ids, texts, strict=True)).get(chunk_id, "")

    def _score(self, case: Case, answer: Answer, ranked: list[m.Ranked], rid: str) -> dict[str, Any]:
        refused = not answer.grounded
        passages = self._passage_texts(answer, ranked)
        cited = [m.Ranked(c.source, c.page, c.chunk_id, passages[c.n - 1] or c.snippet)
                 for c in answer.citations if 1 <= c.n <= len(passages)]  # fmt: skip
        sims = None if refused else self.grounding.best_similarities(answer.answer, passages)
        k = self.c.rag.config.top_k
        scores, failures = score_case(
            case, answer.answer, refused, ranked, len(passages), cited, sims, k=k,
            threshold=self.suite.groundedness_threshold,
        )  # fmt: skip
        if (
            answer.sentences or answer.support.get("dropped") or answer.support.get("refused")
        ):  # an uncited answer is not "grounded", but it is checked
            scores.update(support_scores(answer.sentences, answer.support))
        verdict = None
        if self.judge is not None and not refused:
            verdict = self.judge.grade(case.question, passages, answer.answer, request_id=f"{rid}.judge",
                                       use_cache=self.use_cache)  # fmt: skip
            scores.update(judge_faithfulness=verdict.faithfulness, judge_relevance=verdict.relevance)
        return {
            "standalone_question": answer.standalone_question,
            "answer": answer.answer,
            "refused": refused,
            "prompt": answer.prompt,
            "provider": f"{answer.provider}/{answer.model}",
            "citations": [{"n": c.n, "source": c.source, "page": c.page, "chunk_id": c.chunk_id}
                          for c in answer.citations],
            "retrieved": [{"source": r.source, "page": r.page, "chunk_id": r.chunk_id} for r in ranked],
            "passages": len(passages),
            "similarities": sims,
            "judge": None if verdict is None else {"reason": verdict.reason},
            "support": answer.support,
            "unsupported": [{"text": s.text, "reason": s.reason, "score": s.score,
                             "quote": s.span.quote if s.span else None,
                             "suggested": s.suggested.n if s.suggested else None}
                            for s in answer.sentences if not s.supported],
            "metrics": scores,
            "passed": not failures,
            "failures": failures,
            "latency_ms": answer.latency_ms,
            "cost_usd": None,  # filled from the ledger after the variant's run
            "tokens": {"prompt": answer.usage.get("prompt_tokens", 0),
                       "completion": answer.usage.get("completion_tokens", 0)},
        }  # fmt: skip


def _costs(components: Components, cases: list[dict[str, Any]], since: float) -> float | None:
    """Per-case cost from the ledger (every attempt of every turn); returns the judge's total."""
    by_rid: dict[str, list[float | None]] = {}
    for row in components.ledger.rows(since):
        by_rid.setdefault(row["request_id"], []).append(row["cost_usd"])
    judge: list[float | None] = []
    for case in cases:
        rows = [c for rid in case["request_ids"] for c in by_rid.get(rid, [])]
        judge += [c for rid in case["request_ids"] for c in by_rid.get(f"{rid}.judge", [])]
        if case["error"] is None:
            case["cost_usd"] = None if any(c is None for c in rows) else float(sum(c or 0.0 for c in rows))
            case["ledger_rows"] = len(rows)
    return None if any(c is None for c in judge) else float(sum(c or 0.0 for c in judge))


def run_variant(
    base: Components, suite: Suite, spec: VariantSpec, *, run_id: str, use_cache: bool, judge: bool | None,
    measures: Measures | None = None, progress: Progress | None = None,
) -> dict[str, Any]:  # fmt: skip
    overrides = dict(spec.set)
    if spec.provider:
        overrides["llm.provider"] = spec.provider
    components = variant_components(base, with_overrides(base.settings, overrides))
    measures = measures or Measures(base)
    try:
        rag = components.rag
        if spec.prompt:
            try:
                components.prompts.get(spec.prompt)  # an unknown prompt fails before the first case
            except LookupError as exc:
                raise PromptNotFoundError(str(exc)) from exc
        use_judge = is_generative(components.chat_model) if judge is None else judge
        grader = Judge(components.chat_model, components.prompts) if use_judge else None
        runner = CaseRunner(
            components, suite, measures, use_cache=use_cache, judge=grader, run_id=f"{run_id}-{spec.name}"
        )
        # Warm up (embedding model, BM25 index, tokenizer, SQLite handles) so the first case is timed like the
        # others; a whole answer only where it is free, retrieval alone for a paid provider.
        warm = suite.cases[0].question
        with contextlib.suppress(KbError):  # a case that fails will say why itself
            if is_generative(components.chat_model):
                rag.search(warm, [suite.collection])
            else:
                rag.answer(warm, suite.collection, AskOptions(request_id=f"eval-{run_id}-warmup", use_cache=False))
        since = time.time() - 1
        cases = []
        for i, case in enumerate(suite.cases):
            cases.append(runner.run(case, spec, i))
            if progress:
                progress(str(spec.name), i + 1, len(suite.cases), cases[-1])
            if len(cases) == ABORT_AFTER and all(c["error"] for c in cases):  # misconfigured: say so once
                raise EvalError(f"variant {spec.name}: the first {ABORT_AFTER} cases all failed; the first "
                                f"with {cases[0]['error']}", code=EvalError.EVAL_VARIANT_FAILED)  # fmt: skip
        judge_cost = _costs(components, cases, since)
        s = components.settings
        seen = Counter(c["prompt"] for c in cases if c.get("prompt"))  # an A/B split may mix versions
        prompt = spec.prompt or ", ".join(seen) or s.prompts.answer
        return {
            "name": spec.name, "prompt": prompt, "prompts_seen": dict(seen), "provider": components.chat_model.provider,
            "model": components.chat_model.model, "set": spec.set, "top_k": rag.config.top_k,
            "retrieval_mode": s.retrieval.mode, "judge": grader.prompt_id if grader else None,
            "support_policy": s.support.policy, "support_threshold": s.support.threshold,
            "judge_cost_usd": judge_cost if grader else None, "metrics": aggregate(cases), "cases": cases,
        }  # fmt: skip
    finally:
        release(components, base)


def run_suite(
    suite: Suite, base: Components, variants: list[VariantSpec], *, use_cache: bool = False,
    judge: bool | None = None, progress: Progress | None = None, workspace: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The results document (see ``RESULTS_SCHEMA``): suite, machine, workspace, and one entry per variant."""
    run_id = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    measures = Measures(base)
    results = [
        run_variant(
            base, suite, spec, run_id=run_id, use_cache=use_cache, judge=judge, measures=measures, progress=progress
        )
        for spec in variants
    ]
    return {
        "schema": RESULTS_SCHEMA,
        "run_id": run_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "suite": {"name": suite.name, "path": str(suite.path or ""), "cases": len(suite.cases),
                  "collection": suite.collection, "groundedness_threshold": suite.groundedness_threshold},
        "machine": {"host": platform.node(), "python": platform.python_version(), "platform": platform.platform()},
        "workspace": workspace or {},
        "embedding": {"model": base.settings.embedding.model, "backend": base.settings.embedding.backend},
        "seconds": round(time.perf_counter() - started, 2),
        "variants": results,
    }  # fmt: skip
