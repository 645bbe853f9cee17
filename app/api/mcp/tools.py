"""What kb's MCP tools and resources do, for one caller, whatever the transport.

Every call goes through the same gates as the HTTP API: the caller's collections are resolved by
``resolve_collections`` (a collection outside the key's grants is refused before anything is read),
the answer pipeline and the search are RagService's, and every call served leaves an audit row (``tool``
says which; a refused call is logged, as /chat's refusals are) whose answer cost is in the usage ledger
like /chat's.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote

from pydantic import Field

from app import tracing
from app.api.deps import readable_collections, resolve_collections
from app.api.schemas import RequestBody
from app.audit import AuditRecord, answer_record, record_or_log
from app.auth import Principal
from app.bootstrap import Components
from app.errors import InvalidRequestError
from app.rag.answer import Answer
from app.rag.options import AskOptions, SearchOptions

SCHEME = "kb://"
_PAGE_NUMBER = re.compile(r"[1-9][0-9]{0,8}")  # ASCII digits only: str.isdigit() takes '²', which int() refuses


@dataclass(frozen=True)
class Caller:
    """Who makes this MCP call, and the request id its logs and audit row carry."""

    principal: Principal
    request_id: str
    trace_context: Any = None  # the HTTP request's span (the SDK runs calls in its own tasks)


class SearchArgs(RequestBody):
    query: str = Field(..., min_length=1, description="What to search for.")
    collections: list[str] | None = Field(
        None, max_length=50, description="Collections to search; none named: all the key may read."
    )
    top_k: int | None = Field(None, ge=1, le=100, description="Passages to return (default from settings).")
    mode: Literal["hybrid", "dense", "lexical"] | None = Field(None, description="Default: hybrid.")


class AskArgs(RequestBody):
    question: str = Field(..., min_length=1, description="The question, in the employee's words.")
    collections: list[str] | None = Field(
        None, max_length=50, description="Collections to answer from; none named: all the key may read."
    )
    top_k: int | None = Field(None, ge=1, le=100, description="Passages to retrieve (default from settings).")
    support_policy: Literal["flag", "drop", "refuse"] | None = Field(
        None, description="Unsupported sentences: flag, drop, or refuse the answer (default: the server's)."
    )


class ListArgs(RequestBody):
    pass


def document_uri(collection: str, source: str, page: int | None = None) -> str:
    """``kb://<collection>/<source>[#page=N]``, percent-encoded (names may hold spaces, '#', '/')."""
    uri = f"{SCHEME}{quote(collection, safe='')}/{quote(source, safe='/')}"
    return uri if page is None else f"{uri}#page={page}"


def parse_uri(uri: str) -> tuple[str, str, int | None]:
    """(collection, source, page) of a document URI, or a 422 saying what such a URI looks like."""
    shape = "expected kb://<collection>/<source>[#page=N], as resources/list gives them"
    bad = InvalidRequestError.RESOURCE_URI_INVALID
    rest, _, fragment = uri.removeprefix(SCHEME).partition("#") if uri.startswith(SCHEME) else ("", "", "")
    collection, _, source = rest.partition("/")
    page: int | None = None
    if fragment:
        number = fragment.removeprefix("page=")
        if not fragment.startswith("page=") or not _PAGE_NUMBER.fullmatch(number):
            raise InvalidRequestError(f"unknown fragment #{fragment[:40]}: {shape}", code=bad)
        page = int(number)
    if not collection or not source:
        raise InvalidRequestError(f"not a kb document URI: {shape}", code=bad)
    return unquote(collection), unquote(source), page


