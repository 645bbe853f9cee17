"""Who is writing which document: one writer per document at a time, and what a crash left behind.

Two ingestions of the same document (two ``kb ingest`` runs, an upload and a run, two
replicas) used to interleave: A switched its version live and swept every other chunk of
the document, B's freshly written chunks among them; B then switched its now-empty version
live, and every later run called it "unchanged". A writer now claims the document in the
manifest's database before it writes a chunk (a lease: owner + expiry, renewed by a
heartbeat thread while it works), switches its version live only while it still holds the
claim (checked in the switch's own transaction), and releases it after sweeping the
previous version. A second writer waits for the claim instead of racing.

The claim row also records the version being written, which is what makes a crash cheap to
clean up: a claim whose owner is gone (expired, or a dead process on this host) names the
exact chunks that never went live. Until they are swept, readers exclude those versions
inside the stores' own filters, so half-written documents cannot crowd live ones out.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

log = logging.getLogger(__name__)

_HOST = socket.gethostname()


def new_owner() -> str:
    """``host:pid:nonce``: unique per writer, and enough to tell a dead local process at once."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_alive(owner: str, expires_at: float, now: float) -> bool:
    """A claim holds until it expires; a claim of a dead process on this very host holds no longer."""
    if expires_at < now:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _HOST or not pid_text.isdigit():
        return True
    return pid_alive(int(pid_text))


def pid_alive(pid: int) -> bool:
    """Whether a process of this host is still running (another user's counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a document: ``held`` is False while another live writer has it."""

    held: bool
    live_hash: str | None = None  # the manifest's live version when the claim was taken
    abandoned_hash: str | None = None  # a dead writer's version that never went live (sweep it)


class LeaseLost(RuntimeError):
    """Our claim expired and another writer took the document: our version must not go live."""


class Renews(Protocol):
    """What the heartbeat needs of the manifest."""

    def renew(self, owner: str, ttl_s: float) -> int: ...


class Heartbeat:
    """Keeps a writer's claims alive while it works (a thread renewing them every ttl/3)."""

    def __init__(self, manifest: Renews, owner: str, ttl_s: float):
        self._manifest, self.owner, self.ttl_s = manifest, owner, ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kb-writer-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self._manifest.renew(self.owner, self.ttl_s)
            except Exception:  # a locked or closed database: the next beat tries again
                log.warning("could not renew the ingestion claims of %s", self.owner, exc_info=True)


def wait_for(
    claim: Callable[[], Claim],
    poll_s: float = 0.2,
    log_every_s: float = 10.0,
    on_wait: Callable[[], None] | None = None,
) -> Claim:
    """Claim, waiting while another writer holds the document (it releases or its lease expires).

    ``on_wait`` runs at every poll: an ingestion job's cancel check raises from there."""
    waited_since = time.monotonic()
    last_log = waited_since
    while True:
        result = claim()
        if result.held:
            return result
        now = time.monotonic()
        if on_wait is not None:
            on_wait()
        if now - last_log >= log_every_s:
            log.info("still waiting for another ingestion of the same document (%.0f s)", now - waited_since)
            last_log = now
        time.sleep(poll_s)


@contextmanager
def one_writing_process(lock_file: Path) -> Iterator[None]:
    """Serialize ingestions across processes on an embedded store (a file lock, released even by kill -9).

    Embedded Chroma is a library for one process: two processes writing one ``data/chroma`` at once can
    fail inside Chroma. Claims keep documents whole on a Chroma server; on an embedded store the second
    ingestion waits for the first instead (the admin API's worker takes the same lock).
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is ingesting into %s; waiting for it to finish", lock_file.parent)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
