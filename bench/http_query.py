"""HTTP query benchmark: POST /chat over 127.0.0.1, offline provider, a 10,000-chunk collection.

What an employee's request really costs, end to end: auth, validation, retrieval (embed the
question, dense + BM25 over 10,000 chunks, MMR, evidence floor), prompt rendering, the offline
`extractive` provider, citations, audit and the HTTP round trip, on the real server:

  1. builds the collection once under --data-dir (reused by later runs): real documentation
     (the shared r-manuals and sqlite-docs corpora, one Markdown file per section) ingested by
     the real pipeline until it holds >= 10,000 chunks; generated paragraphs where those
     datasets are missing;
  2. starts `kb serve` as a subprocess on a free 127.0.0.1 port (auth on, an employee key
     created for the run, per-key rate limit off: this measures the query path, not the limiter);
  3. measures with httpx (async): one client, then --clients concurrent clients, each request a
     distinct question with the response cache bypassed ("cache": false); then cache hits
     (identical grounded questions asked again with the cache on).

Errors: non-200 answers, transport errors, and cache-phase answers not marked cached.
Server-side time per request, two ways: the mean time from the request entering the ASGI app to
its response being sent (the server's own `kb_http_request_duration_seconds` histogram, read from
/metrics before and after each phase: auth, validation, thread-pool hops, the answer, the audit and
conversation rows, serialization) and the answer pipeline's own `latency_ms` (rag.answer only).
With --profile, where a query spends its time in-process (cProfile), and what each per-request
database row costs. Where `wrk` is installed (Debian: apt-get install wrk), the cache-hit phases
run once more with it as the client: a C load generator costs the 2 shared cores far less than
httpx, so its figures are closer to what the server itself adds.

Usage: .venv/bin/python bench/http_query.py [--data-dir /tmp/kb-bench-http] [--requests 300]
       [--clients 20] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.rag.options import AskOptions

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corpus10k import COLLECTION, build_collection, source_documents  # noqa: E402  (bench/ is on sys.path)


def create_key(data_dir: Path) -> str:
    """An employee key in the server's own key store (whatever database the settings name)."""
    from app.bootstrap import Components
    from app.settings import Settings

    components = Components(Settings(_env_file=None, data_dir=data_dir / "data"))  # type: ignore[call-arg]
    try:
        return components.keys.create(f"bench-{int(time.time())}", "employee", [COLLECTION]).token
    finally:
        components.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KB_DATA_DIR": str(data_dir / "data"),
        "KB_LLM__PROVIDER": "extractive",
        "KB_LIMITS__REQUESTS_PER_MINUTE": "0",
        "KB_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = (data_dir / "server.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wait_until_up(proc, f"http://127.0.0.1:{port}/healthz", timeout_s=180, poll_s=0.25, log=data_dir / "server.log")
    return proc


