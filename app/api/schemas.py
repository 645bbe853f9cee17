"""Request and response bodies of the HTTP API (they are the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ChatBody(BaseModel):
    question: str = Field(
        ..., min_length=1, description="The employee's question.", examples=["How many days of annual leave do I get?"]
    )
    collection: str = Field(..., min_length=1, description="Collection to answer from.", examples=["handbook"])
    top_k: int | None = Field(None, description="Passages to retrieve (default from settings).")
    prompt: str | None = Field(None, description="Prompt version to use, e.g. 'answer@v1'.")
    cache: bool = Field(True, description="Set false to bypass the response cache.")


class CitationOut(BaseModel):
    n: int = Field(..., description="The number used as [n] in the answer text.")
    source: str
    page: int | None
    heading: str | None
    chunk_id: str
    score: float
    snippet: str


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None


class ChatResponse(BaseModel):
    answer: str
    citations: list[CitationOut]
    prompt: str = Field(..., description="Prompt name@version that produced the answer.")
    provider: str
    model: str
    usage: UsageOut
    cached: bool
    grounded: bool = Field(..., description="False when the documents did not support an answer.")
    request_id: str
    latency_ms: float


class CollectionOut(BaseModel):
    name: str
    chunks: int


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class SearchBody(BaseModel):
    query: str = Field(..., min_length=1, description="What to search for.", examples=["meal allowance"])
    collection: str | None = Field(None, min_length=1, description="A collection to search.")
    collections: list[str] | None = Field(None, description="Several collections to search together.")
    top_k: int | None = Field(None, description="Chunks to return (default from settings).")
    mode: Literal["hybrid", "dense", "lexical"] | None = Field(None, description="Default from settings: hybrid.")
    sources: list[str] | None = Field(None, description="Only chunks of these documents (source paths).")
    page_min: int | None = Field(None, description="Only chunks on this page or later.")
    page_max: int | None = Field(None, description="Only chunks on this page or earlier.")
    heading: str | None = Field(None, description="Only chunks under exactly this heading.")


class SearchScores(BaseModel):
    dense: float | None = Field(None, description="Cosine similarity to the query.")
    lexical: float | None = Field(None, description="BM25 score (comparable within one query only).")
    coverage: float | None = Field(None, description="Share of the query's IDF weight found in the chunk.")


class SearchRanks(BaseModel):
    dense: int | None
    lexical: int | None


class SearchResult(BaseModel):
    chunk_id: str
    collection: str
    source: str | None
    page: int | None
    heading: str | None
    text: str
    score: float = Field(..., description="The score that orders the results (fused for hybrid).")
    evidence: float = Field(..., description="Cosine + weighted term coverage: what the relevance floor compares.")
    scores: SearchScores
    ranks: SearchRanks = Field(..., description="1-based rank in each retriever's list; null: not in it.")


class SearchResponse(BaseModel):
    mode: str
    results: list[SearchResult]
