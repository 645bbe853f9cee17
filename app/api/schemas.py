"""Request and response bodies of the HTTP API (they are the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def _lone_surrogate(value: Any, where: str = "body") -> str | None:
    """Where a lone UTF-16 surrogate (JSON "\\ud800") hides in a parsed body, if anywhere."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _lone_surrogate(item, f"{where}.{key}")
        if found:
            return found
    return None


class RequestBody(BaseModel):
    """Every request body: unknown fields are refused (one policy for every endpoint but the OpenAI-compatible
    one, whose clients send many optional fields), and text must be valid Unicode. JSON may carry a lone
    surrogate ("\\ud800") that Python accepts but no encoder can write: it failed deep inside as a 500."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        where = _lone_surrogate(data)
        if where:
            field = where.removeprefix("body.") or "body"
            raise ValueError(f"{field} contains a lone surrogate (invalid Unicode); send valid UTF-8 text")
        return data


class ChatBody(RequestBody):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"question": "How many days of annual leave do I get?", "collection": "handbook"},
                {"question": "And for contractors?", "conversation_id": "9f1c0e2a4b6d4e8f9a0b1c2d3e4f5a6b"},
                {"question": "What is the hotel limit?", "collections": ["handbook", "travel"], "stream": True},
            ]
        },
    )

    question: str = Field(..., min_length=1, description="The employee's question.")
    collection: str | None = Field(None, min_length=1, description="Collection to answer from.")
    collections: list[str] | None = Field(
        None, max_length=50, description="Several collections to answer from; none named: all the key may read."
    )
    conversation_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Continue this conversation: the question is read as a follow-up (returned by every answer).",
    )
    stream: bool = Field(False, description="Answer as Server-Sent Events: token events, then done (or error).")
    top_k: int | None = Field(None, ge=1, le=100, description="Passages to retrieve (default and cap from settings).")
    prompt: str | None = Field(None, max_length=100, description="Prompt version to use, e.g. 'answer@v1'.")
    cache: bool = Field(True, description="Set false to bypass the response cache.")
    support_policy: Literal["flag", "drop", "refuse"] | None = Field(
        None,
        description="Unsupported sentences: flag marks them, drop removes them, refuse answers 'not in the "
        "documents' when half or more of the answer is unsupported (default: the server's KB_SUPPORT__POLICY).",
    )

    def requested(self) -> list[str]:
        return ([self.collection] if self.collection else []) + list(self.collections or [])


class CitationOut(BaseModel):
    n: int = Field(..., description="The number used as [n] in the answer text.")
    source: str
    page: int | None
    heading: str | None
    chunk_id: str
    score: float
    snippet: str = Field(..., description="The part of the passage that supports the cited claim.")
    text: str = Field(..., description="The whole passage given to the model.")
    title: str | None = Field(None, description="The document's title; heading is the section path inside it.")


class SpanOut(BaseModel):
    n: int = Field(..., description="The cited passage: [n], as in citations.")
    chunk_id: str
    source: str
    page: int | None
    start: int = Field(..., description="Offset of the supporting words inside the citation's text.")
    end: int = Field(..., description="End offset (exclusive) inside the citation's text.")
    quote: str = Field(..., description="The supporting words: text[start:end] of the citation.")
    score: float = Field(..., description="How well these words support the sentence, 0 to 1.")
    supports: bool
    mismatch: Literal["number", "name", "negation"] | None = Field(
        None, description="An exact part of the sentence the passage contradicts or lacks."
    )


class SentenceOut(BaseModel):
    text: str
    start: int = Field(..., description="Offset of the sentence inside the answer text.")
    end: int
    citations: list[int] = Field(..., description="The [n] markers the sentence carries.")
    claim: bool = Field(..., description="False for a sentence with nothing to back (a lead-in).")
    supported: bool
    score: float = Field(..., description="Support by the best of its cited passages, 0 to 1.")
    reason: str = Field(
        ..., description="supported, no_claim, no_citation, invalid_citation, weak, number, name or negation."
    )
    span: SpanOut | None = Field(..., description="The best supporting words among its cited passages.")
    spans: list[SpanOut] = Field(..., description="Each cited passage's best words for this sentence.")
    suggested: SpanOut | None = Field(
        None, description="A sentence without a marker: the retrieved passage that would support it, if any."
    )
    judge: Literal["yes", "no"] | None = Field(
        None, description="Decided by the model judge (KB_SUPPORT__JUDGE) where the offline check was unsure."
    )


class SupportOut(BaseModel):
    policy: Literal["flag", "drop", "refuse"]
    sentences: int
    claims: int = Field(..., description="Sentences that state something a source must back.")
    unsupported: int = Field(..., description="Sentences returned without support (policy flag).")
    dropped: int = Field(..., description="Unsupported sentences removed (policy drop).")
    refused: bool = Field(..., description="The answer was replaced by the refusal because it was unsupported.")
    judged: int = Field(0, description="Sentences the model judge decided (KB_SUPPORT__JUDGE).")


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None


class RetrievedOut(BaseModel):
    chunk_id: str
    collection: str | None
    source: str | None
    page: int | None


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
    collections: list[str] = Field(..., description="The collections searched.")
    standalone_question: str = Field(..., description="The question retrieval used (a follow-up, rewritten).")
    retrieved: list[RetrievedOut] = Field(..., description="Passages given to the model, in rank order.")
    conversation_id: str = Field(..., description="Send it back with a follow-up question.")
    sentences: list[SentenceOut] = Field(..., description="Each sentence of the answer and what supports it.")
    support: SupportOut = Field(..., description="The support policy applied and its outcome.")


class CollectionOut(BaseModel):
    name: str
    chunks: int


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


_ERROR_MEANINGS = {
    401: "Missing, unknown or revoked API key.",
    403: "The key's role or collection grants do not cover this request.",
    404: "Unknown collection, conversation, job or prompt version.",
    413: "Question or request body too long.",
    422: "Invalid request (the message names the field).",
    429: "Rate limit reached; retry after the Retry-After header's seconds.",
    502: "The language model provider failed.",
    503: "Every provider of the fallback chain failed.",
    504: "The language model provider timed out.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these status codes, all with the ErrorResponse body."""
    return {c: {"model": ErrorResponse, "description": _ERROR_MEANINGS[c]} for c in codes}


