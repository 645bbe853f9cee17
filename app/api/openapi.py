"""Examples for the OpenAPI page: a request and a response for every endpoint, and every error.

Kept in one table rather than scattered over route decorators, so a reader of /docs
sees realistic bodies (the sample handbook's facts) and a test can check that no
endpoint is left without them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_CITATION = {
    "n": 1, "source": "handbook.pdf", "page": 2, "heading": "HR Policy: Time Off",
    "chunk_id": "44a71b4d7cb9e0ff-00001-3e920ee29dc3", "score": 0.61,
    "snippet": "Full-time employees receive 27 days of paid annual leave per calendar year…",
    "text": "Annual leave. Full-time employees receive 27 days of paid annual leave per calendar year, plus…",
    "title": "Fernhill Analytics Employee Handbook",
}  # fmt: skip
_SPAN = {
    "n": 1, "chunk_id": _CITATION["chunk_id"], "source": "handbook.pdf", "page": 2, "start": 14, "end": 89,
    "quote": "Full-time employees receive 27 days of paid annual leave per calendar year,", "score": 0.98,
    "supports": True, "mismatch": None,
}  # fmt: skip
_SENTENCE = {
    "text": "Full-time employees receive 27 days of paid annual leave per calendar year [1].", "start": 0, "end": 79,
    "citations": [1], "claim": True, "supported": True, "score": 0.98, "reason": "supported", "span": _SPAN,
    "spans": [_SPAN], "suggested": None, "judge": None,
}  # fmt: skip
_SUPPORT = {"policy": "flag", "sentences": 1, "claims": 1, "unsupported": 0, "dropped": 0, "refused": False,
            "judged": 0}  # fmt: skip
_ANSWER = {
    "answer": "Full-time employees receive 27 days of paid annual leave per calendar year [1].",
    "citations": [_CITATION], "prompt": "answer@v2", "provider": "extractive", "model": "extractive",
    "usage": {"prompt_tokens": 412, "completion_tokens": 19, "cost_usd": 0.0}, "cached": False, "grounded": True,
    "request_id": "3f1d0c9e8b7a4c2d9e0f1a2b3c4d5e6f", "latency_ms": 41.7, "collections": ["handbook"],
    "standalone_question": "How many days of annual leave do I get?",
    "retrieved": [{"chunk_id": _CITATION["chunk_id"], "collection": "handbook", "source": "handbook.pdf", "page": 2}],
    "conversation_id": "9f1c0e2a4b6d4e8f9a0b1c2d3e4f5a6b", "sentences": [_SENTENCE], "support": _SUPPORT,
}  # fmt: skip
_JOB = {
    "id": "b1946ac92492", "collection": "hr", "files": ["leave.pdf"], "status": "succeeded",
    "summary": {"added": 1, "updated": 0, "unchanged": 0, "failed": []}, "error": None,
    "created_at": 1795000000.0, "started_at": 1795000000.2, "finished_at": 1795000003.9,
    "progress": {"files_total": 1, "files_done": 1, "chunks": 42}, "attempts": 1, "cancel_requested": False,
}  # fmt: skip
_CANCELLING = {
    **_JOB, "status": "running", "summary": None, "finished_at": None, "cancel_requested": True,
    "progress": {"files_total": 120, "files_done": 37, "chunks": 512},
}  # fmt: skip

RESPONSES: dict[tuple[str, str], Any] = {
    ("post", "/chat"): _ANSWER,
    ("post", "/search"): {
        "mode": "hybrid",
        "results": [
            {
                "chunk_id": _CITATION["chunk_id"],
                "collection": "handbook",
                "source": "expenses.html",
                "page": None,
                "heading": "Hotels",
                "text": "Hotels: up to 180 EUR per night.",
                "score": 0.72,
                "evidence": 0.98,
                "scores": {"dense": 0.62, "lexical": 7.1, "coverage": 0.9, "section": 0.55},
                "ranks": {"dense": 1, "lexical": 1},
            }
        ],
    },
    ("get", "/collections"): [{"name": "handbook", "chunks": 14}],
    ("get", "/auth/config"): {"sso": True, "login_url": "/auth/login"},
    ("get", "/auth/me"): {
        "name": "Alice Example (sso:8f2c)",
        "role": "employee",
        "collections": ["handbook"],
        "via": "session",
    },
    ("post", "/auth/logout"): {"signed_out": True},
    ("get", "/admin/gaps"): {
        "since_ts": 1796000000.0,
        "until_ts": 1798592000.0,
        "collections": ["handbook"],
        "questions": 87,
        "hidden": 0,
        "topics": [
            {
                "label": "sqlite / support / size",
                "size": 10,
                "trend": "rising",
                "first_half": 3,
                "second_half": 7,
                "reasons": {"refused": 8, "down": 2},
                "examples": ["What datatypes does SQLite support?"],
                "documents": [{"collection": "handbook", "source": "handbook.pdf", "page": 5, "similarity": 0.11}],
                "by_day": {"2026-12-01": 4, "2026-12-02": 6},
                "request_ids": ["5bab240925dd4250ae071fbf2ca1283d"],
            }
        ],
    },
    ("post", "/feedback"): {
        "id": 12,
        "request_id": "5bab240925dd4250ae071fbf2ca1283d",
        "verdict": "down",
        "prompt": "answer@v2",
        "replaced": False,
    },
    ("get", "/v1/models"): {
        "object": "list",
        "data": [
            {"id": "kb", "object": "model", "created": 0, "owned_by": "kb"},
            {"id": "kb:handbook", "object": "model", "created": 0, "owned_by": "kb"},
        ],
    },
    ("post", "/v1/chat/completions"): {
        "id": "chatcmpl-3f1d0c9e",
        "object": "chat.completion",
        "created": 1795000000,
        "model": "kb:handbook",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": str(_ANSWER["answer"])
                    + "\n\nReferences:\n[1] handbook.pdf, page 2 — HR Policy: Time Off",
                },
            }
        ],
        "usage": {"prompt_tokens": 412, "completion_tokens": 19, "total_tokens": 431},
        "citations": [_CITATION],
        "kb": {
            "prompt": "answer@v2",
            "grounded": True,
            "cached": False,
            "request_id": "3f1d0c9e",
            "collections": ["handbook"],
            "provider": "extractive",
            "model": "extractive",
            "standalone_question": "How many days of annual leave do I get?",
            "cost_usd": 0.0,
            "latency_ms": 41.7,
            "sentences": [_SENTENCE],
            "support": _SUPPORT,
        },
    },
    ("post", "/admin/collections/{collection}/documents"): {
        **_JOB,
        "status": "queued",
        "summary": None,
        "started_at": None,
        "finished_at": None,
    },
    ("get", "/admin/jobs/{job_id}"): _JOB,
    ("get", "/admin/jobs"): [_CANCELLING, _JOB],
    ("delete", "/admin/jobs/{job_id}"): _CANCELLING,
    ("get", "/admin/collections"): [{"name": "hr", "documents": 12, "chunks": 340}],
    ("get", "/admin/collections/{collection}/documents"): [
        {
            "source": "leave.pdf",
            "document_id": "hr:leave.pdf",
            "chunks": 18,
            "size_bytes": 88211,
            "title": "Leave policy",
            "doc_hash": "9c1e…",
            "updated_at": "2026-11-22T04:00:00+00:00",
        }
    ],
    ("delete", "/admin/collections/{collection}/documents/{source}"): {
        "collection": "hr",
        "source": "leave.pdf",
        "chunks_deleted": 18,
    },
    ("delete", "/admin/collections/{collection}"): {"collection": "hr", "deleted": True},
    ("get", "/admin/usage"): {
        "since": "7d",
        "by": "model",
        "groups": [
            {
                "key": "gpt-4o-mini",
                "calls": 120,
                "cache_hits": 31,
                "errors": 1,
                "prompt_tokens": 50210,
                "completion_tokens": 4410,
                "cost_usd": 0.0102,
            }
        ],
        "total": {
            "calls": 120,
            "cache_hits": 31,
            "errors": 1,
            "prompt_tokens": 50210,
            "completion_tokens": 4410,
            "cost_usd": 0.0102,
        },
    },
}
ERROR_CODES = {
    "401": ("missing_api_key", "missing API key: send 'Authorization: Bearer <key>'"),
    "403": ("collection_forbidden", "this API key may not read collection 'hr'; ask an admin to grant it"),
    "404": ("collection_not_found", "collection 'travel' does not exist; ingest documents into it first"),
    "413": ("question_too_long", "question is 5000 characters; the limit is 2000"),
    "422": ("invalid_request", "invalid request: question: String should have at least 1 character"),
    "429": ("rate_limited", "rate limit of 120 requests per minute for this API key reached; retry after 12 s"),
    "502": ("provider_error", "the model provider at api.openai.com answered HTTP 500 (server_error)"),
    "503": ("provider_unavailable", "every provider failed: openai (timeout), local (not installed)"),
    "504": ("provider_timeout", "openai/gpt-4o-mini did not answer within 30 s"),
}


def _add_examples(schema: dict[str, Any]) -> None:
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and "examples" not in body:
                ref = body.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
                examples = schema["components"]["schemas"].get(ref, {}).get("examples")
                if examples:
                    body["examples"] = {f"example {i + 1}": {"value": v} for i, v in enumerate(examples)}
            for code, response in op["responses"].items():
                if (method, path) in RESPONSES and code in ("200", "201", "202"):
                    content = response.setdefault("content", {}).setdefault("application/json", {})
                    content["example"] = RESPONSES[(method, path)]
                elif code in ERROR_CODES:
                    error_code, message = ERROR_CODES[code]
                    content = response.setdefault("content", {}).setdefault("application/json", {})
                    example = {"error": {"code": error_code, "message": message, "request_id": "3f1d0c9e"}}
                    content.setdefault("example", example)  # a route's own example (e.g. /readyz's 503) wins


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _add_examples(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
