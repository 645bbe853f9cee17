"""One contract, two backends: every test runs against embedded Chroma and a real Chroma server.

The server is a ``chroma run`` process on 127.0.0.1 (one per module); each test cleans
up its collections so tests stay independent while sharing it.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.chroma_server import ChromaServer, chroma_server
from tests.servers import free_port
from vectorstore.store import CollectionMissing, StoreUnavailable, VectorStore, internal_name

MODES = ["embedded", "http"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    with chroma_server(tmp_path_factory.mktemp("chroma")) as srv:
        yield srv


def _open(mode: str, tmp_path: Path, server: ChromaServer) -> VectorStore:
    if mode == "embedded":
        return VectorStore.embedded(tmp_path / "chroma")
    return VectorStore.http(server.host, server.port)


@pytest.fixture(params=MODES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    srv = request.getfixturevalue("server") if request.param == "http" else None
    vs = _open(request.param, tmp_path, srv)  # type: ignore[arg-type]
    yield vs
    for info in vs.list_collections():  # the server outlives the test
        vs.delete_collection(info.name)


@pytest.fixture
def twin(request: pytest.FixtureRequest, store: VectorStore, tmp_path: Path) -> VectorStore:
    """A second client of the same store: another replica (http) or another process's view (embedded)."""
    mode = request.node.callspec.params["store"]
    srv = request.getfixturevalue("server") if mode == "http" else None
    return _open(mode, tmp_path, srv)  # type: ignore[arg-type]


def _unit(*xs: float) -> list[float]:
    v = np.asarray(xs, dtype=np.float32)
    return (v / np.linalg.norm(v)).tolist()


def _fill(store: VectorStore, name: str = "hr") -> None:
    store.upsert(
        name,
        ids=["a#0", "a#1", "b#0"],
        embeddings=[_unit(1, 0, 0), _unit(0.9, 0.1, 0), _unit(0, 0, 1)],
        texts=["leave is 27 days", "leave carries over", "hotels up to 180 EUR"],
        metadatas=[
            {"document_id": "a", "source": "leave.md", "page": 1},
            {"document_id": "a", "source": "leave.md", "page": 2},
            {"document_id": "b", "source": "travel.md", "page": 1},
        ],
    )


def test_a_query_without_records_reads_them_later_for_the_hits_it_keeps(store: VectorStore) -> None:
    _fill(store)
    full = store.query("hr", _unit(1, 0, 0), k=3, with_embeddings=True)
    lean = store.query("hr", _unit(1, 0, 0), k=3, with_embeddings=True, with_records=False)
    assert [(h.id, h.score) for h in lean] == [(h.id, h.score) for h in full]
    assert all(h.text == "" and h.metadata == {} and h.embedding is not None for h in lean)
    records = store.get_records("hr", ["b#0", "a#0", "gone#9"])
    assert records == {
        "a#0": ("leave is 27 days", {"document_id": "a", "source": "leave.md", "page": 1}),
        "b#0": ("hotels up to 180 EUR", {"document_id": "b", "source": "travel.md", "page": 1}),
    }
    assert store.get_records("hr", []) == {}


