"""Cold start: how long a whole `kb ask` takes, and how long `kb serve` takes to answer, after the first run.

Each is a whole process timed from the outside, on a warm disk (the OS file cache holds the files: the
first run warms it and is reported apart), against the bundled handbook ingested into a data dir of
its own. `kb ask` runs to its exit with the answer printed; `kb serve` is timed to /readyz answering
200 ("ready") and to its first answered /chat (the first employee's answer), then stopped.

Usage: .venv/bin/python bench/cold_start.py [--runs 7] [--work /tmp/kb-bench-cold] [--kb COMMAND]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from http_query import free_port, wait_until_up  # noqa: E402

KB = [str(Path(sys.executable).parent / "kb")]
QUESTION = "How many days of annual leave do I get?"


def time_ask(env: dict[str, str]) -> float:
    started = time.perf_counter()
    command = [*KB, "ask", QUESTION, "-c", "handbook", "--no-cache"]
    ran = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if ran.returncode != 0 or "[1]" not in ran.stdout:
        raise SystemExit(f"kb ask failed ({ran.returncode}): {ran.stdout[-500:]} {ran.stderr[-2000:]}")
    return elapsed


def time_serve(env: dict[str, str], key: str | None) -> tuple[float, float]:
    """Seconds from spawning `kb serve` to /readyz 200, and to its first /chat answer."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*KB, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, url + "/readyz", timeout_s=120, poll_s=0.02)
        ready = time.perf_counter() - started
        key = key or (Path(env["KB_DATA_DIR"]) / "admin-key.txt").read_text().strip()
        response = httpx.post(
            url + "/chat", json={"question": QUESTION, "collection": "handbook", "cache": False},
            headers={"Authorization": f"Bearer {key}"}, timeout=60,
        )  # fmt: skip
        response.raise_for_status()
        return ready, time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kb-bench-cold"))
    parser.add_argument("--kb", help="command that runs kb (another checkout: 'env PYTHONPATH=DIR python -m app.cli')")
    args = parser.parse_args(argv)
    if args.kb:
        KB[:] = args.kb.split()
    data = args.work / "data"
    env = {**os.environ, "KB_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", "KB_LOG_LEVEL": "WARNING"}
    if not (data / "kb.sqlite3").exists():
        subprocess.run([*KB, "ingest", str(ROOT / "examples" / "handbook"), "-c", "handbook"], env=env, check=True)
    print(f"load {os.getloadavg()}")
    first_ask = time_ask(env)
    first_ready, first_chat = time_serve(env, None)
    asks, readies, chats = [], [], []
    for _ in range(args.runs):  # alternating, so a change in the machine's load hits both alike
        asks.append(time_ask(env))
        ready, chat = time_serve(env, None)
        readies.append(ready)
        chats.append(chat)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "first run": {"ask_s": first_ask, "serve_ready_s": first_ready, "serve_first_answer_s": first_chat},
        "ask_s": asks, "serve_ready_s": readies, "serve_first_answer_s": chats,
        "median": {"ask_s": statistics.median(asks), "serve_ready_s": statistics.median(readies),
                   "serve_first_answer_s": statistics.median(chats)},
        "load_after": os.getloadavg(),
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
