"""KbRetriever: kb's /search as a LangChain retriever, against the running API with an employee's key,
inside a small chain whose model is the OpenAI-compatible server the tests start."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_openai import ChatOpenAI

from app.bootstrap import Components
from app.integrations.langchain_retriever import KbRetriever, KbSearchError
from tests.servers import FakeOpenAI, serve_app

QUESTION = "How many days of annual leave do I get?"


@pytest.fixture
def kb(handbook_components: Components) -> Iterator[tuple[str, str]]:
    """kb's base URL and an employee key that may read the handbook only."""
    from app.api.main import create_app

    token = handbook_components.keys.create("langchain-user", "employee", ["handbook"]).token
    with serve_app(create_app(handbook_components.settings, components=handbook_components)) as url:
        yield url, token


def test_documents_carry_source_page_and_heading(kb: tuple[str, str]) -> None:
    url, token = kb
    docs = KbRetriever(base_url=url, api_key=token, collections=["handbook"], top_k=3).invoke(QUESTION)
    assert len(docs) == 3 and all(isinstance(d, Document) for d in docs)
    best = docs[0]
    assert "27 days" in best.page_content
    assert best.metadata["source"] == "handbook.pdf" and best.metadata["page"] == 2
    assert best.metadata["heading"] and best.metadata["collection"] == "handbook" and best.metadata["chunk_id"]


def test_the_async_path_returns_the_same_documents(kb: tuple[str, str]) -> None:
    url, token = kb
    retriever = KbRetriever(base_url=url, api_key=token, mode="lexical", top_k=4)
    awaited = asyncio.run(retriever.ainvoke(QUESTION))
    assert len(awaited) == 4
    assert [d.metadata["chunk_id"] for d in awaited] == [d.metadata["chunk_id"] for d in retriever.invoke(QUESTION)]


def test_a_collection_the_key_may_not_read_is_an_error_with_its_code(kb: tuple[str, str]) -> None:
    url, token = kb
    with pytest.raises(KbSearchError) as caught:
        KbRetriever(base_url=url, api_key=token, collections=["salaries"]).invoke(QUESTION)
    assert caught.value.status == 403 and caught.value.code == "collection_forbidden"
    with pytest.raises(KbSearchError) as caught:
        KbRetriever(base_url=url, api_key="kb_not_a_key").invoke(QUESTION)
    assert caught.value.status == 401


def test_a_chain_answers_from_the_passages_kb_retrieved(kb: tuple[str, str]) -> None:
    url, token = kb
    retriever = KbRetriever(base_url=url, api_key=token, collections=["handbook"], top_k=2)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from these passages only:\n{context}"), ("human", "{question}")]
    )

    def joined(docs: list[Document]) -> str:
        return "\n\n".join(f"[{d.metadata['source']}, page {d.metadata['page']}] {d.page_content}" for d in docs)

    with FakeOpenAI() as model_server:
        llm = ChatOpenAI(base_url=model_server.base_url, api_key="sk-test", model="gpt-4o-mini", max_retries=0)  # type: ignore[arg-type]
        chain = {"context": retriever | joined, "question": RunnablePassthrough()} | prompt | llm | StrOutputParser()
        answer = chain.invoke(QUESTION)
    assert answer == model_server.reply
    (sent,) = model_server.requests
    system = sent["body"]["messages"][0]["content"]
    assert "[handbook.pdf, page 2]" in system and "27 days" in system
