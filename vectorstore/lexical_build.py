"""Building a collection's BM25 snapshot from the chunks table, in bounded memory, and keeping it on disk.

Why not ``bm25s.BM25.index`` on the whole corpus: it wants every chunk's tokens as Python lists at
once. At a million chunks that is ~70 million string objects (several GB) and minutes of pure Python
holding the GIL. Here rows stream from the database in batches; each batch's tokens become integer
ids and (document, term, count) triples in numpy; the BM25 weights are bm25s's own Lucene formulas
applied to whole arrays, and the result is a ``bm25s.BM25`` whose ``get_scores`` answers exactly as
one built by ``index`` (tests/vectorstore/test_lexical_snapshot.py compares them). Built beside it, one array per
field the query path filters on (document version, source, page, heading, section), so a filter is
a numpy mask and never a Python loop over a million metadata dicts.

A snapshot is saved as .npy/.json files in a directory named after its version and opened from them: a
restarted server opens a million-chunk index in a second instead of rebuilding it, and its large parts
stay in the kernel's page cache, read a few rows at a time (FileArray), not in the Python heap.
``build_to_disk`` is what a background build runs in a child process (vectorstore/lexical.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
from sqlalchemy import Engine, create_engine, select

from vectorstore.chunk_meta import ChunkMetadata, parsed_metadata
from vectorstore.tables import chunks, versions

NO_PAGE = np.iinfo(np.int32).min
_ROWS = 20_000  # rows per database batch
BM25_K1, BM25_B = 1.5, 0.75  # bm25s's defaults (the Lucene variant kb has always used)


def lucene_idf(n: int | np.ndarray, df: int | np.ndarray) -> np.ndarray:
    """BM25's IDF as bm25s's Lucene variant computes it (``_score_idf_lucene``): one formula for the build,
    the per-query coverage and the scoring of chunks newer than a snapshot."""
    return np.log(1 + (n - np.asarray(df) + 0.5) / (np.asarray(df) + 0.5))


@dataclass
class Snapshot:
    """Everything a query needs about a collection's chunks, as of one version of the chunks table."""

    collection: str
    version: int
    ids: np.ndarray  # chunk ids, sorted, dtype bytes ('S'): position lookups are a searchsorted
    retriever: bm25s.BM25 | None  # None when no chunk has an indexable word
    hash_codes: np.ndarray  # int32 per chunk → hashes (the document version a chunk belongs to)
    hashes: np.ndarray  # the distinct values, sorted bytes: a filter finds its codes by searchsorted
    source_codes: np.ndarray  # int32 per chunk → sources
    sources: np.ndarray
    pages: np.ndarray  # int32 per chunk, NO_PAGE when none
    heading_codes: np.ndarray  # int32 per chunk → headings ("" when none)
    headings: np.ndarray
    section_rows: np.ndarray  # int32 per chunk: its row of section_matrix if it heads a section, else -1
    section_matrix: np.ndarray  # float16, one row per section vector
    meta_offsets: np.ndarray  # int64, one more than chunks: chunk i's metadata JSON is meta_blob[o[i]:o[i+1]]
    meta_blob: np.ndarray  # uint8: the chunks' metadata JSON, concatenated (a chunk id's metadata never changes)
    avg_length: float = 0.0  # tokens per chunk (BM25's length norm for chunks newer than the snapshot; 0: unknown)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def positions(self, ids: list[str]) -> np.ndarray:
        """Row of each id, -1 when the snapshot does not hold it."""
        return find_sorted(self.ids, ids)

    def chunk_id(self, position: int) -> str:
        return bytes(self.ids[position]).decode()

    def metadata(self, position: int) -> ChunkMetadata:
        start, end = int(self.meta_offsets[position]), int(self.meta_offsets[position + 1])
        return parsed_metadata(self.meta_blob[start:end].tobytes())


