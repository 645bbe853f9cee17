"""kb's MCP server (the official SDK's low-level ``Server``): tools, resources, errors.

The low-level server, not MCPServer's decorators: resources/list must answer per caller (a key sees
only its collections' documents), which the decorators' static resource list cannot. Handlers run
kb's blocking work (retrieval, the model, the database) on worker threads, like FastAPI's sync routes.

Errors: a refusal kb would answer over HTTP with 4xx/5xx becomes an MCP protocol error (JSON-RPC) whose
``data`` carries kb's code and HTTP status, and whose message is kb's, never a passage of text.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import anyio
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

import app as app_pkg
from app import tracing
from app.api.mcp.tools import AskArgs, Caller, KbTools, ListArgs, SearchArgs
from app.errors import KbError
from app.logging_setup import request_id_var

log = logging.getLogger(__name__)

# JSON-RPC leaves -32000..-32099 to servers: kb's refusals by kind (data.code names the exact one).
_BY_STATUS = {401: -32001, 403: -32003, 404: -32004, 429: -32029}
_PAGE = 500  # resources per resources/list page
_CURSOR = re.compile(r"[0-9]{1,9}")  # our own cursors: an offset; anything else starts at the beginning

T = TypeVar("T")
CallerOf = Callable[[ServerRequestContext[Any]], Caller]

_READ_ONLY = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)
# name -> (title, description, arguments): the tools/list entries and the argument models calls are checked by
_TOOL_TABLE: dict[str, tuple[str, str, type[SearchArgs] | type[AskArgs] | type[ListArgs]]] = {
    "search": (
        "Search the company's documents",
        "Ranked passages from the collections this key may read, each with its source document, page, heading, "
        "scores and a kb:// URI to read the page. Use it to look things up; use ask for an answer.",
        SearchArgs,
    ),
    "ask": (
        "Answer a question from the company's documents",
        "A grounded answer with numbered citations [n] (document, page, kb:// URI) and how well the sources "
        "support each sentence; 'not in the documents' when they do not say.",
        AskArgs,
    ),
    "list_collections": (
        "List the collections this key may read",
        "The document collections this key may search, with their document and chunk counts.",
        ListArgs,
    ),
}
_TOOLS = [
    types.Tool(name=name, title=title, description=description, input_schema=args.model_json_schema(),
               annotations=_READ_ONLY)
    for name, (title, description, args) in _TOOL_TABLE.items()
]  # fmt: skip
_ARGS = {name: args for name, (_, _, args) in _TOOL_TABLE.items()}


def protocol_error(exc: KbError) -> MCPError:
    """kb's refusal as an MCP error: its message (no document text), kb's code and HTTP status in ``data``."""
    code = _BY_STATUS.get(exc.http_status, types.INVALID_PARAMS if exc.http_status < 500 else types.INTERNAL_ERROR)
    return MCPError(code=code, message=exc.message, data={"code": exc.code, "status": exc.http_status})


def stdio_caller(principal: Any) -> CallerOf:
    """Over stdio every call is the one key the process was started with; each gets its own request id
    (its trace id while tracing is on: ``_within``)."""
    return lambda ctx: Caller(principal, "")


def _within(caller: Caller, name: str, work: Callable[[Caller], T]) -> Callable[[], T]:
    """``work`` as part of the caller's request: its request id on every log line, its span a child of the
    HTTP request's (the SDK runs each call in a task of its own, which inherits neither). A stdio call has
    no request: its id is its own trace's, or a new one."""

    def run() -> T:
        with tracing.span(name, {"kb.principal": caller.principal.name}, context=caller.trace_context):
            request_id = caller.request_id or tracing.current_trace_id() or uuid.uuid4().hex
            token = request_id_var.set(request_id)
            try:
                return work(replace(caller, request_id=request_id))
            except KbError as exc:  # logged here, where the line carries the request id
                log.info("%s refused with %s: %s", name, exc.code, exc.message)
                raise
            except Exception:  # a bug or a store failure: its text (SQL, parameters, paths) stays in the log
                log.exception("%s failed", name)
                message = f"internal error; the server log has details under request id {request_id}"
                raise MCPError(code=types.INTERNAL_ERROR, message=message) from None
            finally:
                request_id_var.reset(token)

    return run


