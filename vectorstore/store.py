"""Chroma collections behind a small interface: upsert, query, get, delete.

Users name collections freely ("hr", "Legal & Compliance"); Chroma only accepts
3-512 characters of ``[a-zA-Z0-9._-]``. We keep the user's name in the collection's
metadata (``kb_name``) and derive a valid, stable internal name from it.
We always pass our own embeddings: Chroma's default embedding function would
download a model and fails offline.

Two modes share every line below the constructors: ``embedded`` (a PersistentClient
under the data dir, one process) and ``http`` (a Chroma server, shared by replicas).
The user-facing name lives in the collection's own metadata, i.e. inside Chroma, so
every replica talking to one server sees the same names with no side table to sync.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import chromadb
import httpx
import numpy as np
import numpy.typing as npt
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings as ChromaSettings

from vectorstore.chunk_meta import ChunkMetadata, Where, as_metadata

Vector = npt.NDArray[np.float32]  # one chunk's embedding, as the store hands it back

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 100
T = TypeVar("T")
EMBEDDED_WRITE_SLICE = 64  # chunks per embedded Chroma call: see VectorStore.__init__


class CollectionMissing(LookupError):
    """The named collection does not exist in the store."""


class StoreUnavailable(ConnectionError):
    """The Chroma server cannot be reached (or refused our credentials)."""


class StoreNotWritable(OSError):
    """The store answers reads but refuses writes (read-only files, a full disk, an I/O error)."""


# How Chroma (SQLite underneath, embedded or in the server) words a store that cannot be written.
_UNWRITABLE = re.compile(
    r"readonly|read-only|disk I/O error|disk is full|No space left|Permission denied|File too large|"
    r"\(code: (8|10|13|778|1032)\)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Hit:
    id: str
    text: str
    metadata: ChunkMetadata
    score: float  # cosine similarity in [-1, 1]
    embedding: Vector | None = field(default=None, repr=False, compare=False)  # when asked for


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    internal_name: str
    chunks: int


def validate_collection_name(name: str) -> str:
    """Return the trimmed name or raise ValueError with a message a user can act on."""
    trimmed = name.strip()
    if not trimmed:
        raise ValueError("collection name must not be empty")
    if len(trimmed) > MAX_NAME_LENGTH:
        raise ValueError(f"collection name is longer than {MAX_NAME_LENGTH} characters")
    if any(ord(ch) < 32 for ch in trimmed):
        raise ValueError("collection name must not contain control characters")
    return trimmed


def internal_name(name: str) -> str:
    """Stable Chroma-valid name: ``kb-<slug>-<hash>``; the hash keeps "HR" and "hr" apart."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:10]
    return f"kb-{slug}-{digest}" if slug else f"kb-{digest}"


def _catching_up(exc: Exception) -> bool:
    """Chroma's error for a chunk its reader has not caught up with yet (written by another process)."""
    return "Error finding id" in str(exc)


def _set_timeout(client: ClientAPI, seconds: float) -> None:
    """chromadb exposes no timeout setting: set it on the httpx session its HTTP client uses."""
    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(seconds, connect=min(seconds, 5.0))
    else:  # a chromadb upgrade moved it: say so rather than silently waiting forever
        log.warning("cannot set a timeout on this chromadb version's HTTP client; calls may wait indefinitely")


