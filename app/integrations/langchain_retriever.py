"""``KbRetriever``: kb's ``POST /search`` as a LangChain retriever, for Python teams composing chains.

It talks to a running kb over HTTP with an API key, so the key's collection grants apply as for every
other client, and returns LangChain ``Document``s whose metadata carry what a citation needs (source,
page, heading, collection, chunk id, score). Sync and async, through httpx (already a kb dependency)::

    from app.integrations.langchain_retriever import KbRetriever

    retriever = KbRetriever(base_url="http://kb.internal:8000", api_key=KEY, collections=["handbook"])
    docs = retriever.invoke("How many days of annual leave do I get?")
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever


class KbSearchError(RuntimeError):
    """kb refused the search: ``code`` and ``status`` as its JSON error gave them (a forbidden collection is
    ``collection_forbidden``, 403)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"kb search failed ({status} {code}): {message}")
        self.status, self.code, self.message = status, code, message


class KbRetriever(BaseRetriever):
    base_url: str
    """Where kb serves, e.g. ``http://127.0.0.1:8000``."""
    api_key: str | None = None
    """A kb API key (``kb keys create``); None when kb runs with authentication off."""
    collections: list[str] | None = None
    """Collections to search; None: every collection the key may read."""
    top_k: int | None = None
    """Passages to return; None: kb's default (KB_RETRIEVAL__TOP_K)."""
    mode: Literal["hybrid", "dense", "lexical"] | None = None
    """Search mode; None: kb's default (hybrid)."""
    timeout_s: float = 30.0

    def _request(self, query: str) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query}
        if self.collections is not None:
            body["collections"] = self.collections
        if self.top_k is not None:
            body["top_k"] = self.top_k
        if self.mode is not None:
            body["mode"] = self.mode
        return body

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _url(self) -> str:
        return self.base_url.rstrip("/") + "/search"

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        response = httpx.post(self._url(), json=self._request(query), headers=self._headers(), timeout=self.timeout_s)
        return _documents(response)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            response = await client.post(self._url(), json=self._request(query), headers=self._headers())
        return _documents(response)


def _documents(response: httpx.Response) -> list[Document]:
    if response.status_code != 200:
        try:
            error = response.json()["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "http_error", response.text[:200]
        raise KbSearchError(response.status_code, code, message)
    return [
        Document(
            page_content=hit["text"],
            metadata={
                "source": hit["source"],
                "page": hit["page"],
                "heading": hit["heading"],
                "collection": hit["collection"],
                "chunk_id": hit["chunk_id"],
                "score": hit["score"],
            },
        )
        for hit in response.json()["results"]
    ]
