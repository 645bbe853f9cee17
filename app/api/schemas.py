"""Request and response bodies of the HTTP API (they are the OpenAPI schema at /docs)."""

from __future__ import annotations

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
