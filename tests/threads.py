"""Run a test's workers in threads released together, and hand back what they raised.

A bare thread only prints its exception and the test passes; every concurrency test here
needs the same few lines to catch them, so they live once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def run_together(target: Callable[[T], object], args: Sequence[T], *, timeout_s: float = 120) -> list[BaseException]:
    """Call ``target(arg)`` for every arg, each in its own thread, all started at once (a barrier);
    returns the exceptions raised, in no particular order (the caller asserts there are none)."""
    barrier = threading.Barrier(len(args))
    errors: list[BaseException] = []

    def run(arg: T) -> None:
        try:
            barrier.wait(timeout=30)
            target(arg)
        except BaseException as exc:  # handed back to the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(arg,)) for arg in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_s)
    stuck = sum(t.is_alive() for t in threads)
    if stuck:
        errors.append(TimeoutError(f"{stuck} of {len(threads)} threads still running after {timeout_s} s"))
    return errors
