"""Per-request context as plain ASGI middleware: request id, metrics, and the id on every log line.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs
the rest of the app in a separate task and re-streams the response, which costs about a
millisecond per request (a third of an answer-cache hit) and can drop context variables.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics, tracing
from app.logging_setup import request_id_var

log = logging.getLogger("app.api.errors")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _internal_error_body(rid: str) -> bytes:
    message = "internal error; the server log has details under this request id"
    return json.dumps({"error": {"code": "internal_error", "message": message, "request_id": rid}}).encode()


def _internal_error(rid: str) -> Message:
    body = _internal_error_body(rid)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {"type": "http.response.start", "status": 500, "headers": headers}


class RequestContext:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if tracing.enabled():
            await self._traced(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        # A client's id is kept only as a plain token: it goes into every log line and audit row.
        rid = given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex
        await self._served(scope, receive, send, rid, None)

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request as the root span of its trace (continuing a caller's W3C ``traceparent``); its
        request id is the trace id, so a log line, an audit row and the trace are found by one id."""
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind

        raw = dict(scope.get("headers") or [])
        parent = None
        if b"traceparent" in raw:  # a caller's trace to continue (W3C Trace Context)
            parent = extract({k.decode("latin-1"): v.decode("latin-1") for k, v in raw.items()})
        method = scope.get("method", "")
        attributes = {"http.request.method": method, "url.path": scope.get("path", "")}
        with tracing.span(method, attributes, kind=SpanKind.SERVER, context=parent) as root:
            if root is None:  # turned off meanwhile (a test's exporter removed)
                await self._served(scope, receive, send, uuid.uuid4().hex, None)
                return
            given = raw.get(b"x-request-id", b"").decode("latin-1")
            if _CLIENT_ID.fullmatch(given):
                root.set_attribute("kb.client_request_id", given)
            # for work this request hands to tasks that do not inherit its context (the MCP SDK's task group)
            scope.setdefault("state", {})["trace_context"] = tracing.current_context()
            # a new trace per request: the request id is its trace id; continuing a caller's trace (which may
            # span many requests), the trace id and this request's span id, so each request keeps its own id
            rid = tracing.trace_id_of(root)
            if parent is not None:
                rid += "-" + format(root.span_id, "016x")
            await self._served(scope, receive, send, rid, root)

    async def _served(self, scope: Scope, receive: Receive, send: Send, rid: str, root: Any) -> None:
        scope.setdefault("state", {})["request_id"] = rid  # request.state.request_id
        token = request_id_var.set(rid)  # every log line of this request carries it
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaping here becomes a 500

        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Answered here, not by Starlette's outermost handler: that one re-raises after its 500, and
            # the server then drops the keep-alive connection, so a client's next request on it fails.
            if started_response:
                raise  # the response has begun (a stream): nothing can be sent any more
            log.exception("unhandled error in %s %s", scope.get("method", ""), scope.get("path", ""))
            await send_with_id(_internal_error(rid))
            await send_with_id({"type": "http.response.body", "body": _internal_error_body(rid)})
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")  # the template, never the raw path (cardinality)
            method = scope.get("method", "")
            metrics.HTTP_REQUESTS.labels(method, template, str(status)).inc()
            metrics.HTTP_LATENCY.labels(method, template).observe(time.perf_counter() - started)
            if root is not None:
                root.update_name(f"{method} {template}")
                root.set_attributes({"http.route": template, "http.response.status_code": status})
                if status >= 500:
                    from opentelemetry.trace import Status, StatusCode

                    root.set_status(Status(StatusCode.ERROR))
            request_id_var.reset(token)