def test_upsert_then_query_ranks_by_cosine_and_keeps_text_and_metadata(store: VectorStore) -> None:
    _fill(store)
    hits = store.query("hr", _unit(1, 0, 0), k=3)
    assert [h.id for h in hits] == ["a#0", "a#1", "b#0"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[2].score == pytest.approx(0.0, abs=1e-4)
    assert hits[0].text == "leave is 27 days"
    assert hits[0].metadata == {"document_id": "a", "source": "leave.md", "page": 1}
    assert hits[0].embedding is None
    with_vectors = store.query("hr", _unit(1, 0, 0), k=1, with_embeddings=True)
    assert np.allclose(with_vectors[0].embedding, _unit(1, 0, 0), atol=1e-6)


def test_upsert_is_idempotent_and_replaces(store: VectorStore) -> None:
    _fill(store)
    _fill(store)
    assert store.count("hr") == 3
    store.upsert("hr", ["b#0"], [_unit(1, 0, 0)], ["hotels up to 200 EUR"], [{"document_id": "b", "page": 9}])
    assert store.count("hr") == 3
    moved = {h.id: h for h in store.query("hr", _unit(1, 0, 0), k=3)}["b#0"]
    assert moved.score == pytest.approx(1.0, abs=1e-4)  # its vector was replaced
    assert moved.text == "hotels up to 200 EUR"
    assert moved.metadata["page"] == 9  # Chroma merges metadata keys on upsert: we always write all of them


def test_where_filters(store: VectorStore) -> None:
    _fill(store)
    only_b = store.query("hr", _unit(1, 0, 0), k=3, where={"document_id": "b"})
    assert [h.id for h in only_b] == ["b#0"]
    either = store.query("hr", _unit(1, 0, 0), k=3, where={"document_id": {"$in": ["a"]}})
    assert {h.id for h in either} == {"a#0", "a#1"}
    both = {"$and": [{"document_id": "a"}, {"page": {"$gte": 2}}]}
    assert store.get_ids("hr", both) == ["a#1"]
    assert sorted(store.get_ids("hr", None)) == ["a#0", "a#1", "b#0"]
    assert set(store.get_metadatas("hr", {"source": "travel.md"})) == {"b#0"}


def test_delete_chunks_and_collections(store: VectorStore) -> None:
    _fill(store)
    store.delete("hr", ["a#1", "missing-id"])
    assert sorted(store.get_ids("hr", None)) == ["a#0", "b#0"]
    assert store.get_embeddings("hr", ["a#1"]) == {}
    assert set(store.get_embeddings("hr", ["a#0", "b#0"])) == {"a#0", "b#0"}
    store.delete_collection("hr")
    assert not store.exists("hr")
    assert store.list_collections() == []
    with pytest.raises(CollectionMissing):
        store.query("hr", _unit(1, 0, 0), k=1)
    with pytest.raises(CollectionMissing):
        store.count("hr")
    with pytest.raises(CollectionMissing):
        store.delete_collection("hr")
    assert store.get_ids("hr", None) == [] and store.get_all("hr") == ([], [], [])


def test_user_names_map_to_valid_internal_names_and_list_back(store: VectorStore) -> None:
    names = ["hr", "HR", "Legal & Compliance", "Ünïcode — docs"]
    for i, name in enumerate(names):
        store.upsert(name, [f"c{i}"], [_unit(1, i, 0)], [f"text {i}"], [{"document_id": str(i)}])
    listed = store.list_collections()
    assert [c.name for c in listed] == sorted(names)
    assert all(c.chunks == 1 for c in listed)
    for info in listed:
        assert info.internal_name == internal_name(info.name)
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,510}[a-z0-9]", info.internal_name)
    assert store.exists("hr") and store.exists("HR") and not store.exists("Hr")
    with pytest.raises(ValueError, match="empty"):
        store.upsert("  ", ["x"], [_unit(1, 0, 0)], ["x"], [{"document_id": "x"}])


def test_a_second_client_sees_the_same_collections_and_names(store: VectorStore, twin: VectorStore) -> None:
    """Names live in Chroma itself, so another replica (or process) needs no side table."""
    _fill(store, "Legal & Compliance")
    assert [c.name for c in twin.list_collections()] == ["Legal & Compliance"]
    assert twin.query("Legal & Compliance", _unit(0, 0, 1), k=1)[0].id == "b#0"
    twin.delete_collection("Legal & Compliance")  # deleted and recreated behind the first client's back
    twin.upsert("Legal & Compliance", ["n#0"], [_unit(0, 0, 1)], ["new"], [{"document_id": "n"}])
    assert [h.id for h in store.query("Legal & Compliance", _unit(0, 0, 1), k=3)] == ["n#0"]


def test_batches_larger_than_the_server_limit(server: ChromaServer) -> None:
    """Upserts and deletes are split at the client's max batch size (HTTP only: ~5 s per backend)."""
    store = VectorStore.http(server.host, server.port)
    n = store._client.get_max_batch_size() + 7
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, 4)).astype(np.float32)
    ids = [f"id{i}" for i in range(n)]
    store.upsert("big", ids, vectors.tolist(), ["t"] * n, [{"document_id": str(i % 3)} for i in range(n)])
    assert store.count("big") == n
    store.delete("big", ids[:-1])
    assert store.get_ids("big", None) == [ids[-1]]
    store.delete_collection("big")


