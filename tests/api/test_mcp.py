"""kb's MCP server, driven by the official `mcp` SDK's own client over both transports: Streamable HTTP at
/mcp of the running API (bearer keys) and stdio (`kb mcp` as a subprocess, the key from its environment).

An employee key that may read the handbook only must see the handbook only: in list_collections, in
resources/list, in search results; naming the 'salaries' collection (which exists) is an MCP error whose
message names no document text. ``ask`` returns citations with pages and kb:// URIs that read back.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from app.bootstrap import Components
from app.settings import Settings
from tests.servers import serve_app

QUESTION = "How many days of annual leave do I get?"
SECRET = "The senior analyst salary band tops out at 91,500 EUR."


@pytest.fixture(scope="module")
def mcp_data_dir(tmp_path_factory: pytest.TempPathFactory, handbook_data_dir: Path, embedder) -> Path:  # type: ignore[no-untyped-def]
    """The handbook plus a 'salaries' collection the employee key may not read."""
    root = tmp_path_factory.mktemp("mcp")
    data_dir = root / "data"
    shutil.copytree(handbook_data_dir, data_dir)
    (root / "salaries").mkdir()
    (root / "salaries" / "bands.md").write_text(f"# Salary bands\n\n{SECRET}\n", encoding="utf-8")
    components = Components(Settings(_env_file=None, data_dir=data_dir), embedder=embedder)  # type: ignore[call-arg]
    assert components.ingest_pipeline.ingest([root / "salaries"], "salaries").added == 1
    components.close()
    return data_dir


@pytest.fixture
def kb(mcp_data_dir: Path, tmp_path: Path, embedder) -> Iterator[tuple[str, dict[str, str], Components]]:  # type: ignore[no-untyped-def]
    """The API's /mcp URL, an employee key (handbook only) and an admin key, and the components behind them."""
    from app.api.main import create_app

    data_dir = tmp_path / "data"
    shutil.copytree(mcp_data_dir, data_dir)
    components = Components(Settings(_env_file=None, data_dir=data_dir), embedder=embedder)  # type: ignore[call-arg]
    keys = {
        "employee": components.keys.create("mcp-employee", "employee", ["handbook"]).token,
        "admin": components.keys.create("mcp-admin", "admin").token,
    }
    with serve_app(create_app(components.settings, components=components)) as url:
        yield f"{url}/mcp", keys, components
    components.close()


def _http(url: str, token: str) -> Client:
    headers = {"Authorization": f"Bearer {token}"}
    transport = streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers))
    return Client(transport, cache=None)


def _run(client: Client, work: Any) -> Any:
    async def go() -> Any:
        async with client:
            return await work(client)

    return anyio.run(go)


def _error(client: Client, work: Any) -> MCPError:
    """The MCP error the call raised (the client's task group may wrap it in an exception group)."""
    try:
        _run(client, work)
    except MCPError as exc:
        return exc
    except BaseExceptionGroup as group:
        found = group.subgroup(MCPError)
        assert found is not None, group
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        return found  # type: ignore[return-value]
    raise AssertionError("the call succeeded")


def test_an_employee_sees_only_its_collections(kb: tuple[str, dict[str, str], Components]) -> None:
    url, keys, _ = kb

    async def look(client: Client) -> tuple[Any, Any, Any]:
        tools = await client.list_tools()
        listed = await client.call_tool("list_collections", {})
        resources = await client.list_resources()
        return tools, listed, resources

    tools, listed, resources = _run(_http(url, keys["employee"]), look)
    assert {t.name for t in tools.tools} == {"search", "ask", "list_collections"}
    assert [c["name"] for c in listed.structured_content["collections"]] == ["handbook"]
    uris = [r.uri for r in resources.resources]
    assert uris and all(u.startswith("kb://handbook/") for u in uris), uris
    assert "kb://handbook/handbook.pdf" in uris
    # the admin key sees both
    _, listed, resources = _run(_http(url, keys["admin"]), look)
    assert {c["name"] for c in listed.structured_content["collections"]} == {"handbook", "salaries"}
    assert "kb://salaries/bands.md" in [r.uri for r in resources.resources]


def test_a_forbidden_collection_is_an_mcp_error_without_text(kb: tuple[str, dict[str, str], Components]) -> None:
    url, keys, _ = kb
    for name, args in [
        ("search", {"query": "salary band", "collections": ["salaries"]}),
        ("ask", {"question": "What is the top of the senior analyst salary band?", "collections": ["salaries"]}),
    ]:
        error = _error(_http(url, keys["employee"]), lambda c, n=name, a=args: c.call_tool(n, a))
        assert error.error.data == {"code": "collection_forbidden", "status": 403}, error.error
        assert "91,500" not in str(error) and "salaries" in error.error.message
    error = _error(_http(url, keys["employee"]), lambda c: c.read_resource("kb://salaries/bands.md"))
    assert error.error.data["code"] == "collection_forbidden" and "91,500" not in str(error)
    # a collection that does not exist reads the same (no probing for names)
    unknown = {"query": "x", "collections": ["nope"]}
    missing = _error(_http(url, keys["employee"]), lambda c: c.call_tool("search", unknown))
    assert missing.error.data["code"] == "collection_forbidden"

    # no collection named: the salary sentence is not found, whatever the query
    async def search(client: Client) -> Any:
        return await client.call_tool("search", {"query": "senior analyst salary band 91,500 EUR", "top_k": 10})

    found = _run(_http(url, keys["employee"]), search).structured_content
    assert found["collections"] == ["handbook"] and {r["collection"] for r in found["results"]} == {"handbook"}
    assert all("91,500" not in r["text"] for r in found["results"])


