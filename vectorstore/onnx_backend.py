"""A faster backend for the same embedding model: ONNX Runtime, optionally int8-quantized.

The embedding model is the bottleneck of ingestion. Exporting the transformer to ONNX
and quantizing its weights to int8 (dynamic quantization) runs the same model
several times faster on CPUs at equal retrieval quality (measured in
docs/benchmarks.md). The export runs once, from the local model files (no network),
and is cached under the data dir; tokenization uses the model's own tokenizer.json
through the ``tokenizers`` library. Only mean-pooled models (the sentence-transformers
default, including all-MiniLM-L6-v2) are supported; others stay on the torch backend.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


class OnnxUnsupported(RuntimeError):
    """The model cannot run on the ONNX backend (pooling, missing tokenizer.json, export failure)."""


def _fingerprint(model_dir: Path, quantize: bool) -> dict[str, Any]:
    """What the cached export was made from, in the exact shape it has after a JSON round trip.

    Lists, not tuples: the stamp is compared with what ``json.loads`` reads back, and a tuple
    never equals a list (that mismatch once made every process export the model again).
    """
    weights = [p for p in model_dir.glob("*.safetensors")] + [p for p in model_dir.glob("*.bin")]
    return {
        "model_dir": str(model_dir.resolve()),
        "weights": sorted([p.name, p.stat().st_size] for p in weights),
        "quantize": quantize,
        "format": 2,
    }


def _stamp_matches(stamp: Path, wanted: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(stamp.read_text()) == json.loads(json.dumps(wanted)))
    except (OSError, ValueError):
        return False


def _check_mean_pooling(model_dir: Path) -> int:
    pooling = model_dir / "1_Pooling" / "config.json"
    if pooling.exists() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", False):
        raise OnnxUnsupported(f"{model_dir} does not use mean pooling; use KB_EMBEDDING__BACKEND=torch")
    if not (model_dir / "tokenizer.json").exists():
        raise OnnxUnsupported(f"{model_dir} has no tokenizer.json; use KB_EMBEDDING__BACKEND=torch")
    config = model_dir / "sentence_bert_config.json"
    return int(json.loads(config.read_text()).get("max_seq_length", 256)) if config.exists() else 256


def export(model_dir: Path, out_dir: Path, *, quantize: bool) -> Path:
    """Export (and quantize) once; later calls return the cached file if the model is unchanged."""
    _check_mean_pooling(model_dir)
    target = out_dir / ("model_qint8.onnx" if quantize else "model.onnx")
    stamp = out_dir / "source.json"
    wanted = _fingerprint(model_dir, quantize)
    if target.exists() and _stamp_matches(stamp, wanted):
        return target
    log.info("exporting %s to ONNX%s (one-off, ~5 s)", model_dir.name, " int8" if quantize else "")
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # the weight-loading bar is noise in a log

    class _LastHidden(torch.nn.Module):
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        try:
            # Eager attention exports to plain MatMul/Softmax that ONNX Runtime fuses; the SDPA path
            # exports a slower graph (measured: int8 eager 32 vs SDPA 22 passages/s on 2 cores).
            hf_model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")
            model = _LastHidden(hf_model.eval())
            ids = torch.ones(2, 8, dtype=torch.long)
            axes = {name: {0: "batch", 1: "seq"} for name in [*_INPUTS, "last_hidden_state"]}
            with warnings.catch_warnings():  # tracer warnings about the mask branches are expected here
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(fp32), input_names=_INPUTS,
                    output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False,
                )  # fmt: skip
            built = fp32
            if quantize:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                built = Path(tmp) / "model_qint8.onnx"
                logging.disable(logging.INFO)  # the quantizer logs one INFO line per tensor on the root logger
                try:
                    quantize_dynamic(str(fp32), str(built), weight_type=QuantType.QInt8, per_channel=True)
                finally:
                    logging.disable(logging.NOTSET)
        except Exception as exc:  # any exporter failure means: stay on torch
            raise OnnxUnsupported(f"ONNX export of {model_dir} failed: {exc}") from exc
        # Every file lands by rename, so a process loading the export never reads a half-written one.
        shutil.copy(model_dir / "tokenizer.json", Path(tmp) / "tokenizer.json")
        os.replace(Path(tmp) / "tokenizer.json", out_dir / "tokenizer.json")
        os.replace(built, target)
        (Path(tmp) / "source.json").write_text(json.dumps(wanted))
        os.replace(Path(tmp) / "source.json", stamp)
    return target


class OnnxEmbedder:
    """Same interface as ``Embedder``: L2-normalised mean-pooled vectors.

    Each text runs on its own, unpadded, on a one-thread session, and ``embed_documents`` spreads
    the texts over one worker thread per core (ONNX Runtime releases the GIL and a session may be
    run from several threads at once). Measured on kb's chunks of the R manuals (2 cores,
    docs/benchmarks.md): 92 chunks/s against 55 for batches of 32 on a two-thread session. Padding
    and the threads' hand-offs inside each operator cost more than batching saves on a model this
    small. It also makes a text's vector independent of its neighbours: dynamic int8 quantization
    scales a run's activations by the whole batch, so a batched text's vector changed with the
    batch it fell in (cosine to torch: mean 0.9944 alone, 0.9941 in batches of 32; minimum 0.984
    against 0.977).
    """

    def __init__(
        self, model_dir: Path, cache_dir: Path, *, name: str, quantize: bool = True, batch_size: int = 32
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        max_len = _check_mean_pooling(model_dir)
        path = export(model_dir, cache_dir, quantize=quantize)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # parallel across texts instead (see the class docstring)
        options.log_severity_level = 3
        # No busy-waiting: on a shared or oversubscribed CPU spinning threads steal the cores the parser
        # thread and other processes need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(cache_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_len)
        self._tokenizer.no_padding()  # the model's tokenizer.json pads to 128; each text runs alone
        self._threads = _usable_cores()
        # its threads start on first use: a process that only embeds queries never has them
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="kb-embed")
        self.batch_size = batch_size  # the torch backend's setting; texts run one by one here
        self.name = f"{name}@onnx{'-int8' if quantize else ''}"
        self.dimension = len(self.embed_query("dimension probe"))
        log.info("loaded embedding model %s (%d dims) from %s", self.name, self.dimension, path)

    def _run(self, ids: list[int]) -> np.ndarray:
        if not ids:  # an empty text, with a tokenizer that adds no special tokens
            return np.zeros(self.dimension, dtype=np.float32)
        row = np.array([ids], dtype=np.int64)
        feed = {"input_ids": row, "attention_mask": np.ones_like(row), "token_type_ids": np.zeros_like(row)}
        hidden = self._session.run(None, {k: v for k, v in feed.items() if k in self._input_names})[0]
        vector: np.ndarray = hidden[0].mean(axis=0)  # no padding: every token counts
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        ids = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        runs = map(self._run, ids) if self._threads == 1 or len(ids) == 1 else self._pool.map(self._run, ids)
        return [vector.tolist() for vector in runs]

    def embed_query(self, text: str) -> list[float]:
        return self._run(self._tokenizer.encode(text).ids).tolist()  # type: ignore[no-any-return]


def _usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
