"""Where a data dir's bytes are: each SQLite file by table and index (SQLite's dbstat), the other files by kind.

For the scale benchmark's question "what are Chroma's 6 GB at a million chunks?": Chroma keeps every
string metadata value of every chunk (the chunk's text included, as ``chroma:document``) in
``embedding_metadata``, indexes it in ``embedding_metadata_string_value``, and again in a trigram
full-text index (``embedding_fulltext_search*``); kb's own database holds the text once more for BM25.

Usage: .venv/bin/python bench/disk_breakdown.py DATA_DIR [--top 12]
"""

from __future__ import annotations

import argparse
import sqlite3
from collections import Counter
from pathlib import Path


def sqlite_tables(path: Path) -> list[tuple[str, float]]:
    """(table or index, MB) by size, from the file's own page accounting."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    finally:
        conn.close()
    return [(name, size / 1e6) for name, size in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    other: Counter[str] = Counter()
    for path in sorted(p for p in args.data_dir.rglob("*") if p.is_file()):
        size = path.stat().st_size / 1e6
        if path.suffix == ".sqlite3" and size > 1:
            print(f"{path.relative_to(args.data_dir)}: {size:,.0f} MB")
            for name, mb in sqlite_tables(path)[: args.top]:
                print(f"    {name:45s} {mb:10,.1f} MB")
        else:
            kind = path.relative_to(args.data_dir).parts[0] + (f"/*{path.suffix}" if path.suffix else "")
            other[kind] += size
    print("other files:")
    for kind, mb in other.most_common(args.top):
        print(f"    {kind:45s} {mb:10,.1f} MB")


if __name__ == "__main__":
    main()
