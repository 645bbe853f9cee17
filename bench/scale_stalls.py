"""Where a query waits while the same process ingests: stacks sampled during slow queries.

Opens a collection built by bench/scale.py (default: the 1M one) in-process, ingests --docs documents the
base left out in a thread, and asks distinct hybrid questions in a loop meanwhile; whenever a query has run
for over a second, every thread's stack is sampled (every 0.3 s). Prints the slow queries and the most
common sampled stacks: what the query thread waited on, and what the ingestion was doing then.

With ``--py-spy PATH`` (a py-spy binary: a diagnostic tool, not a kb dependency) each slow query also gets
one dump of every thread with native frames (what a Rust or C extension is doing while it holds the GIL
or a lock), saved beside the data dir; the dump pauses the process for a while, so the latencies of a
run with dumps are not figures. Garbage-collector passes over 100 ms are printed as well.

Usage: .venv/bin/python bench/scale_stalls.py [--data-dir /tmp/kb-scale/1m] [--docs 100] [--offset 600]
       [--py-spy /path/to/py-spy]
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corpus10k import source_documents  # noqa: E402  (bench/ is on sys.path)
from http_query import distinct  # noqa: E402
from scale_corpus import SCALE_COLLECTION, components_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/kb-scale/1m"))
    parser.add_argument("--base", type=Path, default=Path("/tmp/kb-scale/base"))
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--offset", type=int, default=600, help="which of the left-out documents (vary per run)")
    parser.add_argument("--py-spy", help="a py-spy binary: a native dump of every thread during each slow query")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(relativeCreated)8.0f ms %(levelname)s %(name)s: %(message)s")
    docs, questions = source_documents()
    used = {p.name for p in (args.base / "corpus").iterdir()}
    new = [d for d in docs if d[0] not in used][args.offset : args.offset + args.docs]
    folder = args.data_dir / f"stall-{int(time.time())}"
    folder.mkdir()
    for name, text in new:
        (folder / f"{folder.name}-{name}").write_text(text, encoding="utf-8")
    components = components_for(args.data_dir)
    components.warm()
    asking: dict[str, float | None] = {"since": None}
    samples: collections.Counter[str] = collections.Counter()
    main_thread = threading.get_ident()
    done = threading.Event()

    opened = time.perf_counter()
    gc_started: dict[int, float] = {}
    slow_gc: list[tuple[float, int, float]] = []

    def gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[info["generation"]] = time.perf_counter()
        elif (took := time.perf_counter() - gc_started.get(info["generation"], time.perf_counter())) > 0.1:
            slow_gc.append((round(time.perf_counter() - opened, 1), info["generation"], round(took, 2)))

    gc.callbacks.append(gc_timer)
    dumps: list[Path] = []

    def watchdog() -> None:
        dumped_for: float | None = None
        while not done.is_set():
            since = asking["since"]
            if since is not None and time.perf_counter() - since > 1.0 and args.py_spy and dumped_for != since:
                dumped_for = since
                out = folder.parent / f"{folder.name}-dump{len(dumps)}.txt"
                with out.open("w") as f:
                    subprocess.run([args.py_spy, "dump", "--native", "--pid", str(os.getpid())], stdout=f,
                                   stderr=subprocess.STDOUT, check=False)  # fmt: skip
                dumps.append(out)
            if since is not None and time.perf_counter() - since > 1.0:
                for tid, frame in sys._current_frames().items():
                    stack = traceback.extract_stack(frame)[-6:][::-1]
                    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in stack)
                    samples[("QUERY " if tid == main_thread else "other ") + where] += 1
            time.sleep(0.3)

    threading.Thread(target=watchdog, daemon=True).start()
    ingestion = threading.Thread(
        target=lambda: print("ingested:", components.ingest_pipeline.ingest([folder], SCALE_COLLECTION).as_dict())
    )
    started = time.perf_counter()
    ingestion.start()
    latencies: list[tuple[float, float]] = []
    for question in distinct(questions, 100_000, 11):
        if not ingestion.is_alive() and time.perf_counter() - started > 5:
            break
        asked = asking["since"] = time.perf_counter()
        components.retriever.search(question, [SCALE_COLLECTION], 5)
        latencies.append((time.perf_counter() - started, (time.perf_counter() - asked) * 1000))
        asking["since"] = None
    done.set()
    components.close()
    print(f"{len(latencies)} queries; over 500 ms (seconds after the ingestion started, ms): "
          f"{[(round(t, 1), round(ms)) for t, ms in latencies if ms > 500]}")  # fmt: skip
    for stack, count in samples.most_common(12):
        print(count, stack)
    print(f"ingestion started {started - opened:.1f} s in; garbage-collector passes over 100 ms "
          f"(seconds in, generation, seconds): {slow_gc}")  # fmt: skip
    print("native dumps during slow queries:", *dumps)


if __name__ == "__main__":
    main()
