"""An embedded Chroma store read by one process while another writes it (a server beside `kb ingest`).

Not the supported set-up (docs/operations.md: one process per embedded store; `kb ingest --queue` hands
files to the server): the reader's Chroma sees the other process's records but not its vectors until it
restarts, and a `get` or `query` naming such a chunk failed whole ("Error finding id": a 500 for every
search of the collection during the ingestion, seen in bench/scale.py). Reads must leave such chunks out.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from vectorstore.store import VectorStore

_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from vectorstore.store import VectorStore
    store = VectorStore.embedded(sys.argv[1])
    rng = np.random.default_rng(1)
    for batch in range(40):
        ids = [f"w{batch}-{i}" for i in range(50)]
        vectors = rng.normal(size=(50, 32)).astype("float32")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.upsert("c", ids, vectors.tolist(), [f"text {i}" for i in ids], [{"document_id": i} for i in ids])
    """
)


def test_reads_beside_another_process_writing_never_fail(tmp_path: Path) -> None:
    store = VectorStore.embedded(tmp_path)
    rng = np.random.default_rng(0)
    first = rng.normal(size=(20, 32)).astype("float32")
    store.upsert("c", [f"r{i}" for i in range(20)], first.tolist(), ["t"] * 20, [{"document_id": "r"}] * 20)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], cwd=Path(__file__).parents[2])
    reads = 0
    try:
        while writer.poll() is None or reads < 20:
            query = rng.normal(size=32).astype("float32")
            hits = store.query("c", query.tolist(), 40, with_embeddings=True, with_records=True)
            assert all(h.embedding is not None and h.text for h in hits)
            wanted = [h.id for h in hits] + [f"w{b}-{i}" for b in range(40) for i in (0, 49)]
            vectors = store.get_embeddings("c", wanted)
            records = store.get_records("c", wanted)
            assert all(v.shape == (32,) for v in vectors.values()) and set(records) <= set(wanted)
            reads += 1
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0 and reads >= 20
    written = [f"w{b}-{i}" for b in range(40) for i in range(50)]
    assert len(store.get_records("c", written)) == 2000  # the records are there; the vectors come with a restart