class KbTools:
    """The tools and resources over the service's Components (one per server, shared by all callers)."""

    def __init__(self, components: Components):
        self.parts = components

    def _audit(self, rec: AuditRecord) -> None:
        with tracing.span("kb.bookkeeping", {"kb.tool": rec.tool or ""}):
            record_or_log(self.parts.audit, rec, defer=rec.cached)

    def _audit_call(self, caller: Caller, tool: str, text: str, started: float, **fields: Any) -> None:
        """The audit row of a call that answers nothing (a search, a listing, a read)."""
        who = caller.principal
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        self._audit(AuditRecord(request_id=caller.request_id, key_name=who.name, key_id=who.key_id, question=text,
                                prompt="", provider="", model="", answer="", latency_ms=latency_ms, tool=tool,
                                **{"grounded": True, **fields}))  # fmt: skip

    def search(self, caller: Caller, args: SearchArgs) -> dict[str, Any]:
        started = time.perf_counter()
        names = resolve_collections(caller.principal, args.collections or [], self.parts)
        rag = self.parts.rag
        mode = args.mode or rag.retriever.config.mode
        hits = rag.search(args.query, names, SearchOptions(args.top_k, mode))
        results = []
        for hit in hits:
            found = hit.as_dict()
            found["uri"] = document_uri(hit.collection, str(found["source"]), found["page"])
            results.append(found)
        self._audit_call(caller, "mcp.search", args.query, started, collections=names,
                         retrieved=[h.id for h in hits], grounded=bool(hits))  # fmt: skip
        return {"mode": mode, "collections": names, "results": results}

    def ask(self, caller: Caller, args: AskArgs) -> dict[str, Any]:
        names = resolve_collections(caller.principal, args.collections or [], self.parts)
        options = AskOptions(top_k=args.top_k, request_id=caller.request_id, principal=caller.principal.name,
                             support_policy=args.support_policy)  # fmt: skip
        answer = self.parts.rag.answer(args.question, names, options)
        who = caller.principal
        self._audit(answer_record(answer, args.question, who.name, who.key_id, tool="mcp.ask"))
        return _answer_payload(answer)

    def list_collections(self, caller: Caller) -> dict[str, Any]:
        started = time.perf_counter()
        readable = set(readable_collections(caller.principal, self.parts))
        found = [c for c in self.parts.admin.collections() if c["name"] in readable]
        self._audit_call(caller, "mcp.list_collections", "", started, collections=sorted(readable))
        return {"collections": found}

    def documents(self, caller: Caller) -> list[dict[str, Any]]:
        """Every document the caller may read: its URI, source, title and collection (resources/list)."""
        started = time.perf_counter()
        found = []
        names = readable_collections(caller.principal, self.parts)
        for name in names:
            for doc in self.parts.admin.documents(name):
                found.append({"uri": document_uri(name, doc["source"]), "collection": name, **doc})
        self._audit_call(caller, "mcp.list_resources", "", started, collections=names)
        return found

    def read(self, caller: Caller, uri: str) -> str:
        """A document's text (of one page with ``#page=N``), passages separated by blank lines."""
        started = time.perf_counter()
        collection, source, page = parse_uri(uri)
        resolve_collections(caller.principal, [collection], self.parts)  # 403 before anything is read
        passages = self.parts.admin.passages(collection, source, page)
        self._audit_call(caller, "mcp.read", uri, started, collections=[collection])
        return "\n\n".join(text for _, text in passages)


def _answer_payload(answer: Answer) -> dict[str, Any]:
    """The answer with its citations, each with a page and a URI the client can read."""
    where = {str(r["chunk_id"]): str(r["collection"]) for r in answer.retrieved}
    citations = []
    for c in answer.citations:
        collection = where.get(c.chunk_id, "")
        citations.append({"n": c.n, "source": c.source, "page": c.page, "heading": c.heading, "title": c.title,
                          "collection": collection, "snippet": c.snippet, "chunk_id": c.chunk_id,
                          "uri": document_uri(collection, c.source, c.page)})  # fmt: skip
    return {
        "answer": answer.answer, "grounded": answer.grounded, "citations": citations,
        "support": answer.support, "prompt": answer.prompt, "provider": answer.provider, "model": answer.model,
        "usage": answer.usage, "cached": answer.cached, "request_id": answer.request_id,
        "collections": answer.collections,
    }  # fmt: skip
