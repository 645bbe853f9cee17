"""The BM25 snapshot (vectorstore/lexical_build.py) and its background rebuilds (vectorstore/lexical_rebuild.py).

What a large collection needs and a small one never showed: the streamed build gives the scores bm25s's own
index gives, filters are masks equal to the per-chunk predicate, a write does not make the next query wait
for a rebuild (the previous snapshot answers while a child process builds), and a restarted process maps
the saved snapshot instead of building.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import bm25s
import numpy as np
import pytest

from vectorstore.filters import SearchFilters
from vectorstore.lexical import LexicalIndex
from vectorstore.lexical_build import FileArray, build, load, save
from vectorstore.lexical_scores import query_idf, score_snapshot
from vectorstore.tables import open_engine

DATA = Path(__file__).parents[1] / "data" / "gaps"


def _real_texts() -> list[str]:
    """The R and SQLite FAQ questions, two per chunk: 50 short real texts with shared and rare words."""
    lines = [ln for f in sorted(DATA.glob("*.txt")) for ln in f.read_text().splitlines() if ln.strip()]
    return [" ".join(lines[i : i + 2]) for i in range(0, len(lines), 2)]


def _meta(i: int, rng: random.Random) -> dict[str, object]:
    meta: dict[str, object] = {"document_id": f"d{i % 7}", "doc_hash": f"h{i % 7}-{i % 2}", "source": f"s{i % 5}.md"}
    if rng.random() < 0.7:
        meta["page"] = rng.randint(1, 9)
    if rng.random() < 0.5:
        meta["heading"] = rng.choice(["Install", "Usage", "FAQ"])
    return meta


@pytest.fixture()
def filled(tmp_path: Path) -> tuple[LexicalIndex, list[str], list[str], list[dict[str, object]]]:
    rng = random.Random(3)
    texts = _real_texts()
    ids = [f"c{i:03d}" for i in range(len(texts))]
    metas = [_meta(i, rng) for i in range(len(texts))]
    index = LexicalIndex(tmp_path / "kb.sqlite3")
    index.upsert("faq", ids, texts, metas)
    return index, ids, texts, metas


def test_streamed_build_scores_like_bm25s_own_index(filled: tuple) -> None:  # type: ignore[type-arg]
    index, ids, texts, _ = filled
    snapshot = build(index._engine, "faq")
    assert [snapshot.chunk_id(i) for i in range(len(snapshot))] == sorted(ids)
    reference = bm25s.BM25()
    reference.index(index.tokenize(texts), show_progress=False)
    order = np.argsort(ids)  # the snapshot holds chunks in id order
    assert snapshot.retriever is not None
    vocab = snapshot.retriever.vocab_dict
    assert set(vocab) == set(reference.vocab_dict) - {""}  # bm25s adds an empty token of its own
    for term in vocab:
        ours = snapshot.retriever.get_scores([term])
        theirs = reference.get_scores([term])[order]
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7, err_msg=term)


def test_top_k_and_coverage_are_those_of_every_chunk_scored_one_by_one(filled: tuple) -> None:  # type: ignore[type-arg]
    """The shortcuts of lexical_scores (a bool mask for the rows, partition's k-th value, coverage from the posting
    lists) against the plain definitions: each chunk's score, its share of the query's IDF, a full sort."""
    index, ids, texts, _ = filled
    snapshot = build(index._engine, "faq")
    assert snapshot.retriever is not None
    tokens = {cid: set(t) for cid, t in zip(ids, index.tokenize(texts), strict=True)}
    for query in ["current version of R", "how do I install packages on Windows", "sqlite database locked", "packages"]:
        terms = sorted(set(index.tokenize([query])[0]))
        scored = score_snapshot(snapshot, terms, prune=False)
        assert scored is not None
        idf, total = query_idf(snapshot, terms)
        full = snapshot.retriever.get_scores(terms)
        expected_rows = np.flatnonzero([bool(tokens[snapshot.chunk_id(i)] & set(terms)) for i in range(len(snapshot))])
        np.testing.assert_array_equal(scored.rows, expected_rows)
        np.testing.assert_allclose(scored.scores, full[expected_rows], rtol=1e-5)
        coverage = [sum(idf[t] for t in terms if t in tokens[snapshot.chunk_id(int(r))]) / total for r in scored.rows]
        np.testing.assert_allclose(scored.coverage(scored.rows), coverage, rtol=1e-5)
        for k in (1, 3, 10, len(scored.rows) + 5):
            by_hand = sorted(range(len(scored.rows)), key=lambda i: (-scored.scores[i], scored.rows[i]))[:k]
            assert scored.top(k).tolist() == by_hand, (query, k)
        keep = scored.rows % 2 == 0
        assert scored.top(4, keep).tolist() == [i for i in by_hand if keep[i]][:4]


def test_leaving_common_words_out_never_changes_the_top_k_or_a_chunks_score(filled: tuple) -> None:  # type: ignore[type-arg]
    """MaxScore (lexical_scores module doc): the chunks holding only a query's common words are left out when its
    k-th best candidate outscores what they can reach; the top k, with filters, and score_ids of every chunk
    are those of every chunk scored. Here a word in over 5 % of 50 chunks is common: most queries prune."""
    index, ids, texts, _ = filled
    snapshot = build(index._engine, "faq")
    assert snapshot.retriever is not None
    queries = [texts[3], texts[17], "how do I install packages on Windows", "sqlite database locked", "packages R",
               "what is the current version of R and SQLite", "file", "use the sqlite3 command line shell"]  # fmt: skip
    pruned_any = fell_back = 0
    rng = random.Random(5)
    for query in queries:
        terms = index.tokenize([query])[0]
        pruned, full = score_snapshot(snapshot, terms), score_snapshot(snapshot, terms, prune=False)
        assert pruned is not None and full is not None
        pruned_any += bool(pruned.common)
        outside = np.setdiff1d(full.rows, pruned.rows)
        assert set(pruned.rows.tolist()) <= set(full.rows.tolist())
        expected_outside = full.scores[np.searchsorted(full.rows, outside)]
        np.testing.assert_allclose(pruned.score_of(outside), expected_outside, rtol=1e-5)
        assert float(pruned.score_of(outside).max(initial=0)) <= pruned.bound + 1e-6
        for k in (1, 3, 5, 20):
            for f in (None, SearchFilters(("s1.md", "s3.md")), SearchFilters(page_min=rng.randint(2, 8))):
                expected = index._top(snapshot, query, k, f, keep_scores=False)
                keep = f.mask(snapshot, full.rows) if f is not None else None
                by_hand = [(float(full.scores[i]), snapshot.chunk_id(int(full.rows[i]))) for i in full.top(k, keep)]
                assert [(round(s, 4), c) for s, c, _, _ in expected] == [(round(s, 4), c) for s, c in by_hand]
                top = pruned.top(k, f.mask(snapshot, pruned.rows) if f is not None else None)
                if not pruned.exact(top, k):  # the second pass, with the first's k-th score, is exact
                    fell_back += 1
                    again = pruned.narrowed(pruned.threshold(top, k))
                    top = again.top(k, f.mask(snapshot, again.rows) if f is not None else None)
                    assert again.exact(top, k)
                    got = [(round(float(again.scores[i]), 4), snapshot.chunk_id(int(again.rows[i]))) for i in top]
                    assert got == [(round(s, 4), c) for s, c in by_hand]
        every = index.score_ids("faq", query, ids)
        for cid in ids:
            row = snapshot.positions([cid])[0]
            at = np.searchsorted(full.rows, row)
            want = float(full.scores[at]) if at < len(full.rows) and full.rows[at] == row else 0.0
            assert every[cid][0] == pytest.approx(want, rel=1e-5, abs=1e-9), (query, cid)
    assert pruned_any >= 4 and fell_back >= 1  # both paths ran


def test_a_filter_mask_is_the_per_chunk_predicate(filled: tuple) -> None:  # type: ignore[type-arg]
    index, ids, texts, metas = filled
    snapshot = build(index._engine, "faq")
    by_id = dict(zip(ids, metas, strict=True))
    cases = [
        SearchFilters(("s1.md", "s3.md")), SearchFilters(page_min=3), SearchFilters(page_max=4),
        SearchFilters(page_min=2, page_max=2), SearchFilters(heading="FAQ"), SearchFilters(heading="Nowhere"),
        SearchFilters(exclude_hashes=("h1-1", "h4-0", "never")), SearchFilters(("s0.md",), 1, 8, "Usage", ("h0-0",)),
        SearchFilters(("missing.md",)),
    ]  # fmt: skip
    assert all(snapshot.metadata(i) == by_id[snapshot.chunk_id(i)] for i in range(len(snapshot)))
    for f in cases:
        expected = [f.accept(by_id[snapshot.chunk_id(i)]) for i in range(len(snapshot))]
        assert f.mask(snapshot).tolist() == expected, f
        assert 0 < sum(expected) < len(expected) or f.heading == "Nowhere" or f.sources == ("missing.md",)
    wanted = SearchFilters(("s1.md",), page_min=3)
    query = next(text for text, meta in zip(texts, metas, strict=True) if wanted.accept(meta))
    hits = index.search("faq", query, 50, wanted)
    assert hits and all(h.metadata["source"] == "s1.md" and h.metadata.get("page", 0) >= 3 for h in hits)


def test_saved_snapshot_maps_back_identical(filled: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    index, *_ = filled
    snapshot = build(index._engine, "faq")
    path = save(snapshot, tmp_path / "cache")
    assert save(snapshot, tmp_path / "cache") == path  # a second save of one version is a no-op
    loaded = load(path)
    assert loaded.version == snapshot.version and len(loaded) == len(snapshot)
    assert isinstance(loaded.meta_blob, FileArray) and isinstance(loaded.section_matrix, FileArray)
    assert loaded.retriever is not None and snapshot.retriever is not None
    np.testing.assert_array_equal(loaded.retriever.get_scores(["version"]), snapshot.retriever.get_scores(["version"]))
    for name in ("hash_codes", "hashes", "sources", "pages", "headings", "section_rows", "meta_offsets"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(snapshot, name))
    assert all(loaded.metadata(i) == snapshot.metadata(i) for i in range(len(snapshot)))
    rows = [0, len(snapshot.section_matrix) - 1] if len(snapshot.section_matrix) else []
    np.testing.assert_array_equal(loaded.section_matrix[rows], snapshot.section_matrix[rows])
    np.testing.assert_array_equal(loaded.retriever.scores["data"][3:40], snapshot.retriever.scores["data"][3:40])
    np.testing.assert_array_equal(loaded.meta_blob[5:9], snapshot.meta_blob[5:9])


def test_a_save_that_races_another_process_for_the_same_version_keeps_theirs(
    filled: tuple,  # type: ignore[type-arg]
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restarted server's rebuild met its predecessor's, still running: the second rename failed (ENOTEMPTY)
    and the rebuild with it, leaving the server on the older snapshot until another query asked again."""
    index, *_ = filled
    snapshot = build(index._engine, "faq")
    theirs = save(snapshot, tmp_path / "other")
    final = tmp_path / "cache" / theirs.name
    write = np.save

    def other_process_finishes_first(path, array, **options):  # type: ignore[no-untyped-def]
        if not final.exists():
            shutil.copytree(theirs, final)
        write(path, array, **options)

    monkeypatch.setattr(np, "save", other_process_finishes_first)
    assert save(snapshot, tmp_path / "cache") == final
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [final.name]  # no temporary directory left
    assert load(final).version == snapshot.version


