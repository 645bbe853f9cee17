"""A `kb ingest` that runs many rounds in one process (tests/ingest/test_ingest_race.py).

Loading the model takes seconds; the race is about what two writers do to one
collection, so each worker process loads everything once, then ingests its folder
into collection ``race-<n>`` whenever the file ``<go>/<n>`` appears, and writes its
report to ``<go>/<n>.<name>.json``. Real processes, a real Chroma server and the
shared database (kb.sqlite3 in one data dir, or PostgreSQL with a data dir per "host").
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from app.bootstrap import Components
from app.settings import Settings


def main(data_dir: str, folder: str, go: str, rounds: int, name: str) -> None:
    components = Components(Settings(_env_file=None, data_dir=Path(data_dir)))  # type: ignore[call-arg]
    pipeline = components.ingest_pipeline
    (Path(go) / f"ready.{name}").touch()
    for n in range(rounds):
        while not (Path(go) / str(n)).exists():
            time.sleep(0.005)
        report = pipeline.ingest([Path(folder)], f"race-{n}")
        (Path(go) / f"{n}.{name}.tmp").write_text(json.dumps(report.as_dict()))
        (Path(go) / f"{n}.{name}.tmp").rename(Path(go) / f"{n}.{name}.json")
    components.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
