"""Ingestion on the shared queue: one `kb ingest` process vs one and two `kb worker` processes.

Real documentation sections (the shared sqlite-docs corpus, one Markdown file per section; generated
pages where it is missing) are ingested three times into a `chroma run` server and a throwaway
PostgreSQL cluster (scripts/test-postgres.sh), each time into a new collection and with empty data
dirs (no embedding cache hits):
  1. baseline: `kb ingest FOLDER` in one process (the simplest thing an operator can do);
  2. the same files through the queue (`kb ingest --queue`) with one `kb worker`, one document in
     flight (KB_QUEUE__CONCURRENCY=1), then two (the default);
  3. the same with two `kb worker` processes (two in flight each).
Workers are started and warm (model loaded) before the job is queued; the time is from the job's
creation to its end (both stamped in the database), and each worker's CPU seconds come from /proc.
Then the Chroma server's own upsert rate (384-d vectors with metadata, batches of 1,000) for the
capacity model in docs/benchmarks.md.

Usage: .venv/bin/python bench/workers.py [--docs 600] [--workdir /tmp/kb-bench-workers]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
KB = Path(sys.executable).parent / "kb"
TICKS = os.sysconf("SC_CLK_TCK")

from corpus10k import source_documents  # noqa: E402  (bench/ is on sys.path)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def start_postgres(workdir: Path) -> str:
    out = subprocess.run(["sh", str(ROOT / "scripts/test-postgres.sh"), "start", str(workdir / "pg")],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def start_chroma(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    chroma = Path(sys.executable).parent / "chroma"
    proc = subprocess.Popen([str(chroma), "run", "--path", str(workdir / "chroma"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    import httpx

    for _ in range(100):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("chroma run did not start")


def kb_env(base: dict[str, str], data_dir: Path) -> dict[str, str]:
    return {**base, "KB_DATA_DIR": str(data_dir)}


def wait_job(env: dict[str, str], job_id: str) -> dict[str, object]:
    while True:
        shown = subprocess.run([str(KB), "jobs", "show", job_id], env=env, capture_output=True, text=True, check=True)
        job = json.loads(shown.stdout)
        if job["status"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.5)


def run_workers(base: dict[str, str], workdir: Path, corpus: Path, n: int, concurrency: int) -> dict[str, object]:
    collection = f"workers{n}c{concurrency}"
    base = {**base, "KB_QUEUE__CONCURRENCY": str(concurrency)}
    logs, procs = [], []
    for i in range(n):
        log = workdir / f"worker-{n}c{concurrency}-{i}.log"
        logs.append(log)
        env = kb_env(base, workdir / f"w{n}c{concurrency}-{i}")
        procs.append(subprocess.Popen([str(KB), "worker", "--name", f"w{i + 1}"], env=env,
                                      stdout=log.open("wb"), stderr=subprocess.STDOUT))  # fmt: skip
    while not all("taking documents" in log.read_text() for log in logs):  # model loaded, queue polled
        time.sleep(0.2)
    cli = kb_env(base, workdir / f"cli-{n}c{concurrency}")
    cpu_before = [cpu_seconds(p.pid) for p in procs]
    queued = subprocess.run([str(KB), "ingest", str(corpus), "-c", collection, "--queue"], env=cli,
                            capture_output=True, text=True, check=True)  # fmt: skip
    job_id = queued.stdout.split("queued job ", 1)[1].split(":", 1)[0]
    job = wait_job(cli, job_id)
    cpu = [cpu_seconds(p.pid) - before for p, before in zip(procs, cpu_before, strict=True)]
    seconds = float(job["finished_at"]) - float(job["created_at"])  # type: ignore[arg-type]  # queued → done
    for p in procs:
        p.terminate()
        p.wait()
    summary = job["summary"]
    assert isinstance(summary, dict) and not summary["failed"], summary
    per_worker = {}
    for r in job["results"]:  # type: ignore[attr-defined]
        per_worker[r["worker"]] = per_worker.get(r["worker"], 0) + 1
    return {"seconds": seconds, "chunks": summary["chunks_written"], "cpu": cpu, "files_per_worker": per_worker}


def chroma_upserts(port: int, n: int = 10_000) -> float:
    import numpy as np

    from vectorstore.store import VectorStore

    store = VectorStore.http("127.0.0.1", port)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    started = time.perf_counter()
    for s in range(0, n, 1000):
        ids = [f"u{i}" for i in range(s, s + 1000)]
        store.upsert("upserts", ids, vectors[s : s + 1000].tolist(), ["text " * 60] * 1000,
                     [{"document_id": f"d{i // 5}", "source": f"d{i // 5}.md", "doc_hash": "h", "page": 1}
                      for i in range(s, s + 1000)])  # fmt: skip
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kb-bench-workers"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    corpus = args.workdir / "corpus"
    corpus.mkdir()
    docs, _ = source_documents()
    sqlite_docs = [d for d in docs if d[0].startswith("sqlite-docs")] or docs
    for name, text in sqlite_docs[: args.docs]:
        (corpus / name).write_text(text)
    url = start_postgres(args.workdir)
    chroma = start_chroma(args.workdir, 8765)
    base = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    base.update({"HF_HUB_OFFLINE": "1", "KB_DATABASE__URL": url, "KB_QUEUE__BACKEND": "postgres",
                 "KB_VECTORSTORE__MODE": "http", "KB_VECTORSTORE__PORT": "8765"})  # fmt: skip
    try:
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
              f"{time.strftime('%Y-%m-%d')}; {len(list(corpus.iterdir()))} sqlite-docs sections")  # fmt: skip
        env = kb_env(base, args.workdir / "single")
        started = time.perf_counter()
        out = subprocess.run([str(KB), "ingest", str(corpus), "-c", "single", "--json"], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        single = time.perf_counter() - started
        report = json.loads(out.stdout)
        print(f"kb ingest, 1 process (model load included): {single:.1f} s, {report['chunks_written']} chunks, "
              f"{report['chunks_written'] / single:.1f} chunks/s (ingestion alone {report['seconds']:.1f} s: "
              f"{report['chunks_written'] / report['seconds']:.1f} chunks/s)")  # fmt: skip
        results = {}
        for n, concurrency in ((1, 1), (1, 2), (2, 2)):
            r = run_workers(base, args.workdir, corpus, n, concurrency)
            results[n, concurrency] = r
            cpu = ", ".join(f"{c:.0f} s ({c / r['seconds']:.0%} of a core)" for c in r["cpu"])  # type: ignore[attr-defined]
            print(f"{n} worker(s), {concurrency} document(s) in flight each: {r['seconds']:.1f} s, {r['chunks']} "
                  f"chunks, {r['chunks'] / r['seconds']:.1f} chunks/s; CPU per worker: {cpu}; "  # type: ignore[operator]
                  f"files per worker: {r['files_per_worker']}")  # fmt: skip
        ratio = float(results[1, 2]["seconds"]) / float(results[2, 2]["seconds"])  # type: ignore[arg-type]
        print(f"2 workers vs 1 (2 in flight each): {ratio:.2f}x the throughput")
        print(f"Chroma server upserts (384-d, batches of 1,000, one client): {chroma_upserts(8765):,.0f} vectors/s")
    finally:
        chroma.terminate()
        chroma.wait()
        subprocess.run(["sh", str(ROOT / "scripts/test-postgres.sh"), "stop", str(args.workdir / "pg")], check=False)


if __name__ == "__main__":
    main()
