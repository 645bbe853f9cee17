"""Bodies of the OpenAI-compatible endpoints, including kb's documented extension fields.

Requests accept (and ignore) the many optional fields OpenAI clients send
(temperature, user, stream_options, ...): answers are deterministic and grounded by
our own settings, and rejecting a field a client always sends would break it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas import CitationOut, RequestBody, SentenceOut, SupportOut


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = Field(None, description="Text, or a list of text parts.")


class ChatCompletionBody(RequestBody):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"model": "kb:handbook", "messages": [{"role": "user", "content": "How long is probation?"}]},
                {
                    "model": "kb",
                    "stream": True,
                    "messages": [
                        {"role": "user", "content": "How long is probation?"},
                        {"role": "assistant", "content": "Probation lasts six months [1]."},
                        {"role": "user", "content": "And for contractors?"},
                    ],
                },
            ]
        },
    )

    model: str = Field(..., min_length=1, max_length=300, description="'kb', 'kb:NAME' or 'kb:A+B'.")
    messages: list[OpenAIMessage] = Field(..., min_length=1, max_length=200)
    stream: bool = Field(False, description="Server-Sent Events of chat.completion.chunk objects, then [DONE].")


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str = Field(..., description="The answer with [n] markers, then a 'References:' list.")


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class KbExtension(BaseModel):
    prompt: str = Field(..., description="Prompt name@version that produced the answer.")
    grounded: bool = Field(..., description="False when the documents did not support an answer.")
    cached: bool
    request_id: str
    collections: list[str]
    provider: str
    model: str
    standalone_question: str
    cost_usd: float | None
    latency_ms: float
    sentences: list[SentenceOut] = Field(..., description="Each sentence of the answer text and what supports it.")
    support: SupportOut = Field(..., description="The support policy applied and its outcome.")


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    citations: list[CitationOut] = Field(..., description="kb extension: the passages behind each [n].")
    kb: KbExtension = Field(..., description="kb extension: how the answer was made.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]
