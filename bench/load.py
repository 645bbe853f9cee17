"""Load and soak over HTTP against kb replicas (issue #8): bounded, loopback only.

Sends POST /chat round-robin to one or more base URLs with async httpx, and reports
latency percentiles (p50/p95/p99), throughput, errors by status, and the RSS of the
server processes at the start and the end of the run (``--pids``; read from
/proc/PID/status, so the servers must run on this machine).

Load shapes:
  --clients N --duration S     closed loop: N clients, each sends its next request when
                               the previous one is answered
  --rate R --duration S        open loop (soak): R requests/s on a fixed schedule whatever
                               the latency; at most --max-in-flight outstanding, beyond that
                               a request counts as a client_overload error
  --ingest-every S             meanwhile, every S seconds, upload a note through the admin
                               API (POST /admin/collections/<c>/documents) and wait for the
                               job: a changed document, so each round really embeds and
                               switches the collection's version (answer caches of that
                               collection go stale on every replica)

Questions come from the sample handbook suite; a share of them (--no-cache-share, default
0.25) is sent with "cache": false so they pay retrieval and the model call every time.
Any non-200 answer, transport error or timeout is an error; a 200 answer without
"answer" text is counted as bad_body.

--spawn starts the scenario of issue #8 on this machine and runs against it: a Chroma
server (chroma run), Redis, one shared data dir, two `kb serve` replicas (A with the admin
API, B without, as docker-compose.yml does), the offline extractive provider, the response
cache and the rate limiter on Redis (limit set high, so every request still goes through
the shared limiter), the handbook ingested through A; with --postgres the shared SQL database (keys, ledger, audit
log, conversations) is a throwaway PostgreSQL server (scripts/test-postgres.sh, as the tests
use), else kb.sqlite3 in the data dir. --scenario issue8 runs both phases
of the issue on it: 50 clients for 60 s, then a soak at 20 requests/s with ingestion every
60 s (length: --soak-duration).

Usage:
  .venv/bin/python bench/load.py --spawn --scenario issue8 [--soak-duration 600] [--postgres]
  .venv/bin/python bench/load.py --spawn --clients 50 --duration 60
  .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --url http://127.0.0.1:8002 \\
      --key "$KEY" --rate 20 --duration 600 --ingest-every 60 --pids 1234,1240
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HANDBOOK = ROOT / "examples" / "handbook"
COLLECTION = "handbook"

QUESTIONS = [
    "How many days of annual leave do I get?",
    "How many unused leave days can I carry over, and until when?",
    "How much parental leave do parents get?",
    "By what time must I tell my manager that I'm sick?",
    "When do I need a doctor's note for sick leave?",
    "How long is the probation period for new employees?",
    "What is the notice period after probation?",
    "Can I work from another country, and for how long?",
    "How quickly are contractor invoices paid?",
    "How long must my password be?",
    "Which password manager does the company use?",
    "What kind of multi-factor authentication is required?",
    "After how many minutes of inactivity does a company laptop lock its screen?",
    "How quickly must I report a lost laptop?",
    "Where do I report a phishing email?",
    "Where may customer meter data be stored?",
    "How often do managers review their team's access rights?",
    "How many people work at Fernhill Analytics?",
    "Who do I contact with questions about the handbook?",
    "When does the on-call handover happen?",
    "How quickly do I have to acknowledge a page when on call?",
    "What must happen during a SEV1 incident?",
    "How soon is a postmortem published after a SEV1?",
    "What is the on-call allowance?",
    "What is the daily meal allowance when travelling?",
    "Is alcohol reimbursed?",
    "How much can I spend on a hotel per night?",
    "How long do I have to submit expense receipts?",
    "Who must approve a purchase over 500 EUR?",
    "Which class do I fly on flights shorter than 8 hours?",
    "What home office budget do remote employees get?",
    "What are the office opening hours?",
    "How far in advance must I register a visitor?",
    "On which days is lunch provided in the office?",
    "What is the name of the CEO?",
    "Can I bring my dog to the office?",
]


# ---------------------------------------------------------------- safety and measurement


def require_loopback(url: str) -> str:
    """Refuse anything but 127.0.0.0/8, ::1 or localhost: this script must never load a real deployment."""
    host = urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"refusing {url!r}: load runs against loopback addresses only (127.0.0.1, ::1, localhost)")
    return url.rstrip("/")


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    mem = next(
        (ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")), "0"
    )
    return f"{cpu}, {os.cpu_count()} cores, {int(mem) / 1024**2:.1f} GB RAM, Python {platform.python_version()}"


@dataclass
class Stats:
    name: str
    ms: list[float] = field(default_factory=list)
    ms_by_url: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)
    cached: int = 0
    uncached_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.samples.setdefault(kind, detail[:300])

    def report(self) -> list[str]:
        n, errs = len(self.ms), sum(self.errors.values())
        lines = [
            f"## {self.name}",
            f"  requests answered 200: {n}   errors: {errs} {dict(self.errors) if errs else ''}",
            f"  throughput: {n / self.wall_s:.1f} answers/s over {self.wall_s:.0f} s" if self.wall_s else "",
            f"  latency ms: p50 {pct(self.ms, 0.5):.0f}  p95 {pct(self.ms, 0.95):.0f}  p99 {pct(self.ms, 0.99):.0f}"
            f"  max {max(self.ms, default=float('nan')):.0f}",
            f"  cached answers: {self.cached} of {n}; cache-bypassing requests p50 {pct(self.uncached_ms, 0.5):.0f}"
            f" p95 {pct(self.uncached_ms, 0.95):.0f} ms ({len(self.uncached_ms)})",
        ]
        for url, values in sorted(self.ms_by_url.items()):
            lines.append(f"  {url}: {len(values)} answers, p50 {pct(values, 0.5):.0f} p95 {pct(values, 0.95):.0f} ms")
        for kind, sample in self.samples.items():
            lines.append(f"  first {kind}: {sample}")
        return [ln for ln in lines if ln]


@dataclass
class IngestStats:
    rounds: int = 0
    failed: int = 0
    seconds: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- the load


class Load:
    def __init__(self, urls: list[str], key: str, *, no_cache_share: float, seed: int = 7, timeout_s: float = 60.0):
        self.urls = urls
        self.headers = {"Authorization": f"Bearer {key}"}
        self.no_cache_share = no_cache_share
        self.rng = random.Random(seed)
        self.timeout_s = timeout_s
        self.turn = 0

    def next_request(self) -> tuple[str, dict[str, object]]:
        url = self.urls[self.turn % len(self.urls)]
        self.turn += 1
        body = {
            "question": self.rng.choice(QUESTIONS),
            "collection": COLLECTION,
            "cache": self.rng.random() >= self.no_cache_share,
        }
        return url, body

    async def one(self, client: httpx.AsyncClient, stats: Stats) -> None:
        url, body = self.next_request()
        started = time.perf_counter()
        try:
            r = await client.post(f"{url}/chat", json=body, headers=self.headers, timeout=self.timeout_s)
        except httpx.TimeoutException as exc:
            stats.error("timeout", f"{url}: {type(exc).__name__}")
            return
        except httpx.HTTPError as exc:
            stats.error(type(exc).__name__, f"{url}: {exc}")
            return
        ms = (time.perf_counter() - started) * 1000
        if r.status_code != 200:
            stats.error(f"HTTP {r.status_code}", f"{url}: {r.text}")
            return
        answer = r.json()
        if not answer.get("answer"):
            stats.error("bad_body", f"{url}: {r.text}")
            return
        stats.ms.append(ms)
        stats.ms_by_url.setdefault(url, []).append(ms)
        stats.cached += bool(answer.get("cached"))
        if not body["cache"]:
            stats.uncached_ms.append(ms)

    async def closed_loop(self, client: httpx.AsyncClient, stats: Stats, clients: int, duration_s: float) -> None:
        end = time.monotonic() + duration_s

        async def worker() -> None:
            while time.monotonic() < end:
                await self.one(client, stats)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        stats.wall_s = time.perf_counter() - started

    async def open_loop(
        self, client: httpx.AsyncClient, stats: Stats, rate: float, duration_s: float, max_in_flight: int
    ) -> None:
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        t0 = time.monotonic()
        n = 0
        while (due := t0 + n / rate) < t0 + duration_s:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            n += 1
            if len(tasks) >= max_in_flight:
                stats.error("client_overload", f"{len(tasks)} requests outstanding at {time.monotonic() - t0:.0f} s")
                continue
            task = asyncio.create_task(self.one(client, stats))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        stats.wall_s = time.perf_counter() - started


async def ingest_loop(
    client: httpx.AsyncClient, admin_url: str, key: str, every_s: float, stop: asyncio.Event, out: IngestStats
) -> None:
    """Every ``every_s``: upload a changed note into the collection through the admin API, wait for the job."""
    headers = {"Authorization": f"Bearer {key}"}
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        if stop.is_set():
            return
        out.rounds += 1
        note = "\n\n".join(
            f"Load test note {out.rounds}, paragraph {i}: the facilities team logs meeting room booking "
            f"number {out.rounds * 100 + i} and checks the projector in room {i % 7 + 1} every {i + 2} weeks."
            for i in range(40)
        )
        files = {"files": ("load-note.md", f"# Facilities log {out.rounds}\n\n{note}\n".encode(), "text/markdown")}
        started = time.perf_counter()
        try:
            r = await client.post(f"{admin_url}/admin/collections/{COLLECTION}/documents", files=files,
                                  headers=headers, timeout=60)  # fmt: skip
            if r.status_code != 202:
                raise RuntimeError(f"upload answered {r.status_code}: {r.text[:200]}")
            job_id = r.json()["id"]
            while True:
                await asyncio.sleep(0.5)
                job = (await client.get(f"{admin_url}/admin/jobs/{job_id}", headers=headers, timeout=60)).json()
                if job["status"] in ("succeeded", "failed"):
                    break
            if job["status"] != "succeeded" or (job["summary"] or {}).get("failed"):
                raise RuntimeError(f"job {job_id}: {job['status']} {job.get('error')} {job.get('summary')}")
            out.seconds.append(time.perf_counter() - started)
        except (httpx.HTTPError, RuntimeError, KeyError) as exc:
            out.failed += 1
            out.problems.append(f"round {out.rounds}: {type(exc).__name__}: {exc}")


@dataclass
class Phase:
    name: str
    duration_s: float
    clients: int = 0
    rate: float = 0.0
    ingest_every_s: float = 0.0


async def run(
    urls: list[str],
    key: str,
    admin_url: str | None,
    phases: list[Phase],
    pids: dict[str, int],
    args: argparse.Namespace,
) -> bool:
    load = Load(urls, key, no_cache_share=args.no_cache_share, timeout_s=args.timeout)
    limits = httpx.Limits(max_connections=max(args.max_in_flight, 100) + 20, max_keepalive_connections=100)
    ok = True
    async with httpx.AsyncClient(limits=limits) as client:
        if args.warmup > 0:
            warm = Stats("warm-up")
            await load.closed_loop(client, warm, 4, args.warmup)
            print(f"warm-up: {len(warm.ms)} answers in {args.warmup:.0f} s, errors {dict(warm.errors)}")
        rss_start = {name: rss_mb(pid) for name, pid in pids.items()}
        rss_max = dict(rss_start)
        stop_sampling = asyncio.Event()

        async def sample_rss() -> None:
            while not stop_sampling.is_set():
                for name, pid in pids.items():
                    value = rss_mb(pid)
                    if value is not None:
                        rss_max[name] = max(rss_max[name] or 0.0, value)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_sampling.wait(), timeout=5)

        sampler = asyncio.create_task(sample_rss())
        for phase in phases:
            stats = Stats(phase.name)
            ingest = IngestStats()
            stop = asyncio.Event()
            ingester = None
            if phase.ingest_every_s > 0:
                if admin_url is None:
                    raise SystemExit("--ingest-every needs an admin API (--admin-url) and an admin --key")
                ingester = asyncio.create_task(ingest_loop(client, admin_url, key, phase.ingest_every_s, stop, ingest))
            print(f"\n{time.strftime('%H:%M:%S')} {phase.name} ...", flush=True)
            if phase.rate > 0:
                await load.open_loop(client, stats, phase.rate, phase.duration_s, args.max_in_flight)
            else:
                await load.closed_loop(client, stats, phase.clients, phase.duration_s)
            stop.set()
            if ingester is not None:
                await ingester
            print("\n".join(stats.report()))
            if phase.ingest_every_s > 0:
                secs = ", ".join(f"{s:.1f}" for s in ingest.seconds)
                print(f"  ingestion rounds: {ingest.rounds}, failed {ingest.failed}; seconds each: {secs}")
                for problem in ingest.problems[:5]:
                    print(f"    {problem}")
            ok = ok and not stats.errors and not ingest.failed
            rss_now = {name: rss_mb(pid) for name, pid in pids.items()}
            for name in pids:
                start, now, peak = rss_start[name], rss_now[name], rss_max[name]
                if start is None or now is None:
                    print(f"  RSS {name} (pid {pids[name]}): not readable (process gone?)")
                    ok = False
                    continue
                growth = (now - start) / start * 100
                print(f"  RSS {name} (pid {pids[name]}): start {start:.0f} MB, now {now:.0f} MB ({growth:+.1f}%), "
                      f"peak {max(peak or 0.0, now):.0f} MB")  # fmt: skip
        stop_sampling.set()
        await sampler
    return ok


# ---------------------------------------------------------------- --spawn: the scenario


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise SystemExit(f"{what} did not answer {url} within {timeout_s:.0f} s; see {log}")


@dataclass
class Cluster:
    urls: list[str]
    admin_url: str
    key: str
    pids: dict[str, int]


@contextlib.contextmanager
def spawn(workdir: Path, postgres: bool = False) -> Iterator[Cluster]:
    """Chroma + Redis (+ PostgreSQL) + two `kb serve` replicas over one data dir; the handbook ingested via A."""
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("--spawn needs redis-server (Debian: apt-get install redis-server)")
    procs: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (workdir / f"{name}.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        procs.append(proc)
        return proc

    # Its own short directory: the server runs as the postgres OS user (as root), which must reach it,
    # and the socket path (DIR/sock/.s.PGSQL.5432) must stay under 107 bytes.
    pg_dir = Path(tempfile.mkdtemp(prefix="kb-pg.", dir="/tmp")) if postgres else workdir / "pg"
    try:
        database_url = None
        if postgres:
            started = subprocess.run(["sh", str(ROOT / "scripts" / "test-postgres.sh"), "start", str(pg_dir)],
                                     capture_output=True, text=True)  # fmt: skip
            if started.returncode != 0:
                raise SystemExit(f"--postgres: could not start PostgreSQL: {started.stderr.strip()}")
            database_url = started.stdout.strip()
        chroma_port, redis_port = free_port(), free_port()
        chroma = start("chroma", [str(BIN / "chroma"), "run", "--path", str(workdir / "chroma-data"),
                                  "--host", "127.0.0.1", "--port", str(chroma_port)])  # fmt: skip
        redis_proc = start("redis", [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir",
                                     str(workdir), "--save", "", "--appendonly", "no"])  # fmt: skip
        wait_http(f"http://127.0.0.1:{chroma_port}/api/v2/heartbeat", chroma, "chroma run", workdir / "chroma.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
        env.update({
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "KB_DATA_DIR": str(workdir / "data"),
            "KB_VECTORSTORE__MODE": "http", "KB_VECTORSTORE__HOST": "127.0.0.1",
            "KB_VECTORSTORE__PORT": str(chroma_port),
            "KB_CACHE__BACKEND": "redis", "KB_CACHE__REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "KB_LIMITS__RATE_LIMIT_STORAGE": f"redis://127.0.0.1:{redis_port}/1",
            "KB_LIMITS__REQUESTS_PER_MINUTE": "1000000",  # on, through Redis, but never the bottleneck
            "KB_LLM__PROVIDER": "extractive",
            "KB_LOG_LEVEL": "WARNING",
        })  # fmt: skip
        if database_url:
            env["KB_DATABASE__URL"] = database_url
        kb = [str(BIN / "kb")] if (BIN / "kb").exists() else [sys.executable, "-m", "app.cli"]
        created = subprocess.run([*kb, "keys", "create", "--name", "load", "--role", "admin", "--json"], env=env,
                                 cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
        key = json.loads(created.stdout)["token"]
        ports = {"A": free_port(), "B": free_port()}
        replicas = {}
        for name, port in ports.items():
            replica_env = {**env, "KB_ADMIN__ENABLED": "true" if name == "A" else "false"}  # as docker-compose.yml
            replicas[name] = start(f"replica-{name}", [*kb, "serve", "--host", "127.0.0.1", "--port", str(port)],
                                   replica_env)  # fmt: skip
        for name, port in ports.items():
            wait_http(
                f"http://127.0.0.1:{port}/readyz", replicas[name], f"replica {name}", workdir / f"replica-{name}.log"
            )
        urls = [f"http://127.0.0.1:{port}" for port in ports.values()]
        headers = {"Authorization": f"Bearer {key}"}
        files = [("files", (p.name, p.read_bytes())) for p in sorted(HANDBOOK.iterdir()) if p.is_file()]
        r = httpx.post(f"{urls[0]}/admin/collections/{COLLECTION}/documents", files=files, headers=headers, timeout=60)
        r.raise_for_status()
        job_id = r.json()["id"]
        deadline = time.monotonic() + 300
        while (job := httpx.get(f"{urls[0]}/admin/jobs/{job_id}", headers=headers).json())["status"] not in (
            "succeeded",
            "failed",
        ):
            if time.monotonic() > deadline:
                raise SystemExit("ingesting the handbook took over 300 s")
            time.sleep(0.5)
        if job["status"] != "succeeded":
            raise SystemExit(f"ingesting the handbook failed: {job}")
        print(f"spawned in {workdir}: chroma :{chroma_port}, redis :{redis_port}, replicas {urls} "
              f"(A admin), database {database_url or 'kb.sqlite3'}, handbook ingested: {job['summary']}")  # fmt: skip
        pids = {"replica A": replicas["A"].pid, "replica B": replicas["B"].pid,
                "chroma": chroma.pid, "redis": redis_proc.pid}  # fmt: skip
        yield Cluster(urls, urls[0], key, pids)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
        if postgres:
            subprocess.run(["sh", str(ROOT / "scripts" / "test-postgres.sh"), "stop", str(pg_dir)], capture_output=True)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", action="append", default=[], help="Base URL of a replica (repeat; round-robin).")
    p.add_argument("--key", default=os.environ.get("KB_API_KEY"), help="API key (default $KB_API_KEY).")
    p.add_argument("--admin-url", help="Replica serving the admin API, for --ingest-every (default: the first URL).")
    p.add_argument("--clients", type=int, default=50, help="Closed loop: concurrent clients.")
    p.add_argument("--duration", type=float, default=60, help="Seconds of load.")
    p.add_argument("--rate", type=float, default=0, help="Open loop: requests per second (0: closed loop).")
    p.add_argument("--max-in-flight", type=int, default=400, help="Open loop: outstanding requests at most.")
    p.add_argument("--ingest-every", type=float, default=0, help="Seconds between admin ingestions (0: none).")
    p.add_argument("--no-cache-share", type=float, default=0.25, help='Share of requests with "cache": false.')
    p.add_argument("--timeout", type=float, default=60, help="Per request, seconds; beyond it: an error.")
    p.add_argument("--warmup", type=float, default=10, help="Seconds of light load before measuring (and RSS start).")
    p.add_argument("--pids", default="", help="Server PIDs to watch, comma-separated (RSS from /proc).")
    p.add_argument("--spawn", action="store_true", help="Start Chroma + Redis + two replicas here and load them.")
    p.add_argument("--workdir", type=Path, help="--spawn: where data and logs go (default: a new temp dir).")
    p.add_argument("--scenario", choices=["issue8"], help="issue8: 50 clients x 60 s, then the soak.")
    p.add_argument("--postgres", action="store_true", help="--spawn: share a throwaway PostgreSQL, not kb.sqlite3.")
    p.add_argument("--soak-duration", type=float, default=600, help="--scenario issue8: soak seconds.")
    return p.parse_args(argv)


def phases_for(args: argparse.Namespace) -> list[Phase]:
    if args.scenario == "issue8":
        return [
            Phase("load: 50 concurrent clients, 60 s", 60, clients=50),
            Phase(
                f"soak: 20 requests/s for {args.soak_duration:.0f} s, ingestion every 60 s",
                args.soak_duration,
                rate=20,
                ingest_every_s=60,
            ),
        ]
    if args.rate > 0:
        name = f"open loop: {args.rate:g} requests/s for {args.duration:.0f} s"
    else:
        name = f"closed loop: {args.clients} concurrent clients for {args.duration:.0f} s"
    if args.ingest_every > 0:
        name += f", ingestion every {args.ingest_every:g} s"
    return [Phase(name, args.duration, clients=args.clients, rate=args.rate, ingest_every_s=args.ingest_every)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    phases = phases_for(args)
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; {machine()}; load {os.getloadavg()[0]:.1f}")
    if args.spawn:
        if args.url:
            raise SystemExit("--spawn starts its own replicas: leave out --url")
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kb-load-"))
        workdir.mkdir(parents=True, exist_ok=True)
        with spawn(workdir, postgres=args.postgres) as cluster:
            ok = asyncio.run(run(cluster.urls, cluster.key, cluster.admin_url, phases, cluster.pids, args))
    else:
        if not args.url or not args.key:
            raise SystemExit("give --url (one or more) and --key, or use --spawn")
        urls = [require_loopback(u) for u in args.url]
        admin_url = require_loopback(args.admin_url) if args.admin_url else urls[0]
        pids = {f"pid {p}": int(p) for p in args.pids.split(",") if p.strip()}
        ok = asyncio.run(run(urls, args.key, admin_url, phases, pids, args))
    print(f"\nload at the end: {os.getloadavg()[0]:.1f}; {'no errors' if ok else 'ERRORS (see above)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
