"""Where a query waits while the same process ingests: stacks sampled during slow queries.

Opens a collection built by bench/scale.py (default: the 1M one) in-process, ingests --docs documents the
base left out in a thread, and asks distinct hybrid questions in a loop meanwhile; whenever a query has run
for over a second, every thread's stack is sampled (every 0.3 s). Prints the slow queries and the most
common sampled stacks: what the query thread waited on, and what the ingestion was doing then.

Usage: .venv/bin/python bench/scale_stalls.py [--data-dir /tmp/kb-scale/1m] [--docs 100] [--offset 600]
"""

from __future__ import annotations

import argparse
import collections
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
    args = parser.parse_args()
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

    def watchdog() -> None:
        while not done.is_set():
            since = asking["since"]
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
    print(f"{len(latencies)} queries; over 500 ms: {[(round(t, 1), round(ms)) for t, ms in latencies if ms > 500]}")
    for stack, count in samples.most_common(12):
        print(count, stack)


if __name__ == "__main__":
    main()
