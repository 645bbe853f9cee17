"""PDFs are parsed in a child process, so the embedding threads never wait for pypdf's hold on the GIL.

pypdf is pure Python. In a thread of the ingesting process (as before) it held the GIL for most of the
~14 s it takes to read the seven R manuals, while the embedding model's worker threads, which need the
GIL a few times per text between their model runs, waited for it up to the interpreter's switch
interval (5 ms) each time: a text's run is ~20 ms. In a child process the parsing takes its share of
the cores and nothing in the parent waits for it (figures in docs/benchmarks.md, "Ingestion of real
PDF manuals").

It also bounds what one hostile PDF can do: its memory is the child's, and a child that dies while
parsing (out of memory, a crash in a C extension) fails that file with a message; the next PDF gets a
fresh child. Other formats are parsed in the calling thread: they take milliseconds, less than the
round trip.

Why a plain child (``ingest.parse_process`` run by the same interpreter, pickles over its stdin and
stdout) and not a ``multiprocessing`` pool: a spawned pool child first re-imports the parent's main
module (the whole CLI or server, and any user script without an ``if __name__ == "__main__"`` guard
fails there). A child per concurrent ingestion, started at its first PDF and kept for the next (a server
and a queue worker ingest many), retired once its memory has grown past ``RETIRE_RSS_MB`` (a huge PDF's
heap is not kept for good). It runs in a session of its own and ignores SIGINT and SIGTERM: a Ctrl-C or
a service stop lets the parent finish the documents in flight, parser included. It exits when its
stdin closes (the parent exited) or its parent is gone (kill -9 mid-file).
``KB_CHUNKING__PARSE_PDFS_IN_CHILD=false`` parses in the calling thread instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

from app.errors import IngestError
from ingest.limits import FileLimits
from ingest.loaders import LoadedDocument, load

log = logging.getLogger(__name__)
IN_CHILD = frozenset({".pdf"})
RETIRE_RSS_MB = 1024  # a child whose resident memory grew past this after a file is replaced by a fresh one
_ROOT = Path(__file__).resolve().parents[1]
_HEADER = struct.Struct("<Q")
# the child's entry: kb's root appended to sys.path (found from a checkout, never shadowing the stdlib)
_ENTRY = f"import sys; sys.path.append({str(_ROOT)!r}); from ingest.parse_process import _serve; _serve()"


class _SendFailed(Exception):
    """The request never reached the child (it had died): not the file's doing."""


def _send(stream: IO[bytes], value: Any) -> None:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the other end closed")
    size = _HEADER.unpack(header)[0]
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError("the other end closed mid-message")
    return pickle.loads(payload)  # our own parent's or child's pickles, over a private pipe


def _log_format() -> str:
    from app.logging_setup import JsonFormatter

    return "json" if any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers) else "text"


class _Child:
    """A parser process: one request at a time, in order."""

    def __init__(self) -> None:
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ENTRY, level, _log_format(), str(RETIRE_RSS_MB)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C or a stop signal to the parent's group is not for the parser
        )  # fmt: skip
        log.debug("started a PDF parser process (pid %d)", self.proc.pid)

    def exchange(self, path: Path, data: bytes, limits: FileLimits) -> tuple[bool, Any, bool]:
        """(True, the parsed document, retire) or (False, the exception ``load`` raised in the child, retire)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            _send(self.proc.stdin, (path, data, limits))
        except OSError as exc:  # BrokenPipeError: it had died before this file
            raise _SendFailed(str(exc)) from exc
        return _receive(self.proc.stdout)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """Let it finish: its stdin closes, its loop ends (a few ms); killed if it does not."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.stop()


_idle: list[_Child] = []  # children not parsing right now: one per concurrent ingestion at most
_busy: set[_Child] = set()
_lock = threading.Lock()


def parser_pids() -> tuple[list[int], list[int]]:
    """(busy, idle) parser processes of this process: for operators' diagnostics and tests."""
    with _lock:
        return [c.proc.pid for c in _busy], [c.proc.pid for c in _idle]


def parse(path: Path, data: bytes, limits: FileLimits, *, in_child: bool = True) -> LoadedDocument:
    """``ingest.loaders.load``, run in a parser child process for the formats that take long (``in_child``)."""
    if not in_child or path.suffix.lower() not in IN_CHILD:
        return load(path, data, limits)
    for attempt in (1, 2):
        child = _take()
        try:
            ok, value, retire = child.exchange(path, data, limits)
        except _SendFailed:  # it died while idle, between the check and the send: a new child, once
            _forget(child)
            if attempt == 2:
                raise IngestError(f"{path.name}: no PDF parser process could be started") from None
            continue
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            _forget(child)
            log.warning("the PDF parser's process died reading %s (%s); the next PDF starts a new one", path.name, exc)
            raise IngestError(
                f"{path.name}: the parser's process died while reading it (out of memory, or a crash in the PDF "
                "parser); the rest of the batch goes on"
            ) from None
        except BaseException:  # interrupted mid-exchange: the child's state is unknown
            _forget(child)
            raise
        if retire:
            _forget(child, gently=True)
        else:
            _release(child)  # it answered: ready for the next file, whether this one parsed or not
        if ok:
            return value  # type: ignore[no-any-return]
        raise value
    raise AssertionError("unreachable")


def _take() -> _Child:
    with _lock:
        while _idle and _idle[-1].proc.poll() is not None:  # died while idle (the OOM killer): not this file's doing
            _idle.pop().stop()
        child = _idle.pop() if _idle else None
    if child is None:
        child = _Child()
    with _lock:
        _busy.add(child)
    return child


def _release(child: _Child) -> None:
    with _lock:
        _busy.discard(child)
        _idle.append(child)


def _forget(child: _Child, *, gently: bool = False) -> None:
    with _lock:
        _busy.discard(child)
    if gently:
        child.close()
    else:
        child.stop()


@atexit.register
def _close_children() -> None:
    """At exit, reap the children (their CPU time then counts in this process's, as it did in-thread)."""
    with _lock:
        children = [*_idle, *_busy]
        _idle.clear()
        _busy.clear()
    for child in children:
        child.close()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _exit_with_parent() -> None:
    """Killed with -9, the parent cannot close our stdin while we parse a long file: notice it gone."""
    parent = os.getppid()
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _serve() -> None:
    """The child's loop: (path, data, limits) in, (ok, the document or the exception, retire) out."""
    from app.logging_setup import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop (closing our stdin)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library or extension writes to fd 1 goes to stderr, not into the replies
    sys.stdout = sys.stderr
    level = sys.argv[1] if len(sys.argv) > 1 else "WARNING"
    configure_logging(level, sys.argv[2] if len(sys.argv) > 2 else "text", stream=sys.stderr)
    retire_mb = float(sys.argv[3]) if len(sys.argv) > 3 else RETIRE_RSS_MB
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    while True:
        try:
            path, data, limits = _receive(requests)
        except EOFError:
            return
        value: Any
        try:
            ok, value = True, load(path, data, limits)
        except Exception as exc:  # the parent raises it as it would have in-thread (IngestError or a parser bug)
            exc.add_note(f"in the PDF parser process:\n{traceback.format_exc()}")
            ok, value = False, exc
        reply: tuple[bool, Any, bool] = (ok, value, _rss_mb() > retire_mb)
        try:
            pickle.loads(pickle.dumps(reply))  # an exception that cannot make the round trip is sent as text
        except Exception:
            reply = (False, RuntimeError(f"{type(value).__name__}: {value}"), reply[2])
        _send(replies, reply)


if __name__ == "__main__":
    _serve()
