"""kb search: what retrieval finds for a query, with each retriever's score (as POST /search)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from app.bootstrap import Components
from app.cli.common import cli, console, fail, out, setup
from app.errors import KbError
from app.rag.options import SearchOptions
from app.rag.retrieval import SearchFilters


@cli.command()
def search(
    query: Annotated[str, typer.Argument(help="What to search for.")],
    collection: Annotated[
        list[str], typer.Option("--collection", "-c", help="Collection to search (repeat for several).")
    ],
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="Chunks to return.")] = None,
    mode: Annotated[str | None, typer.Option(help="hybrid (default), dense or lexical.")] = None,
    source: Annotated[list[str] | None, typer.Option(help="Only chunks of this document (repeatable).")] = None,
    page_min: Annotated[int | None, typer.Option(help="Only chunks on this page or later.")] = None,
    page_max: Annotated[int | None, typer.Option(help="Only chunks on this page or earlier.")] = None,
    heading: Annotated[str | None, typer.Option(help="Only chunks under exactly this heading.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Search collections without answering: ranked chunks with dense and BM25 scores."""
    settings = setup()
    components = Components(settings)
    filters = SearchFilters(tuple(source or ()), page_min, page_max, heading)
    try:
        hits = components.rag.search(query, collection, SearchOptions(top_k, mode, filters))  # type: ignore[arg-type]
    except KbError as exc:
        raise fail(exc) from exc
    finally:
        components.close()
    if as_json:
        out.print_json(json.dumps([h.as_dict() for h in hits]))
        return
    if not hits:
        console.print("no matching chunks")
    for i, h in enumerate(hits, start=1):
        m = h.metadata
        where = f"{m.get('source')}" + (f", page {m['page']}" if m.get("page") is not None else "")
        where += f" — {m['heading']}" if m.get("heading") else ""
        dense = f"{h.dense:.3f}" if h.dense is not None else "-"
        lexical = f"{h.lexical:.2f}" if h.lexical is not None else "-"
        out.print(f"{i:2d}. [{h.collection}] {where}  [dim](score {h.score:.4f}, dense {dense}, bm25 {lexical})[/dim]")
        snippet = " ".join(h.text.split())
        out.print(f"    {snippet[:200]}{'…' if len(snippet) > 200 else ''}", markup=False, highlight=False)