def _wait_for(predicate, seconds: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "the background rebuild never showed"
        time.sleep(0.2)


def test_a_write_never_makes_a_query_wait_for_a_large_rebuild(tmp_path: Path) -> None:
    """inline_below=1 makes the test's small collection "large": snapshots are built by a child process."""
    db, cache = tmp_path / "kb.sqlite3", tmp_path / "cache"
    texts = _real_texts()
    index = LexicalIndex(db, cache_dir=cache, inline_below=1, rebuild_pause_s=0)
    index.upsert(
        "faq", [f"c{i}" for i in range(len(texts))], texts, [{"document_id": "d", "doc_hash": "h"}] * len(texts)
    )
    assert [h.id for h in index.search("faq", "current version of R", 1)] == ["c1"]  # cold: built, then used
    assert index._rebuilds.builds == 1 and len(list(cache.iterdir())) == 1

    index.upsert("faq", ["zebra"], ["Zebra crossings are painted white."], [{"document_id": "z", "doc_hash": "z"}])
    # answered at once from the previous snapshot, beside which the rows written since are searched
    assert [h.id for h in index.search("faq", "zebra crossing", 5)] == ["zebra"]
    assert index._built["faq"].version < index._version("faq")
    _wait_for(lambda: index._built["faq"].version == index._version("faq"))  # the rebuild is swapped in
    assert [h.id for h in index.search("faq", "zebra crossing", 5)] == ["zebra"]
    assert index._rebuilds.builds == 2
    directory = index._rebuilds.directory("faq")
    _wait_for(lambda: len(list(directory.iterdir())) == 1)  # the older snapshot is pruned

    restarted = LexicalIndex(db, cache_dir=cache, inline_below=1)
    assert [h.id for h in restarted.search("faq", "zebra", 5)] == ["zebra"]
    assert restarted._rebuilds.builds == 0  # mapped from the cache, not built

    index.upsert("faq", ["yak"], ["A yak is a long-haired bovid."], [{"document_id": "y", "doc_hash": "y"}])
    again = LexicalIndex(db, cache_dir=cache, inline_below=1, rebuild_pause_s=0)
    assert [h.id for h in again.search("faq", "yak", 5)] == ["yak"]  # the saved snapshot and the rows since
    assert again._built["faq"].version < again._version("faq") and again._rebuilds.builds == 1  # rebuild asked
    _wait_for(lambda: again._built["faq"].version == again._version("faq"))
    assert [h.id for h in again.search("faq", "long-haired yak", 5)][:1] == ["yak"]


def test_a_chunk_written_since_the_snapshot_gets_its_bm25_evidence(tmp_path: Path) -> None:
    """Hybrid retrieval asks score_ids for the dense side's hits. While a large collection's rebuild runs, a new
    document's chunk is found by the dense side only: scored 0, it fused below older near-duplicates."""
    texts = _real_texts()
    index = LexicalIndex(tmp_path / "kb.sqlite3", cache_dir=tmp_path / "cache", inline_below=1, rebuild_pause_s=0)
    index.upsert(
        "faq", [f"c{i}" for i in range(len(texts))], texts, [{"document_id": "d", "doc_hash": "h"}] * len(texts)
    )
    assert index.search("faq", "current version of R", 1)  # the snapshot is built
    index.upsert("faq", ["zebra"], ["Zebra crossings are painted white."], [{"document_id": "z", "doc_hash": "z"}])
    # no search since the write: nothing has asked for a rebuild, the snapshot lacks "zebra"
    scores = index.score_ids("faq", "zebra crossing", ["zebra", "c1", "gone"])
    assert scores["zebra"][0] > 0 and scores["zebra"][1] == pytest.approx(1.0)
    assert scores["c1"] == (0.0, 0.0) and scores["gone"] == (0.0, 0.0)  # in the snapshot without the words; absent
    partly = index.score_ids("faq", "zebra version", ["zebra"])["zebra"]
    assert 0 < partly[0] < scores["zebra"][0] and 0 < partly[1] < 1  # "version" is a known word the chunk lacks
    release = index.score_ids("faq", "current version of R", ["zebra", "c1"])
    assert release["zebra"] == (0.0, 0.0) and release["c1"][0] > 0


def test_chunks_written_since_the_snapshot_are_searched_beside_it_with_its_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until a large collection's background rebuild is in (a minute at a million chunks), its new chunks are
    searched from the rows written since the snapshot, scored with the snapshot's IDF and average length.

    On a clock that started a minute ago, as time.monotonic() does on a machine booted a minute ago: the
    first background rebuild once waited for rebuild_pause_s counted from 0.0, i.e. from the boot."""
    booted = time.monotonic() - 60.0
    real_monotonic = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() - booted)
    texts = _real_texts()
    index = LexicalIndex(tmp_path / "kb.sqlite3", cache_dir=tmp_path / "cache", inline_below=1, rebuild_pause_s=3600)
    meta = {"document_id": "d", "doc_hash": "h", "source": "faq.md"}
    index.upsert("faq", [f"c{i:02d}" for i in range(len(texts))], texts, [meta] * len(texts))
    assert index.search("faq", texts[7], 3)[0].id == "c07"  # the snapshot is built
    index.upsert("faq", ["warm"], ["A first write."], [meta])
    index.search("faq", "first write", 1)  # asks for a rebuild, which runs at once (none ran before)
    _wait_for(lambda: index._built["faq"].version == index._version("faq"))
    built_at = index._built["faq"].version  # the next rebuild waits for rebuild_pause_s: an hour
    index.upsert("faq", ["copy"], [texts[7]], [{"document_id": "n", "doc_hash": "n1", "source": "new.md"}])
    hits = {h.id: h for h in index.search("faq", texts[7], 3)}
    assert set(hits) >= {"c07", "copy"} and hits["copy"].text == texts[7]
    assert hits["copy"].score == pytest.approx(hits["c07"].score, rel=1e-4)  # the same words score the same
    assert hits["copy"].coverage == pytest.approx(hits["c07"].coverage, rel=1e-4)
    assert hits["copy"].metadata["source"] == "new.md"
    assert [h.id for h in index.search("faq", texts[7], 3, SearchFilters(("new.md",)))] == ["copy"]
    assert "copy" not in {h.id for h in index.search("faq", texts[7], 3, SearchFilters(exclude_hashes=("n1",)))}
    assert index.score_ids("faq", texts[7], ["copy"])["copy"] == pytest.approx((hits["copy"].score, 1.0), rel=1e-4)

    index.upsert("faq", ["zebra"], ["Zebra crossings are painted white."], [{"document_id": "z", "doc_hash": "z"}])
    assert [h.id for h in index.search("faq", "zebra crossing", 5)] == ["zebra"]
    delta = index._deltas["faq"]
    assert [s.ids for s in delta.segments] == [["copy"], ["zebra"]]  # each read fetched only the new rows
    assert index._built["faq"].version == built_at and delta.through == index._version("faq")


def test_closing_the_index_stops_a_background_rebuild_in_flight(tmp_path: Path) -> None:
    """A stopped server's child build went on (a minute at a million chunks) beside its successor's start."""
    texts = _real_texts()
    index = LexicalIndex(tmp_path / "kb.sqlite3", cache_dir=tmp_path / "cache", inline_below=1, rebuild_pause_s=0)
    index.upsert(
        "faq", [f"c{i}" for i in range(len(texts))], texts, [{"document_id": "d", "doc_hash": "h"}] * len(texts)
    )
    index.search("faq", "current version of R", 1)
    index.upsert("faq", ["zebra"], ["Zebra crossings are painted white."], [{"document_id": "z", "doc_hash": "z"}])
    index.search("faq", "zebra", 1)  # asks for the rebuild: a child process starts
    deadline = time.monotonic() + 30
    while not index._rebuilds._children:
        assert time.monotonic() < deadline, "no child build started"
        time.sleep(0.005)
    child = next(iter(index._rebuilds._children))
    index.close()
    assert child.returncode is not None and child.returncode < 0  # killed, not finished
    assert not index._rebuilds._children


def test_small_collections_still_see_every_write_at_once(tmp_path: Path) -> None:
    index = LexicalIndex(tmp_path / "kb.sqlite3", cache_dir=tmp_path / "cache")  # default: inline below 50k
    index.upsert("c", ["a"], ["Passwords are rotated yearly."], [{"document_id": "a", "doc_hash": "a"}])
    assert [h.id for h in index.search("c", "password", 5)] == ["a"]
    index.upsert("c", ["b"], ["A password manager is provided."], [{"document_id": "b", "doc_hash": "b"}])
    assert {h.id for h in index.search("c", "password", 5)} == {"a", "b"}
    assert not (tmp_path / "cache").exists()  # nothing saved for a small collection


def test_the_cache_names_the_database(tmp_path: Path) -> None:
    one = LexicalIndex(open_engine(tmp_path / "one.sqlite3", ())[0], cache_dir=tmp_path / "cache")
    two = LexicalIndex(open_engine(tmp_path / "two.sqlite3", ())[0], cache_dir=tmp_path / "cache")
    assert one._rebuilds.directory("faq") != two._rebuilds.directory("faq")
    assert one._rebuilds.directory("faq") != one._rebuilds.directory("other")


def test_a_server_start_opens_every_collections_indexes(handbook_components) -> None:  # type: ignore[no-untyped-def]
    """What the API's start does (Components.warm): the first question finds the BM25 snapshot built."""
    c = handbook_components
    assert "handbook" not in c.lexical._built
    c.warm()
    assert "handbook" in c.lexical._built and len(c.lexical._built["handbook"]) == c.store.count("handbook")


def test_concurrent_hybrid_queries_score_once_each_and_at_most_a_few_at_a_time(
    filled: tuple,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hybrid query scores the collection once (search, then score_ids of the dense side's hits): with one shared
    slot, 20 concurrent queries evicted each other's and scored twice. Scoring allocates per-chunk arrays (~10 MB
    at a million chunks), so only a few run at once: 20 at a time had taken the server 600 MB over its steady
    RSS. score_snapshot is observed (counted, timed), not replaced."""
    import threading

    import vectorstore.lexical as lexical_module

    index, ids, texts, _ = filled
    calls: list[str] = []
    running = [0, 0]  # now, most at once
    guard = threading.Lock()
    real = lexical_module.score_snapshot

    def observed(built, terms, **options):  # type: ignore[no-untyped-def]
        with guard:
            running[0] += 1
            running[1] = max(running)
            calls.append(" ".join(terms))
        time.sleep(0.02)
        try:
            return real(built, terms, **options)
        finally:
            with guard:
                running[0] -= 1

    monkeypatch.setattr(lexical_module, "score_snapshot", observed)
    expected = {q: index.score_ids("faq", q, ids) for q in texts[:12]}
    calls.clear()
    for q in texts[:12]:  # one at a time: the scorings a query needs (twice when pruning cannot settle its top)
        index.search("faq", q, 5, keep_scores=True)
        index.score_ids("faq", q, ids)
    needed = len(calls)
    calls.clear()
    barrier = threading.Barrier(12)
    got: dict[str, dict[str, tuple[float, float]]] = {}

    def hybrid(query: str) -> None:
        index.search("faq", query, 5, keep_scores=True)
        barrier.wait()  # every thread has searched before any asks score_ids: one shared slot would miss 11 times
        got[query] = index.score_ids("faq", query, ids)

    threads = [threading.Thread(target=hybrid, args=(q,)) for q in texts[:12]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 12 <= len(calls) == needed  # score_ids used the search's scores on every thread
    assert got == expected
    assert running[1] <= max(2, len(os.sched_getaffinity(0)))
    assert not index._kept  # used and dropped: no thread keeps a snapshot's arrays alive