def find_sorted(held: np.ndarray, values: list[str] | tuple[str, ...]) -> np.ndarray:
    """Index of each value in the sorted bytes array ``held``, -1 where absent (one searchsorted for all)."""
    result = np.full(len(values), -1, dtype=np.int64)
    if not len(values) or not len(held):
        return result
    encoded = [v.encode() for v in values]
    width = held.dtype.itemsize
    fits = np.array([len(e) <= width for e in encoded], dtype=bool)  # a longer value cannot be held (and
    wanted = np.array([e if ok else b"" for e, ok in zip(encoded, fits, strict=True)], dtype=held.dtype)  # would
    found = np.minimum(np.searchsorted(held, wanted), len(held) - 1)  # be truncated by the cast)
    hit = fits & (held[found] == wanted)
    result[hit] = found[hit]
    return result


def current_version(engine: Engine, collection: str) -> int:
    with engine.connect() as conn:
        found = conn.execute(select(versions.c.version).where(versions.c.collection == collection)).scalar()
    return int(found or 0)


def build(engine: Engine, collection: str) -> Snapshot:
    """The snapshot of the collection's rows (the version is read first: a write that lands while the rows
    stream is at worst in the snapshot already and built again, never missed under a newer label)."""
    version = current_version(engine, collection)
    c = chunks.c
    vocab: dict[str, int] = {}
    ids: list[bytes] = []
    docs_parts: list[np.ndarray] = []
    terms_parts: list[np.ndarray] = []
    tf_parts: list[np.ndarray] = []
    lengths: list[int] = []
    columns: dict[str, list[Any]] = {"hash": [], "source": [], "page": [], "heading": []}
    heads: list[tuple[int, bytes]] = []
    blobs: list[bytes] = []
    query = (
        select(c.chunk_id, c.tokens, c.metadata, c.section_vector)
        .where(c.collection == collection)
        .order_by(c.chunk_id)
    )
    # PostgreSQL: a server-side cursor needs a transaction (the shared engine autocommits), and one snapshot
    # of the table for the whole read; SQLite reads one snapshot per statement anyway
    reading = (
        engine.execution_options(isolation_level="REPEATABLE READ") if engine.dialect.name == "postgresql" else engine
    )
    with reading.connect() as conn, conn.begin():
        result = conn.execution_options(stream_results=True, yield_per=_ROWS).execute(query)
        for batch in result.partitions(_ROWS):
            start = len(ids)
            token_ids: list[int] = []
            for offset, (chunk_id, tokens, metadata, section_vector) in enumerate(batch):
                words = tokens.split()
                token_ids += [vocab.setdefault(w, len(vocab)) for w in words]
                lengths.append(len(words))
                ids.append(chunk_id.encode())
                meta = json.loads(metadata)
                blobs.append(metadata.encode())
                columns["hash"].append(str(meta.get("doc_hash", "")))
                columns["source"].append(str(meta.get("source", "")))
                page = meta.get("page")
                columns["page"].append(int(page) if isinstance(page, int) else NO_PAGE)
                columns["heading"].append(str(meta.get("heading") or ""))
                if section_vector:
                    heads.append((start + offset, section_vector))
            doc_of = np.repeat(np.arange(start, len(ids), dtype=np.int64), lengths[start:])
            keys, counts = np.unique((doc_of << 32) | np.asarray(token_ids, dtype=np.int64), return_counts=True)
            docs_parts.append((keys >> 32).astype(np.int32))
            terms_parts.append((keys & 0xFFFFFFFF).astype(np.int32))
            tf_parts.append(counts.astype(np.float32))
    n = len(ids)
    held = np.array(ids, dtype=f"S{max((len(i) for i in ids), default=1)}")
    hash_codes, hashes = _codes(columns["hash"])
    source_codes, sources = _codes(columns["source"])
    heading_codes, headings = _codes(columns["heading"])
    section_rows, section_matrix = _sections(heads, n)
    retriever = _retriever(docs_parts, terms_parts, tf_parts, np.asarray(lengths, dtype=np.float64), vocab)
    return Snapshot(
        collection, version, held, retriever, hash_codes, hashes, source_codes, sources,
        np.asarray(columns["page"], dtype=np.int32), heading_codes, headings, section_rows, section_matrix,
        np.concatenate([[0], np.cumsum([len(b) for b in blobs], dtype=np.int64)]).astype(np.int64),
        np.frombuffer(b"".join(blobs), dtype=np.uint8), avg_length=float(np.mean(lengths)) if lengths else 0.0,
    )  # fmt: skip