def wait_until_up(
    proc: subprocess.Popen[bytes], url: str, *, timeout_s: float = 180, poll_s: float = 0.1, log: Path | None = None
) -> float:
    """Poll ``url`` until it answers 200 (every bench that starts `kb serve`): the seconds that took. Ends
    the bench, pointing at ``log``, if the server exits first or never answers."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            raise SystemExit(f"kb serve exited with {proc.returncode}" + (f"; see {log}" if log else ""))
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    proc.terminate()
    raise SystemExit(f"kb serve did not answer {url} within {timeout_s:.0f} s")


class Recorder:
    """Client-side latency of each request, the server's own timings, and what went wrong."""

    def __init__(self, name: str):
        self.name, self.ms, self.server_ms, self.errors = name, [], [], []  # type: ignore[var-annotated]
        self.wall_s = 0.0
        self.http_ms = float("nan")  # mean server-side time per request (ASGI in → response sent)

    def pct(self, values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def row(self) -> str:
        rate = len(self.ms) / self.wall_s if self.wall_s else float("nan")
        return (f"| {self.name} | {len(self.ms)} | {len(self.errors)} | {self.pct(self.ms, 0.5):.1f} | "
                f"{self.pct(self.ms, 0.95):.1f} | {self.pct(self.ms, 0.99):.1f} | "
                f"{max(self.ms, default=float('nan')):.1f} | {rate:.0f} | {self.http_ms:.2f} | "
                f"{self.pct(self.server_ms, 0.5):.2f} |")  # fmt: skip


_DURATION = "kb_http_request_duration_seconds"


async def served(client: httpx.AsyncClient, route: str) -> tuple[float, float]:
    """(seconds, requests) the server has spent on ``route`` so far, from its Prometheus histogram."""
    text = (await client.get("/metrics")).text
    totals = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for kind in totals:
            if line.startswith(f"{_DURATION}_{kind}{{") and f'route="{route}"' in line:
                totals[kind] += float(line.rsplit(" ", 1)[1])
    return totals["sum"], totals["count"]


async def timed(client: httpx.AsyncClient, rec: Recorder, route: str, phase: Any) -> None:
    """Run ``phase`` and record the server's mean time per ``route`` request during it."""
    seconds, count = await served(client, route)
    await phase
    seconds2, count2 = await served(client, route)
    rec.http_ms = (seconds2 - seconds) / (count2 - count) * 1000 if count2 > count else float("nan")


async def ask(client: httpx.AsyncClient, rec: Recorder, question: str, cache: bool, expect_cached: bool = False
              ) -> dict[str, Any] | None:  # fmt: skip
    started = time.perf_counter()
    try:
        r = await client.post("/chat", json={"question": question, "collection": COLLECTION, "cache": cache})
    except httpx.HTTPError as exc:
        rec.errors.append(f"{type(exc).__name__}: {exc}")
        return None
    rec.ms.append((time.perf_counter() - started) * 1000)
    if r.status_code != 200:
        rec.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
        return None
    body: dict[str, Any] = r.json()
    rec.server_ms.append(float(body["latency_ms"]))
    if expect_cached and not body["cached"]:
        rec.errors.append(f"not served from the cache: {question!r}")
    return body


async def sequential(client: httpx.AsyncClient, rec: Recorder, questions: list[str], **kw: bool) -> list[Any]:
    started = time.perf_counter()
    out = [await ask(client, rec, q, **kw) for q in questions]
    rec.wall_s = time.perf_counter() - started
    return out


async def concurrent(client: httpx.AsyncClient, rec: Recorder, questions: list[str], clients: int, **kw: bool) -> None:
    """``clients`` workers pulling from one queue of questions until it is empty."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for q in questions:
        queue.put_nowait(q)

    async def worker() -> None:
        while not queue.empty():
            await ask(client, rec, queue.get_nowait(), **kw)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    rec.wall_s = time.perf_counter() - started


def distinct(questions: list[str], n: int, offset: int) -> list[str]:
    """n questions, none repeated within a run: the real ones, then reworded variants."""
    frames = ["{}", "{} Please explain.", "Question: {}", "I would like to know: {}", "{} (briefly)"]
    pool = [f.format(q) for f in frames for q in questions]
    return [pool[(offset + i) % len(pool)] for i in range(n)]


async def measure(
    base: str, token: str, questions: list[str], n: int, clients: int
) -> tuple[list[Recorder], list[str]]:
    limits = httpx.Limits(max_connections=clients + 5, max_keepalive_connections=clients + 5)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as client:
        await sequential(client, Recorder("warm-up"), distinct(questions, 20, 0), cache=False)
        floor = Recorder("GET /healthz: the HTTP floor")

        async def healthz() -> None:
            started = time.perf_counter()
            for _ in range(n):
                t0 = time.perf_counter()
                r = await client.get("/healthz")
                floor.ms.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    floor.errors.append(f"HTTP {r.status_code}")
            floor.wall_s = time.perf_counter() - started

        await timed(client, floor, "/healthz", healthz())
        single = Recorder("1 client, cache bypassed")
        await timed(client, single, "/chat", sequential(client, single, distinct(questions, n, 20), cache=False))
        many = Recorder(f"{clients} concurrent clients, cache bypassed")
        phase = concurrent(client, many, distinct(questions, n, 20 + n), clients, cache=False)
        await timed(client, many, "/chat", phase)
        primed = await sequential(client, Recorder("prime"), questions, cache=True)
        grounded = [q for q, b in zip(questions, primed, strict=True) if b and b["grounded"]]
        hits = Recorder("1 client, cache hits")
        repeated = [grounded[i % len(grounded)] for i in range(n)]
        await timed(client, hits, "/chat", sequential(client, hits, repeated, cache=True, expect_cached=True))
        hits_many = Recorder(f"{clients} concurrent clients, cache hits")
        again = [grounded[(i * 7) % len(grounded)] for i in range(n)]
        phase = concurrent(client, hits_many, again, clients, cache=True, expect_cached=True)
        await timed(client, hits_many, "/chat", phase)
        print(f"  {len(grounded)} of {len(questions)} questions answered with citations (cacheable)")
    return [floor, single, many, hits, hits_many], grounded


# One wrk thread, rotating through the cached questions; each answer must be a 200 marked cached.
_WRK_LUA = r"""
local bodies, i = {}, 0
bad = 0  -- a global: done() reads it from each thread with thread:get
for line in io.lines(os.getenv("KB_WRK_BODIES")) do bodies[#bodies + 1] = line end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KB_WRK_TOKEN")
local threads = {}
function setup(thread) threads[#threads + 1] = thread end
function request()
  i = i % #bodies + 1
  return wrk.format(nil, "/chat", nil, bodies[i])
end
function response(status, headers, body)
  if status ~= 200 or not body:find('"cached":true', 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local bad_total = 0
  for _, t in ipairs(threads) do bad_total = bad_total + t:get("bad") end
  local e = summary.errors
  io.write(string.format("WRK %d %d %.2f %.2f %.2f %.2f %.2f\n", summary.requests,
    bad_total + e.connect + e.read + e.write + e.timeout, latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests / (summary.duration / 1e6)))
end
"""


def wrk_cache_hits(base: str, token: str, grounded: list[str], clients: int, seconds: int = 10) -> list[str]:
    """The cache-hit phases again with wrk as the client; rows for the results table ([] without wrk)."""
    import json
    import shutil
    import tempfile

    wrk = shutil.which("wrk")
    if wrk is None:
        print("  (wrk not installed: no wrk rows; apt-get install wrk)")
        return []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        script, bodies = Path(tmp) / "hits.lua", Path(tmp) / "bodies.jsonl"
        script.write_text(_WRK_LUA)
        bodies.write_text("".join(json.dumps({"question": q, "collection": COLLECTION}) + "\n" for q in grounded))
        env = {**os.environ, "KB_WRK_BODIES": str(bodies), "KB_WRK_TOKEN": token}
        for n in (1, clients):
            run = subprocess.run([wrk, "-t1", f"-c{n}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), base],
                                 env=env, capture_output=True, text=True)  # fmt: skip
            if run.returncode != 0 or "WRK " not in run.stdout:
                print(f"  wrk failed ({run.returncode}): {(run.stderr or run.stdout).strip()[:500]}")
                return rows
            out = run.stdout
            fields = next(line.split()[1:] for line in out.splitlines() if line.startswith("WRK "))
            count, errors, p50, p95, p99, top, rate = fields
            name = f"{n} client{'s' if n > 1 else ''}, cache hits, wrk client ({seconds} s)"
            rows.append(f"| {name} | {count} | {errors} | {p50} | {p95} | {p99} | {top} | {float(rate):.0f} | — | — |")
    return rows


def profile(data_dir: Path, questions: list[str], token: str) -> None:
    """Where a cache-bypassing request spends its time, in-process on the same store and settings:
    the per-request bookkeeping around the pipeline (key lookup, conversation rows), then a cProfile
    of the answer pipeline itself."""
    import cProfile
    import pstats

    from app.audit import AuditRecord
    from app.bootstrap import Components
    from app.llm.costs import UsageRow
    from app.rag.conversation import Turn
    from app.settings import LlmSettings, Settings

    llm = LlmSettings(provider="extractive")  # type: ignore[call-arg]
    settings = Settings(_env_file=None, data_dir=data_dir / "data", llm=llm)  # type: ignore[call-arg]
    components = Components(settings)
    rag = components.rag

    def per_call_ms(fn: Any, n: int = 200) -> float:
        started = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - started) * 1000 / n

    def conversation() -> None:
        cid = components.conversations.start("bench")
        components.conversations.append(cid, "bench", Turn("q", "a", "q"), "r")

    def ledger_row() -> None:  # as an answer cache hit writes it (app/rag/answer_cache.revive)
        components.ledger.record(UsageRow(
            ts=time.time(), request_id="bench", provider="extractive", model="extractive-1", prompt="answer@v2",
            prompt_tokens=900, completion_tokens=60, cost_usd=0.0, latency_ms=0.2, cached=1, streamed=0,
            status="ok", error=None, collection=COLLECTION, key="bench",
        ))  # fmt: skip

    record = AuditRecord(request_id="bench", question="q", prompt="answer@v2", provider="extractive",
                         model="extractive-1", answer="a [1]", key_name="bench", collections=[COLLECTION],
                         retrieved=["c1", "c2", "c3", "c4", "c5"], cited=["c1"], grounded=True)  # fmt: skip
    audit_log = components.audit
    print("\nper request, outside the answer pipeline (in-process, mean):")
    print(f"  API key lookup:                     {per_call_ms(lambda: components.keys.authenticate(token)):.2f} ms")
    print(f"  conversation start + turn append:   {per_call_ms(conversation):.2f} ms")
    print(f"  usage ledger row:                   {per_call_ms(ledger_row):.2f} ms")
    if audit_log is not None:
        print(f"  audit row:                          {per_call_ms(lambda: audit_log.record(record)):.2f} ms")
    for q in questions[:10]:
        rag.answer(q, [COLLECTION], AskOptions(use_cache=False))
    answers = distinct(questions, 200, 7)
    it = iter(answers)
    pipeline_ms = per_call_ms(lambda: rag.answer(next(it), [COLLECTION], AskOptions(use_cache=False)), 100)
    print(f"  for comparison, the answer pipeline: {pipeline_ms:.1f} ms (rag.answer, cache bypassed)")
    profiler = cProfile.Profile()
    profiler.enable()
    for q in answers[100:]:
        rag.answer(q, [COLLECTION], AskOptions(use_cache=False))
    profiler.disable()
    for q in questions:  # the same questions again, cache on: the second round is all hits
        rag.answer(q, [COLLECTION])
    hit_profiler = cProfile.Profile()
    hit_profiler.enable()
    hit_ms = per_call_ms(lambda: [rag.answer(q, [COLLECTION]) for q in questions], 1) / len(questions)
    hit_profiler.disable()
    components.close()
    print("\ncProfile of the answer pipeline, 100 answers in-process (cumulative time, top 30):")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    print(f"cProfile of {len(questions)} cache hits in-process ({hit_ms:.2f} ms each with the profiler on), top 20:")
    pstats.Stats(hit_profiler).sort_stats("cumulative").print_stats(20)


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/kb-bench-http"))
    parser.add_argument("--requests", type=int, default=300, help="requests per measured phase")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="also profile the query path in-process")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; {machine()}")
    docs, questions = source_documents()
    chunks = build_collection(args.data_dir, docs)
    print(f"collection {COLLECTION!r}: {chunks} chunks; {len(questions)} questions")
    token = create_key(args.data_dir)
    port = free_port()
    server = start_server(args.data_dir, port)
    try:
        base = f"http://127.0.0.1:{port}"
        results, grounded = asyncio.run(measure(base, token, questions, args.requests, args.clients))
        wrk_rows = wrk_cache_hits(base, token, grounded, args.clients)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\nload at the end: {os.getloadavg()[0]:.1f}")
    print("\n| scenario | requests | errors | p50 ms | p95 ms | p99 ms | max ms | req/s | server HTTP mean ms "
          "| pipeline p50 ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rec in results:
        print(rec.row())
    for row in wrk_rows:
        print(row)
    for rec in results:
        for error in rec.errors[:5]:
            print(f"  {rec.name}: {error}")
    if args.profile:
        profile(args.data_dir, questions, token)


if __name__ == "__main__":
    main()