class FeedbackBody(RequestBody):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"request_id": "5bab240925dd4250ae071fbf2ca1283d", "verdict": "up"},
                {
                    "request_id": "5bab240925dd4250ae071fbf2ca1283d",
                    "verdict": "down",
                    "comment": "Contractors have a different policy",
                    "correction": "Contractors do not accrue paid leave (handbook.pdf, page 3).",
                },
            ]
        },
    )

    request_id: str = Field(
        ..., min_length=1, max_length=200, description="The request_id kb returned with the answer."
    )
    verdict: Literal["up", "down"] = Field(..., description="up: the answer helped; down: it did not.")
    comment: str | None = Field(None, description="What was wrong or missing (KB_LIMITS__MAX_FEEDBACK_COMMENT_CHARS).")
    correction: str | None = Field(
        None, description="The right answer, in the employee's words (4x the comment limit)."
    )
    out_of_scope: bool = Field(
        False, description="Admins: kb should not answer this from its documents (eval cases expect a refusal)."
    )


class FeedbackOut(BaseModel):
    id: int
    request_id: str
    verdict: Literal["up", "down"]
    prompt: str = Field(..., description="The prompt version that produced the judged answer.")
    replaced: bool = Field(..., description="This credential's earlier verdict on the same answer was replaced.")


class SearchBody(RequestBody):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"query": "meal allowance", "collection": "handbook", "top_k": 3},
                {"query": "notice period", "collections": ["hr", "legal"], "mode": "lexical", "page_min": 2},
            ]
        },
    )

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
    section: float | None = Field(
        None, description="Cosine similarity of the chunk's section (the mean of its chunks' vectors); hybrid only."
    )


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
