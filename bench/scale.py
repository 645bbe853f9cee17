"""How cost grows with the collection: 10k, 100k and 1M chunks on one box, measured over HTTP.

For each size (collections built by bench/scale_corpus.py, whose docstring says how):
  - open: `kb serve` started on the data dir, seconds until /readyz answers 200, then the first
    query's latency (anything built lazily is paid there);
  - POST /search p50/p95 for dense, lexical and hybrid, 1 client and --clients concurrent clients,
    each request a distinct real question (the shared datasets' FAQ questions, reworded);
    POST /chat (hybrid, offline extractive provider, answer cache bypassed) with 1 client;
  - RSS of the API process (now and peak), size of the data dir on disk;
  - `kb ingest --queue --wait` of 100 new documents (real sections the base left out; the server ingests
    them, as on an embedded store it must) while one client keeps asking a
    question only those documents answer: seconds from the start of the ingestion to the first answer
    citing one of them, the first query after the ingestion ended, and the slowest query meanwhile
    (a query that waits for an index rebuild shows here);
  - restart: the server stopped and started again, seconds to ready and its first query.
Results go to <data-dir>/results.json (one entry per size and store setup); ``--plot`` draws
docs/img/scale.png from it. Nothing here is a test: figures, not assertions.

Usage: .venv/bin/python bench/scale.py [--data-dir /tmp/kb-scale] [--sizes 10k,100k,1m]
       [--requests 200] [--clients 20] [--warm-disk] [--plot]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corpus10k import COLLECTION as BASE_COLLECTION  # noqa: E402  (bench/ is on sys.path)
from corpus10k import build_collection, source_documents  # noqa: E402
from http_query import distinct, free_port, machine, wait_until_up  # noqa: E402
from scale_corpus import SCALE_COLLECTION, build_scaled, built_chunks, components_for, load_base  # noqa: E402

SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}


def create_key(data_dir: Path) -> str:
    components = components_for(data_dir)
    try:
        return components.keys.create(f"scale-{int(time.time())}", "employee", [SCALE_COLLECTION]).token
    finally:
        components.close()


class Server:
    """`kb serve` on a data dir; ``start()`` returns the seconds until /readyz said ready."""

    def __init__(self, data_dir: Path):
        self.data_dir, self.port = data_dir, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_start = 0

    def env(self) -> dict[str, str]:
        return {**os.environ, "KB_DATA_DIR": str(self.data_dir / "data"), "KB_LLM__PROVIDER": "extractive",
                "KB_LIMITS__REQUESTS_PER_MINUTE": "0", "KB_LOG_LEVEL": "INFO"}  # fmt: skip

    def start(self) -> float:
        cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.log_start = (self.data_dir / "server.log").stat().st_size if (self.data_dir / "server.log").exists() else 0
        log = (self.data_dir / "server.log").open("ab")
        self.proc = subprocess.Popen(cmd, env=self.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        return wait_until_up(self.proc, f"{self.base}/readyz", timeout_s=900, log=self.data_dir / "server.log")

    def settle(self, timeout_s: float = 600) -> float:
        """If this start serves a saved BM25 snapshot while a child rebuilds it (the collection changed since it
        was saved), wait for the rebuild to be in: seconds waited. The query phases then measure the steady
        state, not queries beside a rebuild (what that costs shows in the ingestion phase)."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            with (self.data_dir / "server.log").open("rb") as f:
                f.seek(self.log_start)
                text = f.read().decode("utf-8", "replace")
            if "while version" not in text or "in a child process" in text.split("while version", 1)[1]:
                return time.perf_counter() - started
            time.sleep(1)
        return time.perf_counter() - started

    def rss_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the server process in MB."""
        assert self.proc is not None
        return rss_of(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
            self.proc = None


def rss_of(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else float("nan")


async def phase(base: str, token: str, route: str, bodies: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """``bodies`` posted to ``route`` by ``clients`` concurrent clients: p50/p95/max ms, errors, req/s."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    ms: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=300,
                                 limits=limits) as client:  # fmt: skip

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                t0 = time.perf_counter()
                r = await client.post(route, json=body)
                ms.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {r.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
    return {"n": len(ms), "errors": len(errors), "first_error": errors[0] if errors else None, "p50": pct(ms, 0.5),
            "p95": pct(ms, 0.95), "max": round(max(ms, default=0.0), 1), "rps": round(len(ms) / wall, 1)}  # fmt: skip


def one_query(base: str, token: str, query: str, mode: str = "hybrid") -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    r = httpx.post(f"{base}/search", json={"query": query, "collection": SCALE_COLLECTION, "mode": mode, "top_k": 5},
                   headers={"Authorization": f"Bearer {token}"}, timeout=600)  # fmt: skip
    return (time.perf_counter() - t0) * 1000, r.json()


def question_for(text: str) -> str:
    """The first 20 words of a document's first sentence-like line: what only it answers (checked by main)."""
    lines = [ln for ln in text.splitlines()[1:] if len(ln.split()) >= 6]
    return " ".join((lines[0] if lines else text).split()[:20])


def remove_earlier_runs(size_dir: Path) -> int:
    """Delete the documents earlier runs' ingestion phases (and bench/scale_stalls.py's probes) added: the
    collection is back to its size, and this run's documents are not copies of documents already there (a
    probe's copy of the asked document outranked it once). Returns how many runs there were."""
    components = components_for(size_dir)
    try:
        for record in components.manifest.documents(SCALE_COLLECTION):
            if record.source.startswith(("new-", "stall-")):  # and bench/scale_stalls.py's probes
                components.admin.delete_document(SCALE_COLLECTION, record.source)
    finally:
        components.close()
    return len(list(size_dir.glob("new-*")))


def ingest_while_asking(server: Server, token: str, docs: list[tuple[str, str]]) -> dict[str, Any]:
    """`kb ingest` of ``docs`` while a client asks for the last of them every 0.2 s."""
    folder = server.data_dir / f"new-{int(time.time())}"
    folder.mkdir()
    run = folder.name  # new names each run: a second run must ingest, not find them unchanged
    for name, text in docs:
        (folder / f"{run}-{name}").write_text(text, encoding="utf-8")
    name, text = f"{run}-{docs[-1][0]}", docs[-1][1]
    question = question_for(text)
    samples: list[tuple[float, float, bool]] = []  # (seconds since start, latency ms, found)
    stop = threading.Event()
    started = time.perf_counter()

    def asker() -> None:
        while not stop.is_set():
            ms, body = one_query(server.base, token, question)
            found = any(str(hit.get("source", "")).endswith(name) for hit in body.get("results", []))
            samples.append((time.perf_counter() - started, ms, found))
            time.sleep(0.2)

    thread = threading.Thread(target=asker, daemon=True)
    thread.start()
    # --queue: the server ingests (an embedded store has one process, docs/operations.md); --wait: until done
    cmd = [
        sys.executable,
        "-m",
        "app.cli",
        "ingest",
        str(folder),
        "--collection",
        SCALE_COLLECTION,
        "--queue",
        "--wait",
    ]
    done = subprocess.run(cmd, env=server.env(), cwd=ROOT, capture_output=True, text=True)
    ingest_s = time.perf_counter() - started
    time.sleep(15)  # queries after the ingestion: a rebuild after the writes shows here
    stop.set()
    thread.join(timeout=600)
    after = [s for s in samples if s[0] >= ingest_s]
    first_found = next((t for t, _, found in samples if found), None)
    return {
        "ingest_s": round(ingest_s, 1), "ingest_exit": done.returncode, "docs": len(docs), "asked": name,
        "first_answer_s": round(first_found, 1) if first_found is not None else None,
        "first_query_after_ms": round(after[0][1], 1) if after else None,
        "max_query_ms_during": round(max((ms for _, ms, _ in samples), default=0.0), 1),
        "queries_during": len(samples),
        "samples": [[round(t, 2), round(ms, 1), found] for t, ms, found in samples],
        "ingest_tail": (done.stdout or done.stderr)[-300:] if done.returncode else "",
    }  # fmt: skip


def measure(size_dir: Path, questions: list[str], new_docs: list[tuple[str, str, bool]], requests: int, clients: int,
            chroma_pid: int | None = None) -> dict[str, Any]:  # fmt: skip
    runs = remove_earlier_runs(size_dir)
    # 100 documents each run, wrapping around the kept ones (a slice from the end had given a run 25)
    fresh = [new_docs[(runs * 100 + i) % len(new_docs)] for i in range(min(100, len(new_docs)))]
    # the document asked for during the ingestion: one whose question no other text has (the SQLite release
    # notes repeat their lines from section to section: 91 of 100 left-out sections' questions are in the base)
    unique = next((d for d in reversed(fresh) if d[2]), None) or next((d for d in new_docs if d[2]), fresh[-1])
    fresh = [d for d in fresh if d is not unique][:99]
    picked = [(d[0], d[1]) for d in fresh] + [(unique[0], unique[1])]
    token = create_key(size_dir)
    server = Server(size_dir)
    result: dict[str, Any] = {"disk_mb": round(du_mb(size_dir / "data"), 1)}
    try:
        result["open_s"] = round(server.start(), 2)
        result["first_query_ms"] = round(one_query(server.base, token, questions[0])[0], 1)
        result["rebuild_after_open_s"] = round(server.settle(), 1)
        offset = 1
        for mode in ("dense", "lexical", "hybrid"):
            for n_clients in (1, clients):
                bodies = [{"query": q, "collection": SCALE_COLLECTION, "mode": mode, "top_k": 5}
                          for q in distinct(questions, requests, offset)]  # fmt: skip
                offset += requests
                result[f"search_{mode}_{n_clients}"] = asyncio.run(
                    phase(server.base, token, "/search", bodies, n_clients)
                )
                print(f"    {mode}, {n_clients} client(s): {result[f'search_{mode}_{n_clients}']}", flush=True)
        chat = [{"question": q, "collection": SCALE_COLLECTION, "cache": False}
                for q in distinct(questions, requests // 2, offset)]  # fmt: skip
        result["chat_hybrid_1"] = asyncio.run(phase(server.base, token, "/chat", chat, 1))
        result["rss_mb"], result["rss_peak_mb"] = (round(x) for x in server.rss_mb())
        if chroma_pid:  # a Chroma server's process holds the HNSW index instead of the API's
            result["chroma_rss_mb"], result["chroma_rss_peak_mb"] = (round(x) for x in rss_of(chroma_pid))
        print(f"    chat: {result['chat_hybrid_1']}; RSS {result['rss_mb']} MB", flush=True)
        result["ingest"] = ingest_while_asking(server, token, picked)
        print(f"    ingest: {result['ingest']}", flush=True)
        result["rss_after_ingest_mb"] = round(server.rss_mb()[0])
        server.stop()
        # the restart reads back Chroma's HNSW files: rewritten during the ingestion (1.6 GB at 1M), they may
        # still be flushing to the disk, or gone from this VM's page cache (docs/benchmarks.md)
        result["before_restart"] = disk_state(size_dir / "data" / "chroma")
        result["restart_s"] = round(server.start(), 2)
        result["first_query_after_restart_ms"] = round(one_query(server.base, token, questions[1])[0], 1)
        result["rebuild_after_restart_s"] = round(server.settle(), 1)
        # with every index complete: does the question find the document at all (else first_answer_s says nothing)
        asked = result["ingest"]["asked"]
        body = one_query(server.base, token, question_for(picked[-1][1]))[1]
        result["ingest"]["asked_found_when_indexed"] = any(
            str(h.get("source", "")).endswith(asked) for h in body.get("results", [])
        )
    finally:
        server.stop()
    return result


def disk_state(chroma_dir: Path) -> dict[str, float]:
    """Dirty and under-writeback page cache (MB), and the age (s) of the newest HNSW file under ``chroma_dir``."""
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    newest = max((f.stat().st_mtime for f in chroma_dir.glob("*/data_level0.bin")), default=time.time())
    mb = {key: round(int(meminfo[key].split()[0]) / 1024) for key in ("Dirty", "Writeback")}
    return {"dirty_mb": mb["Dirty"], "writeback_mb": mb["Writeback"], "hnsw_age_s": round(time.time() - newest, 1)}


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def warm_disk(path: Path) -> int:
    """Read every file under ``path`` once (into the kernel's page cache): bytes read."""
    total = 0
    for file in path.rglob("*"):
        if file.is_file():
            with file.open("rb") as f:
                while chunk := f.read(1 << 22):
                    total += len(chunk)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/kb-scale"))
    parser.add_argument("--sizes", default="10k,100k,1m")
    parser.add_argument("--requests", type=int, default=200, help="requests per measured phase")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--setup", default="embedded", help="a label for the store setup the KB_* environment names")
    parser.add_argument("--plot", action="store_true", help="draw docs/img/scale.png from results.json and stop")
    parser.add_argument("--chroma-pid", type=int, help="the Chroma server (KB_VECTORSTORE__MODE=http): its RSS too")
    parser.add_argument("--build-only", action="store_true", help="build the collections, measure nothing")
    parser.add_argument(
        "--warm-disk",
        action="store_true",
        help="read the data dir's files once before the server starts (the page cache of a server "
        "that has run a while; this VM's disk reads ~95 MB/s, and its cache is dropped between runs)",
    )
    args = parser.parse_args()
    results_file = args.data_dir / "results.json"
    if args.plot:
        from scale_plot import plot

        plot(json.loads(results_file.read_text()), ROOT / "docs" / "img" / "scale.png")
        return
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; {machine()}", flush=True)
    docs, questions = source_documents()
    base_dir = args.data_dir / "base"
    labels = args.sizes.split(",")
    base = None
    # the base (embedded, its own data dir) is only opened to build: with --setup naming a server setup in
    # the KB_* environment, a collection built before is measured as it is and the base is not touched
    if any(built_chunks(args.data_dir / label) < SIZES[label] for label in labels):
        build_collection(base_dir, docs)
        base = load_base(base_dir, BASE_COLLECTION)
        print(f"base: {len(base.ids):,} chunks of {len(base.documents):,} documents", flush=True)
    used = {p.name for p in (base_dir / "corpus").iterdir()}
    seen = "\n".join(text for name, text in docs if name in used)
    # the documents the base left out, each marked whether its question is its own (no other text has it)
    left_out = [(name, text) for name, text in docs if name not in used]
    others = "\n".join(text for _, text in left_out)
    new_docs = [(name, text, question_for(text) not in seen and others.count(question_for(text)) == 1)
                for name, text in left_out]  # fmt: skip
    print(f"{len(new_docs)} new documents kept for the ingestion phase", flush=True)
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for label in labels:
        size_dir = args.data_dir / label
        started = time.perf_counter()
        chunks = build_scaled(base, size_dir, SIZES[label]) if base is not None else built_chunks(size_dir)
        print(f"{label}: {chunks:,} chunks (built in {time.perf_counter() - started:.0f} s)", flush=True)
        if args.build_only:
            continue
        if args.warm_disk:
            print(f"    read {warm_disk(size_dir / 'data') / 1e9:.1f} GB into the page cache", flush=True)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        figures = measure(size_dir, questions, new_docs, args.requests, args.clients, args.chroma_pid)
        entry = {"chunks": chunks, "setup": args.setup, "date": when, "machine": machine(), **figures}
        results[f"{args.setup}/{label}"] = entry
        results_file.write_text(json.dumps(results, indent=1))
        print(json.dumps(entry, indent=1), flush=True)


if __name__ == "__main__":
    main()