def test_reading_a_whole_collection_of_more_records_than_sqlite_has_variables(tmp_path: Path) -> None:
    """Chroma reads a get's metadata and texts with one SQLite variable per record (32,766 at most): a single get
    of 33,000 chunks failed whole, and with it `kb collections repair` and the BM25 backfill of any larger
    collection. The store reads such a collection in pages. (Embedded only: 2-d vectors keep it to seconds.)"""
    store = VectorStore.embedded(tmp_path / "chroma")
    n = 33_000
    ids = [f"c{i:05d}" for i in range(n)]
    vectors = np.random.default_rng(1).normal(size=(n, 2)).astype(np.float32).tolist()
    store.upsert(
        "big", ids, vectors, [f"text {i}" for i in range(n)], [{"document_id": f"d{i % 10}"} for i in range(n)]
    )
    all_ids, texts, metas = store.get_all("big")
    assert sorted(all_ids) == ids and len(set(all_ids)) == n
    assert {cid: (t, m["document_id"]) for cid, t, m in zip(all_ids, texts, metas, strict=True)} == {
        f"c{i:05d}": (f"text {i}", f"d{i % 10}") for i in range(n)
    }
    metadatas = store.get_metadatas("big", None)
    assert len(metadatas) == n and metadatas["c32999"] == {"document_id": "d9"}
    assert len(store.get_ids("big", {"document_id": {"$ne": "d0"}})) == n - n // 10


def test_an_upsert_in_small_calls_writes_every_chunk(tmp_path: Path) -> None:
    """The embedded store writes in calls of EMBEDDED_WRITE_SLICE chunks (Chroma's Rust code holds the GIL for a
    whole call); sliced at an odd size, an upsert and its replacement still land whole."""
    store = VectorStore(VectorStore.embedded(tmp_path / "chroma")._client, write_slice=7)
    ids = [f"c{i:02d}" for i in range(50)]
    vectors = np.random.default_rng(2).normal(size=(50, 3)).astype(np.float32).tolist()
    store.upsert("sliced", ids, vectors, [f"t{i}" for i in range(50)], [{"document_id": str(i)} for i in range(50)])
    store.upsert("sliced", ids[::2], vectors[::2], ["new"] * 25, [{"document_id": "new"}] * 25)
    got_ids, texts, metas = store.get_all("sliced")
    assert sorted(got_ids) == ids
    by_id = dict(zip(got_ids, zip(texts, metas, strict=True), strict=True))
    expected = {
        i: ("new", {"document_id": "new"}) if i % 2 == 0 else (f"t{i}", {"document_id": str(i)}) for i in range(50)
    }
    assert all(by_id[f"c{i:02d}"] == expected[i] for i in range(50))


def test_heartbeat(store: VectorStore) -> None:
    store.heartbeat()  # does not raise


def test_unreachable_server_is_reported_clearly() -> None:
    port = free_port()  # nothing listens here
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
        VectorStore.http("127.0.0.1", port)


def test_a_read_that_loses_the_server_after_the_collection_lookup_is_unavailable(server: ChromaServer) -> None:
    """CI once saw a paused server answer the collection lookup and then time out the search itself: the
    httpx.ReadTimeout escaped as a 500. Any read that loses the server is StoreUnavailable (a 503)."""
    store = VectorStore.http(server.host, server.port, timeout_s=0.5)
    _fill(store, "lost")
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens: the read's own request fails, as on a lost server

    def read_elsewhere(collection: object) -> object:
        return httpx.get(gone, timeout=0.5)

    store._handles.pop("lost", None)  # the lookup (_get) runs and succeeds; the read after it fails
    with pytest.raises(StoreUnavailable):
        store._read("lost", read_elsewhere)
    store.delete_collection("lost")


def test_a_hung_server_times_out_as_unavailable(server: ChromaServer) -> None:
    """chromadb's client would wait forever; ours gives up after timeout_s (the process is paused, not gone)."""
    store = VectorStore.http(server.host, server.port, timeout_s=0.5)
    _fill(store, "paused")
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.query("paused", _unit(1, 0, 0), k=1)
        with pytest.raises(StoreUnavailable):
            store.heartbeat()
        assert time.monotonic() - started < 5
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert store.query("paused", _unit(1, 0, 0), k=1)[0].id == "a#0"  # and recovers with the server
    store.delete_collection("paused")