def _codes(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Dictionary encoding: a code per row, and the distinct values sorted (as bytes)."""
    distinct = sorted(set(values))
    table = {v: i for i, v in enumerate(distinct)}
    codes = np.fromiter((table[v] for v in values), dtype=np.int32, count=len(values))
    encoded = [v.encode() for v in distinct]
    return codes, np.array(encoded, dtype=f"S{max((len(e) for e in encoded), default=1)}")


def _sections(heads: list[tuple[int, bytes]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Section vectors of the most common length (another model's, or a truncated write, would make the whole
    matrix unreadable): rows of a float16 matrix, and each chunk's row in it."""
    rows = np.full(n, -1, dtype=np.int32)
    if not heads:
        return rows, np.zeros((0, 0), dtype=np.float16)
    sizes: dict[int, int] = {}
    for _, blob in heads:
        sizes[len(blob)] = sizes.get(len(blob), 0) + 1
    size = max(sizes, key=lambda s: sizes[s])
    kept = [(pos, blob) for pos, blob in heads if len(blob) == size]
    matrix = np.frombuffer(b"".join(blob for _, blob in kept), dtype=np.float16).reshape(len(kept), -1)
    rows[[pos for pos, _ in kept]] = np.arange(len(kept), dtype=np.int32)
    return rows, matrix


def _retriever(docs_parts: list[np.ndarray], terms_parts: list[np.ndarray], tf_parts: list[np.ndarray],
               lengths: np.ndarray, vocab: dict[str, int]) -> bm25s.BM25 | None:  # fmt: skip
    """A bm25s.BM25 holding the Lucene BM25 weight of every (chunk, term) pair, in bm25s's CSC layout."""
    n = len(lengths)
    if not vocab or n == 0:
        return None
    docs = np.concatenate(docs_parts)
    terms = np.concatenate(terms_parts)
    tf = np.concatenate(tf_parts).astype(np.float64)
    df = np.bincount(terms, minlength=len(vocab))
    idf = lucene_idf(n, df).astype(np.float32)
    avg = lengths.mean()
    tfc = tf / (BM25_K1 * ((1 - BM25_B) + BM25_B * lengths[docs] / avg) + tf)  # bm25s's _score_tfc_lucene
    weights = (idf[terms].astype(np.float64) * tfc).astype(np.float32)
    del tf, tfc
    order = np.argsort(terms, kind="stable")  # by term; chunks stay in order within a term
    indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B, method="lucene")
    retriever.scores = {"data": weights[order], "indices": docs[order], "indptr": indptr, "num_docs": n}
    retriever.vocab_dict = vocab
    retriever.nonoccurrence_array = None  # the Lucene variant has none
    return retriever


# --- on disk --------------------------------------------------------------------------------------

_ARRAYS = (
    "ids",
    "hash_codes",
    "hashes",
    "source_codes",
    "sources",
    "pages",
    "heading_codes",
    "headings",
    "section_rows",
    "section_matrix",
    "meta_offsets",
    "meta_blob",
)


