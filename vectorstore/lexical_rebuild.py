"""Where a process's BM25 snapshots come from, so that no query waits for a rebuild of a large collection.

A small collection (under ``inline_below`` chunks: ~0.5 s per 10k) is simply built in-process when its
version moves: the next query pays that and sees every write at once, as before. A large one would make
that query wait for minutes (a million chunks: ~1.5 minutes on 2 cores) and the process's heap hold the
build's gigabytes, so with a local cache directory:

- a write only *requests* a rebuild: the query is answered from the snapshot it has (the new chunks
  are found by the dense retriever meanwhile, chunks removed since are dropped by the manifest's
  live-version filter as always), and a child process, at low CPU priority, builds the new snapshot
  into the cache directory; this process then opens it and swaps it in. Rebuilds of one collection run
  one at a time, at least ``pause_s`` apart (an ingestion of hours does not keep a core busy rebuilding);
- a restarted process opens the newest saved snapshot instead of building (about a second), and if the
  database has moved on since, serves it while the child catches up.

The cache is local to the host and derived: deleting it costs one rebuild. Its directory names the
database (the URL without password) and the collection, so a data dir pointed at another database never
answers from the wrong snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from vectorstore.lexical_build import Snapshot, build, latest, load, prune

log = logging.getLogger(__name__)
SNAPSHOT_FORMAT = 2  # part of the cache directory's name: a kb that saves other files never reads old ones
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class Rebuilds:
    def __init__(
        self,
        engine: Engine,
        cache_dir: Path | None,
        swap: Callable[[Snapshot], None],
        count: Callable[[str], int],
        *,
        inline_below: int = 50_000,
        pause_s: float = 10.0,
    ):
        self._engine = engine
        self._cache_dir = cache_dir
        self._swap = swap
        self._count = count  # chunks of a collection in the database (LexicalIndex.count)
        self.inline_below = inline_below
        self.pause_s = pause_s
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}
        self._wanted: dict[str, int] = {}  # collection → the newest version a query has seen
        self._finished_at: dict[str, float] = {}
        self.builds = 0  # snapshots built or requested from a child by this process (tests, logs)
        self._children: set[subprocess.Popen[str]] = set()
        self._closed = False

    def directory(self, collection: str) -> Path:
        assert self._cache_dir is not None
        database = self._engine.url.render_as_string(hide_password=True)
        key = hashlib.sha1(f"{SNAPSHOT_FORMAT}\0{database}\0{collection}".encode()).hexdigest()[:20]
        return self._cache_dir / key

    def stale_ok(self, snapshot: Snapshot) -> bool:
        """May queries keep using ``snapshot`` after a write while a new one is built in the background?"""
        return self._cache_dir is not None and len(snapshot) >= self.inline_below

    def cold(self, collection: str, version: int) -> Snapshot:
        """The first snapshot of this process (or the next one of a small collection): saved, built, or both."""
        if self._cache_dir is not None:
            saved = self._saved(collection)
            rows = self._count(collection)
            if saved is not None and saved.version == version and len(saved) == rows:
                return saved
            if saved is not None and self.stale_ok(saved):
                log.info("BM25 index of %r: serving the saved version %d while version %d is built",
                         collection, saved.version, version)  # fmt: skip
                self.request(collection, version)
                return saved
            if rows >= self.inline_below:
                return load(self._in_child(collection))
        started = time.perf_counter()
        snapshot = build(self._engine, collection)
        self.builds += 1
        log.info("built BM25 index of %r: %d chunks (version %d) in %.2f s",
                 collection, len(snapshot), snapshot.version, time.perf_counter() - started)  # fmt: skip
        return snapshot

    def _saved(self, collection: str) -> Snapshot | None:
        path = latest(self.directory(collection))
        if path is None:
            return None
        try:
            return load(path)
        except (OSError, ValueError) as exc:  # pruned by another process meanwhile, or damaged: rebuild
            log.warning("cannot read the saved BM25 index %s (%s); building it again", path, exc)
            return None

    def request(self, collection: str, version: int) -> None:
        """Make sure a background rebuild will bring ``collection`` to ``version`` at least (one at a time)."""
        with self._lock:
            self._wanted[collection] = max(version, self._wanted.get(collection, 0))
            if collection in self._running:
                return
            thread = threading.Thread(target=self._loop, args=(collection,), name=f"bm25-{collection}", daemon=True)
            self._running[collection] = thread
        thread.start()

    def _loop(self, collection: str) -> None:
        built = -1
        while True:
            finished = self._finished_at.get(collection)  # None: no rebuild ran yet, none to pause after
            wait = 0.0 if finished is None else finished + self.pause_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                path = self._in_child(collection)
                snapshot = load(path)
                built = snapshot.version
                self._swap(snapshot)
                prune(path.parent, keep=path)
            except Exception:
                if self._closed:  # stopped by close(): nothing failed
                    return
                log.exception("background rebuild of the BM25 index of %r failed; the previous one stays in use",
                              collection)  # fmt: skip
            self._finished_at[collection] = time.monotonic()
            with self._lock:
                if built >= self._wanted.get(collection, 0) or built < 0:  # done, or failed: the next query retries
                    del self._running[collection]
                    return

    def _in_child(self, collection: str) -> Path:
        """Build and save the snapshot in a child process (its memory and its CPU time are not the server's)."""
        started = time.perf_counter()
        job = {"url": self._engine.url.render_as_string(hide_password=False), "collection": collection,
               "directory": str(self.directory(collection))}  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])}
        self.builds += 1
        child = subprocess.Popen(
            [sys.executable, "-m", "vectorstore.lexical_build"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env, cwd=_PACKAGE_ROOT,
        )  # fmt: skip
        with self._lock:
            if self._closed:
                child.kill()
            self._children.add(child)
        try:
            stdout, stderr = child.communicate(json.dumps(job))
        finally:
            with self._lock:
                self._children.discard(child)
        if child.returncode != 0:
            raise RuntimeError(
                f"the BM25 build of {collection!r} failed ({child.returncode}): {stderr.strip()[-2000:]}"
            )
        path = Path(stdout.strip().splitlines()[-1])
        log.info("built BM25 index of %r in a child process in %.1f s: %s",
                 collection, time.perf_counter() - started, path.name)  # fmt: skip
        return path

    def close(self) -> None:
        """Stop the builds in flight: a stopped server's child would otherwise go on for a minute at a million
        chunks, on the cores and the disk its successor starts on (a restart took 46 s instead of 10)."""
        with self._lock:
            self._closed = True
            children = list(self._children)
        for child in children:
            child.kill()
            child.wait()
