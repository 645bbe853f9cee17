"""kb serve caps glibc's malloc arenas (app/malloc_arenas.py): checked in a real process, by the arenas glibc
itself reports (malloc_info) after 16 threads allocated at once."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import ctypes, sys, tempfile, threading
from app.malloc_arenas import limit_malloc_arenas
applied = limit_malloc_arenas(int(sys.argv[1]))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
barrier = threading.Barrier(16)
def work():
    barrier.wait()  # all at once: each thread that finds its arena locked gets a new one, up to the limit
    blocks = [libc.malloc(4096) for _ in range(2000)]
    barrier.wait()
    for b in blocks:
        libc.free(b)
threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
with tempfile.NamedTemporaryFile("r") as out:
    libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
    fp = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(applied, out.read().count("<heap nr="))
"""

pytestmark = pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"), reason="glibc only")


def _arenas(limit: int, **env: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    out = subprocess.run([sys.executable, "-c", PROBE, str(limit)], cwd=ROOT, env=environ, capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()  # fmt: skip
    return out[0], int(out[1])


def test_the_cap_holds_when_many_threads_allocate_at_once() -> None:
    applied, capped = _arenas(2)
    _, default = _arenas(0)  # glibc's default: up to 8 per core
    assert applied == "True" and capped <= 2
    assert default > capped  # the probe does make glibc add arenas: the cap is what kept them at 2


def test_an_operators_malloc_arena_max_wins() -> None:
    applied, arenas = _arenas(2, MALLOC_ARENA_MAX="3")
    assert applied == "False" and arenas <= 3