def test_ask_returns_citations_with_pages_that_read_back(kb: tuple[str, dict[str, str], Components]) -> None:
    url, keys, components = kb

    async def ask_and_read(client: Client) -> tuple[Any, Any]:
        answer = await client.call_tool("ask", {"question": QUESTION, "collections": ["handbook"]})
        first = answer.structured_content["citations"][0]
        return answer, await client.read_resource(first["uri"])

    answer, page = _run(_http(url, keys["employee"]), ask_and_read)
    payload = answer.structured_content
    assert payload["grounded"] and "27 days" in payload["answer"]
    first = payload["citations"][0]
    assert first["source"] == "handbook.pdf" and first["page"] == 2
    assert first["uri"] == "kb://handbook/handbook.pdf#page=2" and first["collection"] == "handbook"
    assert "handbook.pdf, page 2 (kb://handbook/handbook.pdf#page=2)" in answer.content[0].text
    assert "27 days" in page.contents[0].text
    # audited with its tool, and its model call in the usage ledger under the employee's key, like /chat
    rows = [r for r in components.audit.rows() if r["request_id"] == payload["request_id"]]  # type: ignore[union-attr]
    assert len(rows) == 1 and rows[0]["tool"] == "mcp.ask" and rows[0]["key_name"] == "mcp-employee"
    ledger = [r for r in components.ledger.rows() if r["request_id"] == payload["request_id"]]
    assert ledger and ledger[0]["key"] == "mcp-employee" and ledger[0]["status"] == "ok"
    tools = {r["tool"] for r in components.audit.rows()}  # type: ignore[union-attr]
    assert {"mcp.ask", "mcp.read"} <= tools


def test_bad_calls_get_clear_errors(kb: tuple[str, dict[str, str], Components]) -> None:
    url, keys, _ = kb
    employee = keys["employee"]
    bad = _error(_http(url, employee), lambda c: c.call_tool("search", {"query": "x", "top_k": 0}))
    assert "top_k" in bad.error.message
    page = _error(_http(url, employee), lambda c: c.read_resource("kb://handbook/handbook.pdf#page=99"))
    assert page.error.data["code"] == "document_not_found" and "page 99" in page.error.message
    uri = _error(_http(url, employee), lambda c: c.read_resource("https://example.com/x"))
    assert uri.error.data["code"] == "resource_uri_invalid"
    for odd in ("kb://handbook/handbook.pdf#page=²", "kb://handbook/handbook.pdf#page=0", "kb://handbook/"):
        bad_uri = _error(_http(url, employee), lambda c, u=odd: c.read_resource(u))
        assert bad_uri.error.data["code"] == "resource_uri_invalid", odd
    # a percent-encoded '/' stays inside the collection's name: still the salaries' refusal, not a way round it
    encoded = _error(_http(url, employee), lambda c: c.read_resource("kb://salaries%2F..%2Fhandbook/bands.md"))
    assert encoded.error.data["code"] == "collection_forbidden"
    long = _error(_http(url, employee), lambda c: c.call_tool("ask", {"question": "why " * 2000}))
    assert long.error.data["code"] == "question_too_long"
    # no key, or a wrong one: the API's own JSON 401, before the MCP layer
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    refused = httpx.post(url, json=body, headers={"Accept": "application/json, text/event-stream"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key"
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer kb_wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"


def test_stdio_serves_the_key_from_the_environment(mcp_data_dir: Path, tmp_path: Path) -> None:
    """`kb mcp` as a desktop assistant starts it: a subprocess speaking MCP on stdin/stdout."""
    data_dir = tmp_path / "data"
    shutil.copytree(mcp_data_dir, data_dir)
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    components = Components(settings)
    token = components.keys.create("desktop", "employee", ["handbook"]).token
    components.close()
    env = {**os.environ, "KB_DATA_DIR": str(data_dir), "KB_API_KEY": token, "HF_HUB_OFFLINE": "1"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "app.cli", "mcp"], env=env)

    async def use(client: Client) -> tuple[Any, Any]:
        listed = await client.call_tool("list_collections", {})
        answer = await client.call_tool("ask", {"question": QUESTION})
        return listed, answer

    listed, answer = _run(Client(params, cache=None), use)
    assert [c["name"] for c in listed.structured_content["collections"]] == ["handbook"]
    first = answer.structured_content["citations"][0]
    assert first["source"] == "handbook.pdf" and first["page"] == 2
    forbidden = {"query": "x", "collections": ["salaries"]}
    error = _error(Client(params, cache=None), lambda c: c.call_tool("search", forbidden))
    assert error.error.data["code"] == "collection_forbidden"
    # audited like the HTTP calls, under the key's name
    components = Components(settings)
    try:
        rows = components.audit.rows(key_name="desktop")  # type: ignore[union-attr]
    finally:
        components.close()
    assert {r["tool"] for r in rows} == {"mcp.list_collections", "mcp.ask"}
