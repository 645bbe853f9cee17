"""Reject oversized request bodies before anything parses them (413 with a JSON error).

Checked twice: a declared ``Content-Length`` over the limit is refused at once, and
a chunked body is counted as it arrives and refused as soon as it passes the limit,
so a client cannot make the server buffer an unbounded JSON document. Admin uploads
are exempt: they stream to disk and are bounded per file by ``max_file_mb``.
"""

from __future__ import annotations

import json
import logging
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, exempt_prefixes: tuple[str, ...] = ("/admin/",)):
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_prefixes = exempt_prefixes

    async def _refuse(self, scope: Scope, send: Send, size: str) -> None:
        request_id = scope.get("state", {}).get("request_id") or uuid.uuid4().hex
        message = (
            f"request body is {size}; the limit is {self.max_bytes // 1024} KiB (KB_LIMITS__MAX_BODY_KB). "
            "Send a shorter question or fewer fields."
        )
        body = json.dumps({"error": {"code": "body_too_large", "message": message, "request_id": request_id}})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-request-id", request_id.encode("latin-1")),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode("utf-8")})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send, f"{int(declared)} bytes")
            return
        # Read the whole (bounded) body first, then replay it: refusing mid-parse would be a 500.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, send, f"over {self.max_bytes} bytes")
                return
            chunks.append(chunk)
            more = bool(message.get("more_body"))
        await self.app(
            scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive), send
        )


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A receive() that returns the buffered messages, then defers to the real one (disconnects)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