def save(snapshot: Snapshot, directory: Path) -> Path:
    """Write the snapshot under ``directory/v<version>`` (atomically: a reader never sees half of one)."""
    final = directory / f"v{snapshot.version:012d}"
    if final.exists():
        return final
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        for name in _ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(snapshot, name))
        (tmp / "labels.json").write_text(
            json.dumps(
                {"collection": snapshot.collection, "version": snapshot.version, "avg_length": snapshot.avg_length}
            )
        )
        if snapshot.retriever is not None:
            snapshot.retriever.save(tmp / "bm25", show_progress=False)
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        # another process saved the same version first: renaming a directory onto one that exists fails with
        # ENOTEMPTY on Linux, not EEXIST (a restarted server's rebuild met its predecessor's, still running)
        if not (final / "labels.json").exists():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


_ON_DISK = ("meta_blob", "section_matrix")  # large and read a few rows per query: pread, not loaded


class FileArray:
    """A saved .npy array whose rows are read from the file when asked for (``a[i:j]``, ``a[[i, j]]``).

    Why not ``np.load(mmap_mode="r")``: queries read a few dozen scattered rows, and the kernel maps 64 KB
    around each (fault-around, whatever madvise says), so within a few hundred queries every page of a
    million-chunk snapshot (1.1 GB) counted in the server's RSS. Read with pread, the pages stay in the
    kernel's page cache (shared, reclaimable) and the process holds only what it asked for."""

    def __init__(self, path: Path):
        with path.open("rb") as f:
            major, _ = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(f)
            self._offset = f.tell()
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self._row = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice | list[int] | np.ndarray) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, _ = key.indices(self.shape[0])
            return self._rows(start, max(start, stop))
        rows = [self._rows(int(i), int(i) + 1) for i in key]
        return np.concatenate(rows) if rows else np.empty((0, *self.shape[1:]), dtype=self.dtype)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        data = os.pread(self._fd, (stop - start) * self._row, self._offset + start * self._row)
        return np.frombuffer(data, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


def load(path: Path) -> Snapshot:
    """A saved snapshot: the per-chunk columns in memory (~100 MB per million chunks), the metadata, section
    vectors and BM25 postings read from the files on demand (FileArray)."""
    labels = json.loads((path / "labels.json").read_text())
    arrays: dict[str, Any] = {
        name: FileArray(path / f"{name}.npy") if name in _ON_DISK else np.load(path / f"{name}.npy") for name in _ARRAYS
    }
    retriever = None
    if (path / "bm25").is_dir():
        retriever = bm25s.BM25.load(path / "bm25", mmap=True, show_progress=False, verbosity=0)
        retriever.scores["indptr"] = np.array(retriever.scores["indptr"])
        for key in ("data", "indices"):
            retriever.scores[key] = FileArray(path / "bm25" / f"{key}.csc.index.npy")
    return Snapshot(
        labels["collection"], int(labels["version"]), retriever=retriever, avg_length=labels.get("avg_length", 0.0),
        **arrays,
    )  # fmt: skip


def latest(directory: Path) -> Path | None:
    """The newest complete snapshot saved under ``directory``."""
    if not directory.is_dir():
        return None
    found = sorted(p for p in directory.iterdir() if p.name.startswith("v") and (p / "labels.json").exists())
    return found[-1] if found else None


def prune(directory: Path, keep: Path) -> None:
    """Delete the snapshots older than ``keep`` (a process still mapping one keeps its pages until it lets go)."""
    for path in directory.iterdir():
        if path.name.startswith("v") and path.name < keep.name:
            shutil.rmtree(path, ignore_errors=True)


def build_to_disk(url: str, collection: str, directory: str) -> str:
    """Entry point of a background build's child process: build from the database at ``url``, save, say where."""
    engine = create_engine(url)
    try:
        return str(save(build(engine, collection), Path(directory)))
    finally:
        engine.dispose()


def main() -> None:
    """``python -m vectorstore.lexical_build`` with ``{"url", "collection", "directory"}`` on stdin (the URL
    may hold a password: never on the command line): builds at low priority, prints the snapshot's path."""
    import sys

    job = json.loads(sys.stdin.read())
    os.nice(10)  # queries on the same cores come first
    print(build_to_disk(job["url"], job["collection"], job["directory"]))


if __name__ == "__main__":
    main()
