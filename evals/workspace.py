"""Where a run happens: the data dir, the ingested documents, and one Components per variant.

A suite that names documents (a folder, or a BEIR corpus) is ingested into a private
data dir, so an eval never touches the configured store; a suite that names only a
collection uses the configured data dir, as the server would. Variants share the
expensive, stateful objects (store, embedder, BM25 index, manifest, ledger, cache) and
rebuild only what their settings change (retriever, chat model, RAG service).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from app.bootstrap import Components
from app.errors import EvalError
from app.settings import Settings
from evals.beir import write_beir_corpus
from evals.suite import Suite
from vectorstore.embeddings import Embedder
from vectorstore.onnx_backend import OnnxEmbedder

log = logging.getLogger(__name__)

# Built once and shared by every variant; everything else is rebuilt from the variant's settings.
SHARED = ("store", "embedder", "manifest", "lexical", "db", "ledger", "cache", "embedding_cache", "prompts")


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``["retrieval.top_k=3"]`` → ``{"retrieval.top_k": 3}`` (values read as YAML scalars)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EvalError(
                f"--set {pair!r}: expected SECTION.NAME=VALUE, e.g. retrieval.top_k=3", code=EvalError.EVAL_USAGE
            )
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def with_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """A copy of ``settings`` with dotted-path fields replaced and validated (``llm.provider``)."""
    if not overrides:
        return settings
    data = settings.model_dump()
    for path, value in overrides.items():
        node = data
        parts = path.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise EvalError(f"unknown setting {path!r}", code=EvalError.EVAL_USAGE)
            node = node[part]
        if parts[-1] not in node:
            raise EvalError(f"unknown setting {path!r}", code=EvalError.EVAL_USAGE)
        node[parts[-1]] = value
    try:
        return type(settings).model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:4])
        raise EvalError(f"invalid setting override: {errors}", code=EvalError.EVAL_USAGE) from exc


def open_workspace(
    suite: Suite, settings: Settings, *, data_dir: Path | None, embedder: Embedder | OnnxEmbedder | None = None
) -> tuple[Components, dict[str, Any]]:
    """Components over the suite's documents (ingested if the suite names them) and what was done."""
    source = suite.documents_path()
    if source is None:
        components = Components(settings, embedder=embedder)
        if not components.store.exists(suite.collection):
            components.close()
            raise EvalError(
                f"suite {suite.name!r} uses collection {suite.collection!r}, which does not exist in "
                f"{settings.data_dir}; ingest it first (kb ingest PATH -c {suite.collection})",
                code=EvalError.EVAL_COLLECTION_MISSING,
            )
        return components, {"data_dir": str(settings.data_dir), "collection": suite.collection, "ingested": None}
    if data_dir is None:
        raise EvalError("a suite with documents needs a private data dir", code=EvalError.EVAL_USAGE)
    settings = with_overrides(settings, {"data_dir": str(data_dir)})
    components = Components(settings, embedder=embedder)
    folder = source
    if suite.corpus:
        folder = data_dir / "corpus" / source.name
        write_beir_corpus(source, folder)
    report = components.ingest_pipeline.ingest([folder], suite.collection, prune=True)
    if report.failed:
        log.warning("suite %s: %d documents failed to ingest: %s", suite.name, len(report.failed), report.failed[:3])
    info = {
        "data_dir": str(data_dir),
        "collection": suite.collection,
        "documents": str(source),
        "ingested": {"added": report.added, "updated": report.updated, "unchanged": report.unchanged,
                     "failed": len(report.failed), "chunks": components.store.count(suite.collection)},
    }  # fmt: skip
    return components, info


def variant_components(base: Components, settings: Settings) -> Components:
    """Components for one variant's settings, sharing the base's store, models and ledger."""
    if settings == base.settings:
        return base
    variant = Components(settings)
    for name in SHARED:
        variant.__dict__[name] = getattr(base, name)
    return variant


def release(variant: Components, base: Components) -> None:
    """Close what a variant opened itself, never what it shares with the base."""
    if variant is base:
        return
    for name in SHARED:
        variant.__dict__.pop(name, None)
    variant.close()
