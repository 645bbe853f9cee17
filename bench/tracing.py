"""What OpenTelemetry tracing costs a request: off (the default) and on (exporting to a collector).

Three `kb serve` processes over copies of the same handbook collection, measured in alternating rounds
(the 2-core VM is noisy: ratios within one run, not absolute figures):

  baseline   the same service without any tracing code (a git worktree of --baseline, default 7713fc1,
             the commit before tracing): the honest "what it cost before"
  off        this tree, no OTEL_* variables (the default)
  on         this tree, OTEL_EXPORTER_OTLP_ENDPOINT at an OTLP/HTTP receiver this bench runs (the batch
             span processor and the real protobuf exporter, as against a collector on the same host)

Each round sends every server --requests sequential POST /chat with the response and answer caches
bypassed ("cache": false: auth, condense, embed, dense + BM25 search, fusion, the extractive model,
verification, audit and conversation rows), then the same number of answer-cache hits. Auth is off
(loopback) so the servers need no keys; the auth span is still made (the anonymous principal).

Usage: .venv/bin/python bench/tracing.py [--rounds 6] [--requests 60] [--baseline 7713fc1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from http_query import free_port, machine, wait_until_up  # noqa: E402

QUESTIONS = [
    "How many days of annual leave do I get?",
    "What is the hotel limit per night?",
    "Who approves expenses over the limit?",
    "How do I report a security incident?",
]


class Receiver(BaseHTTPRequestHandler):
    """OTLP/HTTP: counts the export requests and their bytes (decoding them is the collector's cost)."""

    exports: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        type(self).exports.append(len(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def kb(tree: Path, *args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=tree, env=env, check=True, capture_output=True)


def start(tree: Path, data_dir: Path, extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**_env(tree, data_dir), **extra}
    log = (data_dir.parent / f"{data_dir.name}.log").open("wb")
    cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(proc, f"{base}/healthz", timeout_s=180, poll_s=0.25)
    return proc, base


def _env(tree: Path, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KB_"))}
    return {
        **env, "PYTHONPATH": str(tree), "KB_DATA_DIR": str(data_dir), "KB_AUTH__ENABLED": "false",
        "KB_LLM__PROVIDER": "extractive", "KB_LIMITS__REQUESTS_PER_MINUTE": "0", "KB_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }  # fmt: skip


def measure(client: httpx.Client, base: str, n: int, cache: bool, offset: int) -> list[float]:
    times = []
    for i in range(n):
        question = QUESTIONS[(offset + i) % len(QUESTIONS)]
        started = time.perf_counter()
        got = client.post(f"{base}/chat", json={"question": question, "collection": "handbook", "cache": cache})
        times.append((time.perf_counter() - started) * 1000)
        if got.status_code != 200 or (cache and not got.json()["cached"]):
            raise SystemExit(f"{base}: {got.status_code} {got.text[:200]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=60, help="per phase, per server, per round")
    parser.add_argument("--baseline", default="7713fc1", help="a commit without the tracing code")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kb-bench-tracing-"))
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    baseline_tree = work / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(baseline_tree), args.baseline], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for name, tree in (("baseline", baseline_tree), ("off", ROOT), ("on", ROOT)):
            data_dir = work / name
            kb(tree, "ingest", str(ROOT / "examples" / "handbook"), "--collection", "handbook",
               env=_env(tree, data_dir))  # fmt: skip
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}  # fmt: skip
        servers["baseline"] = start(baseline_tree, work / "baseline", {})
        servers["off"] = start(ROOT, work / "off", {})
        servers["on"] = start(ROOT, work / "on", otlp)
        results: dict[tuple[str, str], list[float]] = {}
        with httpx.Client(timeout=60) as client:
            for _name, (_, base) in servers.items():  # warm up: first requests load lazily built parts
                measure(client, base, 10, False, 0)
                measure(client, base, 10, True, 0)
            for r in range(args.rounds):
                order = list(servers.items()) if r % 2 == 0 else list(servers.items())[::-1]
                for name, (_, base) in order:
                    for phase, cache in (("bypassed", False), ("hit", True)):
                        results.setdefault((name, phase), []).extend(measure(client, base, args.requests, cache, r))
        print(f"# tracing overhead, {time.strftime('%Y-%m-%d %H:%M')} UTC, {machine()}")
        print(f"{args.rounds} rounds x {args.requests} requests per phase per server; OTLP exports received: "
              f"{len(Receiver.exports)} ({sum(Receiver.exports) / 1e3:.0f} kB)\n")  # fmt: skip
        print("| phase | server | p50 ms | p95 ms | mean ms | p50 - baseline ms |")
        print("|---|---|---|---|---|---|")
        for phase in ("bypassed", "hit"):
            base_p50 = statistics.median(results[("baseline", phase)])
            for name in servers:
                ms = sorted(results[(name, phase)])
                p50, p95 = statistics.median(ms), ms[int(0.95 * (len(ms) - 1))]
                print(f"| {phase} | {name} | {p50:.2f} | {p95:.2f} | {statistics.fmean(ms):.2f} | "
                      f"{p50 - base_p50:+.2f} |")  # fmt: skip
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
        receiver.shutdown()
        subprocess.run(["git", "worktree", "remove", "--force", str(baseline_tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
