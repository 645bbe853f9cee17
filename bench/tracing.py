"""What OpenTelemetry tracing costs a request: off (the default) and on (exporting to a collector).

Four `kb serve` processes over copies of the same handbook collection, measured in alternating rounds
(the 2-core VM is noisy: ratios within one run, not absolute figures):

  baseline   the same service without any tracing code (a git worktree of --baseline, default 7713fc1,
             the commit before tracing): the honest "what it cost before"
  off        this tree, no OTEL_* variables (the default)
  on         this tree, OTEL_EXPORTER_OTLP_ENDPOINT at an OTLP/HTTP receiver this bench runs (the batch
             span processor and the real protobuf exporter, as against a collector on the same host)
  held       as on, but the batch processor holds the spans until after the run (OTEL_BSP_*): what making
             the spans costs a request, apart from sending them

Each round sends --requests POST /chat to each server, request by request in turn, with the response and
answer caches bypassed ("cache": false: auth, condense, embed, dense + BM25 search, fusion, the extractive model,
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


def measure(client: httpx.Client, base: str, n: int, cache: bool, offset: int, warm: bool = False) -> list[float]:
    times = []
    for i in range(n):
        question = QUESTIONS[(offset + i) % len(QUESTIONS)]
        started = time.perf_counter()
        got = client.post(f"{base}/chat", json={"question": question, "collection": "handbook", "cache": cache})
        times.append((time.perf_counter() - started) * 1000)
        if got.status_code != 200 or (cache and not warm and not got.json()["cached"]):
            raise SystemExit(f"{base}: {got.status_code} {got.text[:200]}")
    return times


def span_cost_us(n: int = 2000) -> tuple[float, float]:
    """(off, on) microseconds per span in-process, nested as a request's are: tracing.span with attributes,
    on into a batch processor whose exporter drops the spans (the export's own cost is the background's)."""
    import timeit

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from app import tracing

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    def request() -> None:
        with tracing.span("kb.answer"):
            for _ in range(11):
                with tracing.span("kb.retrieve", {"kb.mode": "hybrid", "kb.top_k": 5}) as span:
                    tracing.set_attributes(span, {"kb.hits": 5})

    off = min(timeit.repeat(request, number=n, repeat=3)) / n / 12 * 1e6
    tracing.configure(False, env={}, exporter=Dropped())  # then its processor swapped for a batching one
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from app import tracing_spans

    assert tracing_spans._sink is not None
    tracing_spans._sink.processor = tracing._processor = BatchSpanProcessor(Dropped(), max_queue_size=1_000_000)
    try:
        on = min(timeit.repeat(request, number=n, repeat=3)) / n / 12 * 1e6
    finally:
        tracing.shutdown()
    return off, on


def same_process(data_dir: Path, endpoint: str, requests: int) -> dict[tuple[str, str], list[float]]:
    """One `kb serve` app in this process (uvicorn in a thread), tracing switched on and off request by request
    (``tracing._on``: the very check the off path makes): no process-to-process differences (which core, which
    memory layout: ~0.5 ms between two identical servers here) in the comparison. Also the process's CPU time
    per request (server and client, which is the same in both): it counts the spans handed on after the
    response, which the latency does not."""
    from app import tracing
    from app.api.main import create_app
    from app.settings import Settings

    os.environ.update(
        {
            "KB_AUTH__ENABLED": "false",
            "KB_LIMITS__REQUESTS_PER_MINUTE": "0",
            "KB_LOG_LEVEL": "WARNING",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        }
    )  # the exporter reads its variables itself
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    tracing.configure(False)
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    while not server.started:
        time.sleep(0.05)
    results: dict[tuple[str, str], list[float]] = {}
    try:
        with httpx.Client(timeout=60) as client:
            for cache in (False, True):
                measure(client, base, 20, cache, 0, warm=True)
            for phase, cache in (("bypassed", False), ("hit", True)):
                for i in range(requests):
                    for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
                        tracing._on = name == "on"
                        cpu = time.process_time()
                        results.setdefault((name, phase), []).extend(measure(client, base, 1, cache, i))
                        results.setdefault((name, phase + " cpu"), []).append((time.process_time() - cpu) * 1000)
    finally:
        tracing._on = True
        server.should_exit = True
        tracing.shutdown()
    return results


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
        for name, tree in (("baseline", baseline_tree), ("off", ROOT), ("on", ROOT), ("held", ROOT)):
            data_dir = work / name
            kb(tree, "ingest", str(ROOT / "examples" / "handbook"), "--collection", "handbook",
               env=_env(tree, data_dir))  # fmt: skip
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}  # fmt: skip
        servers["baseline"] = start(baseline_tree, work / "baseline", {})
        servers["off"] = start(ROOT, work / "off", {})
        servers["on"] = start(ROOT, work / "on", otlp)
        # spans made and queued, but exported only after the run: what making them costs, without sending
        held = {"OTEL_BSP_SCHEDULE_DELAY": "3600000", "OTEL_BSP_MAX_QUEUE_SIZE": "10000000",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10000000"}  # fmt: skip
        servers["held"] = start(ROOT, work / "held", {**otlp, **held})
        results: dict[tuple[str, str], list[float]] = {}
        with httpx.Client(timeout=60) as client:
            for _name, (_, base) in servers.items():  # warm up: first requests load lazily built parts
                measure(client, base, 10, False, 0, warm=True)
                measure(client, base, 10, True, 0, warm=True)  # fills the answer cache
            # request by request, the three servers in turn (the order rotating): slow spells of the
            # machine hit all three alike, and each request has a partner in the others to be compared with
            names = list(servers)
            for r in range(args.rounds):
                for phase, cache in (("bypassed", False), ("hit", True)):
                    for i in range(args.requests):
                        shift = (r * args.requests + i) % len(names)
                        for name in names[shift:] + names[:shift]:
                            ms = measure(client, servers[name][1], 1, cache, r * args.requests + i)
                            results.setdefault((name, phase), []).extend(ms)
        print(f"# tracing overhead, {time.strftime('%Y-%m-%d %H:%M')} UTC, {machine()}")
        print(f"{args.rounds} rounds x {args.requests} requests per phase per server; OTLP exports received: "
              f"{len(Receiver.exports)} ({sum(Receiver.exports) / 1e3:.0f} kB)\n")  # fmt: skip
        print("| phase | server | p50 ms | p95 ms | mean ms | p50 - baseline ms | median paired diff ms |")
        print("|---|---|---|---|---|---|---|")
        for phase in ("bypassed", "hit"):
            baseline = results[("baseline", phase)]
            base_p50 = statistics.median(baseline)
            for name in servers:
                ms = results[(name, phase)]
                ordered = sorted(ms)
                p50, p95 = statistics.median(ms), ordered[int(0.95 * (len(ms) - 1))]
                paired = statistics.median(a - b for a, b in zip(ms, baseline, strict=True))
                print(f"| {phase} | {name} | {p50:.2f} | {p95:.2f} | {statistics.fmean(ms):.2f} | "
                      f"{p50 - base_p50:+.2f} | {paired:+.2f} |")  # fmt: skip
            off, on = results[("off", phase)], results[("on", phase)]
            print(f"| {phase} | on - off | | | | {statistics.median(on) - statistics.median(off):+.2f} | "
                  f"{statistics.median(a - b for a, b in zip(on, off, strict=True)):+.2f} |")  # fmt: skip
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
        servers.clear()
        same = same_process(work / "on", otlp["OTEL_EXPORTER_OTLP_ENDPOINT"], args.requests * args.rounds)
        print("\nThe same process, tracing on and off request by request:\n")
        print("| phase | p50 off ms | p50 on ms | median paired diff (on - off) ms | CPU per request off / on ms |")
        print("|---|---|---|---|---|")
        for phase in ("bypassed", "hit"):
            off, on = same[("off", phase)], same[("on", phase)]
            paired = statistics.median(a - b for a, b in zip(on, off, strict=True))
            cpu_off = statistics.fmean(same[("off", phase + " cpu")])
            cpu_on = statistics.fmean(same[("on", phase + " cpu")])
            print(f"| {phase} | {statistics.median(off):.2f} | {statistics.median(on):.2f} | {paired:+.2f} | "
                  f"{cpu_off:.2f} / {cpu_on:.2f} ({cpu_on - cpu_off:+.2f}) |")  # fmt: skip
        off_us, on_us = span_cost_us()
        print(f"\nin-process, per span: off {off_us:.2f} us, on {on_us:.1f} us (12 spans a cache-bypassed request: "
              f"{12 * on_us / 1000:.2f} ms; 5 an answer-cache hit: {5 * on_us / 1000:.2f} ms)")  # fmt: skip
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
        receiver.shutdown()
        subprocess.run(["git", "worktree", "remove", "--force", str(baseline_tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