class VectorStore:
    def __init__(self, client: ClientAPI, *, location: str = "embedded", write_slice: int | None = None):
        """``write_slice``: chunks per Chroma call of an upsert (None: the client's max batch size). The
        embedded client's Rust code holds the GIL for a whole call, so every other thread of the process
        (a server's queries, while it ingests) waits for it: 1,031 ms for a 5,000-chunk upsert measured,
        queries of 1.6-3.0 s during a server's ingestion at 1M chunks. Small calls bound that wait."""
        self._client = client
        self._write_slice = write_slice
        self.location = location  # for logs and readiness checks: a path or a URL, never a secret
        self._handles: dict[str, Collection] = {}  # for the query path: a lookup costs milliseconds
        self.write_error: str | None = None  # the last write's failure, until a write succeeds (readiness)

    def _read(self, name: str, fn: Callable[[Collection], T]) -> T:
        """Run a read on a cached collection handle; refetch once if the collection was replaced. A server
        that stops answering is StoreUnavailable from either call (CI saw the refetch succeed and the read
        after it time out, as a bare httpx.ReadTimeout)."""
        with self._reachable():
            handle = self._handles.get(name)
            if handle is not None:
                try:
                    return fn(handle)
                except Exception:  # deleted (and maybe recreated) by another process: look it up again
                    self._handles.pop(name, None)
            handle = self._get(name)
            result = fn(handle)
            self._handles[name] = handle
            return result

    @classmethod
    def embedded(cls, path: str | Path) -> VectorStore:
        Path(path).mkdir(parents=True, exist_ok=True)
        # Chroma creates its tables on first open without a lock of its own: two processes opening a
        # new store at once (two `kb ingest`, a server and an ingest) fail with "table collections
        # already exists". Opening takes turns; using the store afterwards does not.
        with (Path(path) / ".kb-open.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            client = chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
        return cls(client, location=str(path), write_slice=EMBEDDED_WRITE_SLICE)

    @classmethod
    def http(
        cls,
        host: str,
        port: int,
        *,
        ssl: bool = False,
        headers: dict[str, str] | None = None,
        tenant: str = "default_tenant",
        database: str = "default_database",
        timeout_s: float | None = 30.0,
    ) -> VectorStore:
        """A client of a Chroma server (``chroma run``); checks the server answers before returning.

        chromadb's HTTP client waits forever by default; ``timeout_s`` bounds every call so a
        hung server becomes StoreUnavailable (a 503) instead of a hung request.
        """
        url = f"{'https' if ssl else 'http'}://{host}:{port}"
        try:
            client = chromadb.HttpClient(
                host=host,
                port=port,
                ssl=ssl,
                headers=headers or None,
                settings=ChromaSettings(anonymized_telemetry=False),
                tenant=tenant,
                database=database,
            )
        except Exception as exc:  # chroma raises ValueError for "could not connect" and auth failures alike
            raise StoreUnavailable(f"cannot use the Chroma server at {url}: {exc}") from exc
        if timeout_s is not None:
            _set_timeout(client, timeout_s)
        log.info("vector store: Chroma server at %s (tenant %s, database %s)", url, tenant, database)
        return cls(client, location=url)

    def heartbeat(self) -> None:
        """Raise StoreUnavailable unless the store answers a cheap read (readiness checks)."""
        try:
            self._client.heartbeat()
            self._client.count_collections()  # a heartbeat alone passes even with a wrong tenant/token
        except Exception as exc:
            raise StoreUnavailable(f"vector store at {self.location} does not answer: {exc}") from exc

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """A Chroma server that stops answering is an outage (503), never "collection not found"."""
        try:
            yield
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"vector store at {self.location} does not answer: {exc}") from exc

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write the store refuses becomes StoreNotWritable naming the cause, and readiness fails until one works."""
        try:
            with self._reachable():
                yield
        except (StoreUnavailable, CollectionMissing):
            raise
        except Exception as exc:
            if not _UNWRITABLE.search(str(exc)):
                raise
            self.write_error = f"the vector store at {self.location} cannot be written: {exc}"
            raise StoreNotWritable(self.write_error) from exc
        self.write_error = None

    def _get(self, name: str) -> Collection:
        with self._reachable():
            try:
                return self._client.get_collection(internal_name(name), embedding_function=None)
            except httpx.TransportError:
                raise
            except Exception as exc:  # chroma raises NotFoundError/ValueError across versions
                raise CollectionMissing(name) from exc

    def _get_or_create(self, name: str) -> Collection:
        with self._reachable():
            return self._client.get_or_create_collection(
                internal_name(validate_collection_name(name)),
                metadata={"kb_name": name.strip()},
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=None,
            )

    def exists(self, name: str) -> bool:
        try:
            self._get(name)
        except CollectionMissing:
            return False
        return True

    def list_collections(self) -> list[CollectionInfo]:
        result = []
        with self._reachable():
            for col in self._client.list_collections():
                meta = col.metadata or {}
                if "kb_name" in meta:
                    result.append(CollectionInfo(str(meta["kb_name"]), col.name, col.count()))
        return sorted(result, key=lambda c: c.name)

    def count(self, name: str) -> int:
        return self._get(name).count()

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]],
        texts: Sequence[str],
        metadatas: Sequence[ChunkMetadata],
    ) -> None:
        if not ids:
            return
        collection = self._get_or_create(name)
        step = min(self._write_slice or self._client.get_max_batch_size(), self._client.get_max_batch_size())
        for start in range(0, len(ids), step):
            end = start + step
            with self._writing():
                collection.upsert(
                    ids=list(ids[start:end]),
                    embeddings=[list(e) for e in embeddings[start:end]],  # type: ignore[arg-type]
                    documents=list(texts[start:end]),
                    metadatas=list(metadatas[start:end]),  # type: ignore[arg-type]  # ChunkMetadata is a Mapping
                )

    def get_ids(self, name: str, where: Where | None) -> list[str]:
        """Chunk ids matching a metadata filter (empty when the collection is missing)."""
        try:
            collection = self._get(name)
        except CollectionMissing:
            return []
        return list(self._get_pages(collection, where, [])["ids"])

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are in the collection (a by-id lookup; none when the collection is missing)."""
        if not ids:
            return set()
        try:
            collection = self._get(name)
        except CollectionMissing:
            return set()
        step = self._client.get_max_batch_size()
        found: set[str] = set()
        for start in range(0, len(ids), step):
            found.update(collection.get(ids=list(ids[start : start + step]), include=[])["ids"])
        return found

    def get_metadatas(self, name: str, where: Where | None) -> dict[str, ChunkMetadata]:
        try:
            collection = self._get(name)
        except CollectionMissing:
            return {}
        got = self._get_pages(collection, where, ["metadatas"])
        return {cid: as_metadata(meta) for cid, meta in zip(got["ids"], got["metadatas"], strict=True)}

    def _get_pages(self, collection: Collection, where: Where | None, include: list[Any]) -> dict[str, list[Any]]:
        """``get`` of every record matching ``where``, a page of the client's max batch size at a time: Chroma
        reads a page's metadata and texts with one SQL variable per record, and SQLite takes 32,766, so a
        single ``get`` of a collection of 33,000 chunks or more failed whole ("too many SQL variables":
        `kb collections repair` and the BM25 backfill of large collections). Pages follow Chroma's record
        order: a record deleted meanwhile can shift one past a page boundary (the callers sweep or rebuild,
        and the next run sees it)."""
        step = self._client.get_max_batch_size()
        pages: dict[str, list[Any]] = {"ids": [], **{key: [] for key in include}}
        while True:
            got: dict[str, Any] = dict(
                collection.get(where=where or None, include=include, limit=step, offset=len(pages["ids"]))
            )
            pages["ids"] += got["ids"]
            for key in include:
                pages[key] += got[key] or [None] * len(got["ids"])
            if len(got["ids"]) < step:
                return pages

    def delete(self, name: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        collection = self._get(name)
        step = self._client.get_max_batch_size()
        for start in range(0, len(ids), step):
            with self._writing():
                collection.delete(ids=list(ids[start : start + step]))

    def delete_collection(self, name: str) -> None:
        self._handles.pop(name, None)
        self._get(name)  # raises CollectionMissing with the user's name
        self._client.delete_collection(internal_name(name))

    def _get_ids(self, name: str, ids: Sequence[str], include: list[Any]) -> Any:
        """``get`` by ids; while this process's Chroma catches up with another process's writes (an embedded
        store that a ``kb ingest`` writes to beside the server), a batch naming a chunk it cannot resolve yet
        fails whole ("Error finding id"): then each id is read on its own and the unresolvable ones are left
        out, as chunks not written yet."""
        try:
            return self._read(name, lambda c: c.get(ids=list(ids), include=include))
        except Exception as exc:
            if not _catching_up(exc):
                raise
        merged: dict[str, list[Any]] = {"ids": [], **{part: [] for part in include}}
        skipped = 0
        for cid in ids:
            try:
                one = self._read(name, lambda c, cid=cid: c.get(ids=[cid], include=include))  # type: ignore[misc]
            except Exception as exc:
                if not _catching_up(exc):
                    raise
                skipped += 1
                continue
            merged["ids"] += one["ids"]
            for part in include:
                merged[part] += list(one[part]) if one[part] is not None else [None] * len(one["ids"])
        log.info("%d of %d chunks of %r are not readable yet (another process's write): left out", skipped,
                 len(ids), name)  # fmt: skip
        return merged

    def get_embeddings(self, name: str, ids: Sequence[str]) -> dict[str, Vector]:
        """Stored float32 vectors of the given chunks (missing ids are left out)."""
        if not ids:
            return {}
        got = self._get_ids(name, ids, ["embeddings"])
        vectors = got["embeddings"] if got["embeddings"] is not None else []
        return {cid: np.asarray(vec, dtype=np.float32) for cid, vec in zip(got["ids"], vectors, strict=True)}

    def get_records(self, name: str, ids: Sequence[str]) -> dict[str, tuple[str, ChunkMetadata]]:
        """Text and metadata of the given chunks (missing ids are left out)."""
        if not ids:
            return {}
        got = self._get_ids(name, ids, ["documents", "metadatas"])
        docs: list[Any] = got["documents"] if got["documents"] else [None] * len(got["ids"])
        metas: list[Any] = got["metadatas"] if got["metadatas"] else [None] * len(got["ids"])
        return {cid: (d or "", as_metadata(m)) for cid, d, m in zip(got["ids"], docs, metas, strict=True)}

    def _fill(self, name: str, res: Any, fields: list[Any]) -> Any:
        """A query's ids and distances completed with ``fields`` for the chunks readable now (see _get_ids)."""
        got = self._get_ids(name, res["ids"][0], fields) if fields else {"ids": res["ids"][0]}
        rows = {cid: i for i, cid in enumerate(got["ids"])}
        distance = dict(zip(res["ids"][0], res["distances"][0], strict=True))
        kept = [cid for cid in res["ids"][0] if cid in rows]
        filled: dict[str, Any] = {"ids": [kept], "distances": [[distance[cid] for cid in kept]]}
        for part in ("documents", "metadatas", "embeddings"):
            filled[part] = [[got[part][rows[cid]] for cid in kept]] if part in fields else None
        return filled

    def get_all(self, name: str) -> tuple[list[str], list[str], list[ChunkMetadata]]:
        """Every chunk's id, text and metadata (rebuilding a derived index, e.g. BM25)."""
        try:
            got = self._get_pages(self._get(name), None, ["documents", "metadatas"])
        except CollectionMissing:
            return [], [], []
        return list(got["ids"]), [d or "" for d in got["documents"]], [as_metadata(m) for m in got["metadatas"]]

    def query(
        self,
        name: str,
        embedding: Sequence[float],
        k: int,
        where: Where | None = None,
        *,
        with_embeddings: bool = False,
        with_records: bool = True,
    ) -> list[Hit]:
        """The ``k`` nearest chunks. ``with_records=False`` leaves text and metadata empty: reading them
        costs Chroma more than the search itself (~3 ms for 40 hits on 10k chunks, vs ~1 ms), so a caller
        that has them elsewhere, or needs them for a few hits only, skips it."""
        include: list[Any] = ["distances"]
        if with_records:
            include += ["documents", "metadatas"]
        if with_embeddings:
            include.append("embeddings")

        def search(c: Collection, fields: list[Any]) -> Any:
            return c.query(query_embeddings=[list(embedding)], n_results=k, where=where, include=fields)  # type: ignore[arg-type]

        try:
            res = self._read(name, lambda c: search(c, include))
        except Exception as exc:
            if not _catching_up(exc):
                raise
            res = self._read(name, lambda c: search(c, ["distances"]))  # ids, then what can be read of them
            res = self._fill(name, res, [f for f in include if f != "distances"])
        ids = res["ids"][0]
        docs: list[Any] = res["documents"][0] if res["documents"] else [None] * len(ids)  # None: not asked for
        metas: list[Any] = res["metadatas"][0] if res["metadatas"] else [None] * len(ids)
        dists = (res["distances"] or [[]])[0]
        vectors: Any = res["embeddings"][0] if with_embeddings and res["embeddings"] is not None else []
        return [
            Hit(
                cid,
                doc or "",
                as_metadata(meta),
                1.0 - float(dist),
                np.asarray(vectors[i], dtype=np.float32) if with_embeddings else None,
            )
            for i, (cid, doc, meta, dist) in enumerate(zip(ids, docs, metas, dists, strict=True))
        ]
