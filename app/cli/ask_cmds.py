"""kb ask: a question answered in this process, with its citations and sentence support."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from app.bootstrap import Components
from app.cli.common import cli, fail, out, setup
from app.errors import KbError
from app.rag.answer import Answer
from app.rag.options import AskOptions


@cli.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to answer from.")],
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="Passages to retrieve.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt version, e.g. answer@v1.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Bypass the response cache.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full answer as JSON.")] = False,
    support_policy: Annotated[
        str | None,
        typer.Option(
            "--support-policy",
            help="Unsupported sentences: flag (mark them), drop (remove them) or refuse (answer 'not in the "
            "documents' when half the answer is unsupported). Default: KB_SUPPORT__POLICY.",
        ),
    ] = None,
) -> None:
    """Answer a question without a server: the same answer as POST /chat, each sentence with the words that
    support it (or a mark that nothing does)."""
    settings = setup()
    components = Components(settings)
    try:
        options = AskOptions(
            top_k=top_k, prompt=prompt, use_cache=not no_cache,
            support_policy=support_policy,  # type: ignore[arg-type]  # checked by the service (policy_invalid)
        )  # fmt: skip
        answer = components.rag.answer(question, collection, options)
    except KbError as exc:
        raise fail(exc) from exc
    finally:
        components.close()
    if as_json:
        out.print_json(json.dumps(answer.as_dict()))
        return
    out.print(answer.answer)
    for c in answer.citations:
        page = f", page {c.page}" if c.page is not None else ""
        heading = f" — {c.heading}" if c.heading else ""
        out.print(f"  [{c.n}] {c.source}{page}{heading}")
    print_support(answer)
    cost = answer.usage["cost_usd"]
    out.print(
        f"[dim]{answer.prompt} · {answer.provider}/{answer.model} · "
        f"{answer.usage['prompt_tokens']}+{answer.usage['completion_tokens']} tokens · "
        f"${cost if cost is not None else '?'} · cached={answer.cached}[/dim]"
    )


def print_support(answer: Answer) -> None:
    """Each sentence that states something: ✓ with its supporting words and page, or ✗ and why not."""
    summary = answer.support
    if not answer.sentences and not summary.get("refused") and not summary.get("dropped"):
        return
    claims = [s for s in answer.sentences if s.claim]
    supported = sum(1 for s in claims if s.supported)
    line = f"support ({summary.get('policy')}): {supported} of {len(claims)} sentences supported"
    if summary.get("dropped"):
        line += f", {summary['dropped']} unsupported dropped"
    if summary.get("refused"):
        line += ", refused: the answer was not supported by the documents"
    out.print(f"[dim]{escape(line)}[/dim]")
    for s in claims:
        span = s.span
        if s.supported and span is not None:
            where = span.source + (f", page {span.page}" if span.page is not None else "")
            quote = " ".join(span.quote.split())
            quote = quote if len(quote) <= 120 else quote[:117] + "..."
            out.print(f"  [green]✓[/green] {s.score:.2f} [{span.n}] {escape(where)}: “{escape(quote)}”")
        else:
            why = _WHY.get(s.reason, s.reason)
            out.print(f"  [red]✗[/red] {s.score:.2f} {escape(why)}: {escape(s.text)}")


_WHY = {
    "no_citation": "no source cited",
    "invalid_citation": "cites a passage that was not retrieved",
    "weak": "the cited passage does not say this",
    "number": "a number differs from the cited passage",
    "name": "a name is not in the cited passage",
    "negation": "the cited passage says the opposite",
}
