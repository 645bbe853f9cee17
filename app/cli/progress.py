"""Progress for long ingest runs: a rich bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

log = logging.getLogger(__name__)


class RichProgress:
    """Files done of total, chunks embedded and chunk rate, for an operator watching."""

    def __init__(self, console: Console):
        self._progress = Progress(
            TextColumn("[bold]ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files · {task.fields[chunks]} chunks · {task.fields[rate]} chunks/s"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("ingest", total=None, chunks=0, rate="–")
        self._chunks = 0
        self._started = time.perf_counter()

    def start(self, total_files: int) -> None:
        self._progress.update(self._task, total=total_files)
        self._progress.start()

    def file_done(self, source: str, outcome: str, chunks: int) -> None:
        if outcome == "failed":
            self._progress.console.print(f"[red]failed[/red] {source}")
        self._progress.advance(self._task)

    def embedded(self, chunks: int) -> None:
        self._chunks += chunks
        rate = self._chunks / max(time.perf_counter() - self._started, 1e-6)
        self._progress.update(self._task, chunks=self._chunks, rate=f"{rate:.0f}")

    def stop(self) -> None:
        self._progress.stop()


class LogProgress:
    """One log line per file and per embedded batch: readable in CI logs and journald."""

    def __init__(self) -> None:
        self._total = 0
        self._done = 0

    def start(self, total_files: int) -> None:
        self._total = total_files
        log.info("ingesting %d files", total_files)

    def file_done(self, source: str, outcome: str, chunks: int) -> None:
        self._done += 1
        log.info("[%d/%d] %s %s%s", self._done, self._total, outcome, source, f" ({chunks} chunks)" if chunks else "")

    def embedded(self, chunks: int) -> None:
        log.debug("embedded %d chunks", chunks)

    def stop(self) -> None:
        pass
