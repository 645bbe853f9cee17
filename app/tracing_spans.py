"""Spans recorded on the request path, made into OpenTelemetry spans off it (``app.tracing`` uses this).

The SDK's own spans cost ~30-40 µs each in a tight loop here and 90-140 µs inside a real request (their
code and objects are cold between the pipeline's steps): 12 of them added 0.8-1.7 ms to a cache-bypassed
request (docs/benchmarks.md, "Tracing"). A ``RecordedSpan`` is what a step needs to leave behind: two
clock reads, random ids, its attributes in a dict, the parent from a context variable. When it ends it is
queued; an emitter thread builds the SDK's ``ReadableSpan`` (attributes checked there) and hands it to
the span processor (batching and OTLP export as usual). The request pays a few microseconds a span.

Sampling: every trace is recorded, but a caller's ``traceparent`` that says "not sampled" is respected
(nothing is recorded for that request); OTEL_TRACES_SAMPLER is not read.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import traceback
from contextvars import ContextVar
from typing import Any

log = logging.getLogger(__name__)

_current: ContextVar[RecordedSpan | None] = ContextVar("kb_span", default=None)
_random = random.Random()  # ids: 128-bit trace, 64-bit span (never 0)


class RecordedSpan:
    """The parts of the OpenTelemetry Span API kb uses, recorded, not yet an SDK span."""

    __slots__ = (
        "_token", "attributes", "end_ns", "events", "kind", "name", "parent_id", "parent_remote", "span_id",
        "start_ns", "status", "trace_id",
    )  # fmt: skip
    trace_id: int
    parent_id: int
    parent_remote: bool

    def __init__(self, name: str, kind: Any, attributes: dict[str, Any], parent: Any) -> None:
        self.name, self.kind, self.attributes = name, kind, attributes
        self.events: list[tuple[str, dict[str, Any], int]] = []
        self.status: Any = None
        self.end_ns = 0
        self.span_id = _random.getrandbits(64) or 1
        if isinstance(parent, RecordedSpan):
            self.trace_id, self.parent_id, self.parent_remote = parent.trace_id, parent.span_id, False
        elif parent is not None:  # a caller's SpanContext (W3C traceparent)
            self.trace_id, self.parent_id, self.parent_remote = parent.trace_id, parent.span_id, True
        else:
            self.trace_id, self.parent_id, self.parent_remote = _random.getrandbits(128) or 1, 0, False
        self.start_ns = time.time_ns()

    # the Span API, as kb calls it
    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        self.attributes.update(attributes)

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        self.events.append((name, dict(attributes or {}), time.time_ns()))

    def update_name(self, name: str) -> None:
        self.name = name

    def set_status(self, status: Any) -> None:
        self.status = status

    def is_recording(self) -> bool:
        return True

    def get_span_context(self) -> Any:
        from opentelemetry.trace import SpanContext, TraceFlags

        return SpanContext(self.trace_id, self.span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))

    # current inside a with block
    def __enter__(self) -> RecordedSpan:
        self._token = _current.set(self)
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        _current.reset(self._token)
        if isinstance(exc, Exception):
            record_error(self, exc, with_text=_emitter.store_text if _emitter is not None else False)
        self.end()

    def end(self) -> None:
        self.end_ns = time.time_ns()
        emitter = _emitter
        if emitter is not None:
            emitter.queue.put(self)


def current() -> RecordedSpan | None:
    return _current.get()


def record_error(span: Any, exc: BaseException, *, with_text: bool) -> None:
    """Mark the span failed: the exception's type and kb's error code; its message and stack only when text
    may be stored (a database error's message lists its parameters: the question, the answer)."""
    from opentelemetry.trace import Status, StatusCode

    from app.errors import KbError

    kind = type(exc).__name__
    code = exc.code if isinstance(exc, KbError) else None
    attributes: dict[str, Any] = {"exception.type": kind}
    if code:
        attributes["kb.error_code"] = code
    if with_text:
        attributes["exception.message"] = str(exc)
        attributes["exception.stacktrace"] = "".join(traceback.format_exception(exc))
        description = f"{kind}: {exc}"
    else:
        description = f"{kind} ({code})" if code else kind
    span.add_event("exception", attributes)
    span.set_status(Status(StatusCode.ERROR, description))


class Emitter:
    """The thread that turns recorded spans into the SDK's and hands them to the span processor."""

    def __init__(self, processor: Any, resource: Any, scope: Any, store_text: bool) -> None:
        self.processor, self.resource, self.scope, self.store_text = processor, resource, scope, store_text
        self.queue: queue.Queue[RecordedSpan | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="kb-spans", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                self.processor.on_end(self._readable(item))
            except Exception:  # a span that cannot be made must not stop the others
                log.exception("could not export span %s", item.name)
            finally:
                self.queue.task_done()
        self.queue.task_done()

    def _readable(self, span: RecordedSpan) -> Any:
        from opentelemetry.attributes import BoundedAttributes
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        sampled = TraceFlags(TraceFlags.SAMPLED)
        context = SpanContext(span.trace_id, span.span_id, is_remote=False, trace_flags=sampled)
        parent = None
        if span.parent_id:
            parent = SpanContext(span.trace_id, span.parent_id, is_remote=span.parent_remote, trace_flags=sampled)
        events = tuple(
            Event(name, BoundedAttributes(attributes=attributes, immutable=True), timestamp)
            for name, attributes, timestamp in span.events
        )
        return ReadableSpan(
            name=span.name, context=context, parent=parent, resource=self.resource,
            attributes=BoundedAttributes(attributes=span.attributes, immutable=True), events=events,
            kind=span.kind if span.kind is not None else SpanKind.INTERNAL,
            status=span.status or Status(StatusCode.UNSET), start_time=span.start_ns, end_time=span.end_ns,
            instrumentation_scope=self.scope,
        )  # fmt: skip

    def flush(self) -> None:
        self.queue.join()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)


_emitter: Emitter | None = None


def set_emitter(emitter: Emitter | None) -> None:
    global _emitter
    _emitter = emitter
