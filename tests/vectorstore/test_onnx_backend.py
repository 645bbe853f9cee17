"""The ONNX backends run the same model as sentence-transformers, offline, from local files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vectorstore.embeddings import load_embedder

TEXTS = [
    "Full-time employees receive 27 days of paid annual leave per calendar year.",
    "Acknowledge a page within 15 minutes, day or night.",
    "Hotels are reimbursed up to 180 EUR per night in capital cities.",
    "short",
]


@pytest.mark.parametrize(("backend", "min_cos"), [("onnx", 0.9999), ("onnx-int8", 0.85)])
def test_onnx_vectors_match_torch(backend: str, min_cos: float, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    onnx = load_embedder("all-MiniLM-L6-v2", backend=backend, cache_dir=tmp_path)
    assert onnx.name == f"all-MiniLM-L6-v2@{backend}"
    ours = np.array(onnx.embed_documents(TEXTS))
    ref = np.array(embedder.embed_documents(TEXTS))
    assert ours.shape == ref.shape == (4, 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-4)
    assert (ours * ref).sum(axis=1).min() >= min_cos
    # retrieval order is what matters: each text is still nearest to itself
    assert list((ours @ ref.T).argmax(axis=1)) == [0, 1, 2, 3]
    exported = sorted(tmp_path.rglob("model*.onnx"))
    before = {p: p.stat().st_mtime_ns for p in exported}
    # Another process (kb ask after kb ingest) must reuse the export, not make it again.
    code = (
        "import logging, sys, numpy as np; logging.basicConfig(level=logging.INFO, stream=sys.stdout); "
        "from vectorstore.embeddings import load_embedder; "
        "from pathlib import Path; "
        f"e = load_embedder('all-MiniLM-L6-v2', backend={backend!r}, cache_dir=Path({str(tmp_path)!r})); "
        f"print('VEC', e.embed_documents({TEXTS!r})[0][:4])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert "exporting" not in out, out  # the export logs "exporting ... to ONNX"
    assert {p: p.stat().st_mtime_ns for p in sorted(tmp_path.rglob("model*.onnx"))} == before
    vec = json.loads(out.split("VEC", 1)[1].strip())
    assert np.allclose(vec, ours[0][:4], atol=1e-6)


def test_models_the_onnx_backend_cannot_run_are_refused_clearly(tmp_path: Path) -> None:
    from vectorstore.onnx_backend import OnnxUnsupported, export

    model = tmp_path / "cls-model"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    with pytest.raises(OnnxUnsupported, match="does not use mean pooling"):
        export(model, tmp_path / "out", quantize=True)
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    with pytest.raises(OnnxUnsupported, match=r"no tokenizer\.json"):
        export(model, tmp_path / "out", quantize=True)


def test_a_texts_vector_does_not_depend_on_the_texts_embedded_with_it(tmp_path: Path) -> None:
    """Dynamic int8 quantization scales a run's activations by everything in the run: batched, a chunk's
    vector changed with its neighbours (and a query's never matched its own text ingested). Each text
    runs alone, so a text embeds the same alone, in any company, and as a query."""
    onnx = load_embedder("all-MiniLM-L6-v2", backend="onnx-int8", cache_dir=tmp_path)
    crowd = onnx.embed_documents([*TEXTS, "x " * 300, *(f"filler text number {i}" for i in range(40))])
    # truncated at the model's 256 tokens, as sentence-transformers does: 300 and 400 words embed alike
    assert crowd[len(TEXTS)] == onnx.embed_documents(["x " * 400])[0]
    for i, text in enumerate(TEXTS):
        alone = onnx.embed_documents([text])[0]
        assert np.array_equal(np.array(crowd[i]), np.array(alone))
        assert np.array_equal(np.array(onnx.embed_query(text)), np.array(alone))