def _render(tool: str, payload: dict[str, Any]) -> str:
    """The text an assistant reads (the structured content has every field)."""
    if tool == "search":
        lines = []
        for n, r in enumerate(payload["results"], 1):
            where = f"{r['source']}" + (f", page {r['page']}" if r.get("page") is not None else "")
            lines.append(f"[{n}] {where} — {r.get('heading') or ''} ({r['uri']})\n{r['text']}")
        return "\n\n".join(lines) or "No passage matched."
    if tool == "ask":
        sources = [f"[{c['n']}] {c['source']}" + (f", page {c['page']}" if c["page"] is not None else "")
                   + f" ({c['uri']})" for c in payload["citations"]]  # fmt: skip
        return str(payload["answer"]) + ("\n\nSources:\n" + "\n".join(sources) if sources else "")
    return json.dumps(payload, ensure_ascii=False, indent=1)


def build_server(tools: KbTools, caller_of: CallerOf) -> Server[Any]:
    """The MCP server over ``tools``; ``caller_of`` says who makes each call (from HTTP auth or stdio's key)."""

    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        return types.ListToolsResult(tools=_TOOLS)

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
        caller = caller_of(ctx)
        model = _ARGS.get(params.name)
        if model is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"unknown tool {params.name!r}; see tools/list")
        try:
            args: Any = model.model_validate(params.arguments or {})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
            raise MCPError(code=types.INVALID_PARAMS, message=f"invalid arguments: {problems}") from None
        run: Callable[[Caller], dict[str, Any]] = {
            "search": lambda c: tools.search(c, args),
            "ask": lambda c: tools.ask(c, args),
            "list_collections": lambda c: tools.list_collections(c),
        }[params.name]
        try:
            payload = await anyio.to_thread.run_sync(_within(caller, f"kb.mcp.{params.name}", run))
        except KbError as exc:
            raise protocol_error(exc) from None
        text = types.TextContent(type="text", text=_render(params.name, payload))
        return types.CallToolResult(content=[text], structured_content=payload)

    async def list_resources(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        caller = caller_of(ctx)
        cursor = params.cursor if params is not None else None
        start = int(cursor) if cursor and _CURSOR.fullmatch(cursor) else 0
        try:
            docs = await anyio.to_thread.run_sync(_within(caller, "kb.mcp.list_resources", tools.documents))
        except KbError as exc:
            raise protocol_error(exc) from None
        page = docs[start : start + _PAGE]
        found = [
            types.Resource(uri=d["uri"], name=d["source"], title=d.get("title") or None, size=d.get("size_bytes"),
                           description=f"{d['source']} in collection {d['collection']} ({d['chunks']} passages)")
            for d in page
        ]  # fmt: skip
        more = str(start + _PAGE) if start + _PAGE < len(docs) else None
        return types.ListResourcesResult(resources=found, next_cursor=more)

    async def list_templates(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> Any:
        page = types.ResourceTemplate(
            name="document page", uri_template="kb://{collection}/{source}#page={page}", mime_type="text/plain",
            description="The passages of a document that start on one page (PDF pages are 1-based).",
        )  # fmt: skip
        return types.ListResourceTemplatesResult(resource_templates=[page])

    async def read_resource(ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams) -> Any:
        caller = caller_of(ctx)
        try:
            text = await anyio.to_thread.run_sync(_within(caller, "kb.mcp.read", lambda c: tools.read(c, params.uri)))
        except KbError as exc:
            raise protocol_error(exc) from None
        contents = types.TextResourceContents(uri=params.uri, mime_type="text/plain", text=text)
        return types.ReadResourceResult(contents=[contents])

    return Server(
        "kb",
        version=app_pkg.__version__,
        title="kb: the company's documents",
        instructions="Search and ask the company's documents. Cite the sources the tools return (document and "
        "page); read a kb:// URI for the full page. Say so when the documents do not answer.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
    )
