"""kb's spans: recorded in a few microseconds, handed to the OpenTelemetry SDK's span processor when they end.

Why not the SDK's ``Tracer.start_span``: in a real request each of its spans cost ~90-140 µs here (sampler,
attribute checks, locks, processor callbacks; the code cold between the pipeline's steps), +0.8 to +1.7 ms
p50 on a cache-bypassed request (docs/benchmarks.md, "Tracing"). A ``RecordedSpan`` keeps what a step
leaves behind: two clock reads, random ids, a dict of attributes, its parent from a context variable
(~7 µs a span in a loop, start to end). A request's spans wait for its root span to end; then each becomes
the SDK's ``ReadableSpan`` (what every processor and exporter takes) and goes to the processor, in one warm
loop on the request's thread after its response: the batch processor only queues them, its thread sends
the batch (OTLP, as usual). The SDK's span limits (``OTEL_SPAN_*``, ``OTEL_ATTRIBUTE_*``) apply.

Not done: kb's spans are not the OpenTelemetry context's current span, so another library's instrumentation
(``opentelemetry-instrument``) would start traces of its own rather than nest under kb's.

Sampling: the configured sampler (``OTEL_TRACES_SAMPLER``, parent-based by default, so a caller's
``traceparent`` that says "not sampled" is respected) decides at each trace's root in this process; the
rest of the trace follows that decision. An unsampled span still has ids (the request id is its trace id)
but is never handed on.

(Tried before this: the SDK's spans made on an emitter thread from recorded ones. Each span's end woke the
thread, which then took the GIL from the request: no gain.)
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

log = logging.getLogger(__name__)
_current: ContextVar[RecordedSpan | None] = ContextVar("kb_span", default=None)
_random = random.Random()  # ids: 128-bit trace, 64-bit span (never 0)
os.register_at_fork(after_in_child=_random.seed)  # a forked worker must not repeat its parent's ids
_PLAIN = (str, int, float, bool)
_HELD = 256  # a root's children held until it ends; more are handed on as they end
_lock = threading.Lock()  # a root's list: its children end in other threads too (a pool's, the MCP SDK's tasks)


class Sink:
    """Where ended spans go: the SDK's processor, with the resource and scope every span carries."""

    def __init__(
        self, processor: Any, sampler: Any, resource: Any, scope: Any, on_error: Callable[[Any, Exception], None]
    ) -> None:
        """``on_error`` marks a span whose block raised (``app.tracing.record_error``: what of it is kept)."""
        from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        self.processor, self.sampler, self.resource, self.scope = processor, sampler, resource, scope
        self.on_error = on_error
        self._readable, self._context = ReadableSpan, SpanContext  # looked up once: emit() runs for every span
        limits = SpanLimits()  # OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT, ...
        self._max_attributes, self._max_length = limits.max_span_attributes, limits.max_span_attribute_length
        self._max_events, self._max_event_attributes = limits.max_events, limits.max_event_attributes
        self._internal, self._unset = SpanKind.INTERNAL, Status(StatusCode.UNSET)
        self._sampled = TraceFlags(TraceFlags.SAMPLED)

    def sampled(self, parent_context: Any, trace_id: int, name: str, kind: Any, attributes: Any) -> bool:
        kind = kind if kind is not None else self._internal
        return bool(self.sampler.should_sample(parent_context, trace_id, name, kind, attributes).decision.is_sampled())

    def emit(self, span: RecordedSpan) -> None:
        try:  # a span that cannot be handed on must not fail the request that made it
            context = self._context(span.trace_id, span.span_id, False, self._sampled)
            parent = None
            if span.parent_id:
                parent = self._context(span.trace_id, span.parent_id, span.parent_remote, self._sampled)
            readable = self._readable(
                name=span.name, context=context, parent=parent, resource=self.resource,
                attributes=self._checked(span.attributes, self._max_attributes), events=self._events(span.events),
                kind=span.kind if span.kind is not None else self._internal, status=span.status or self._unset,
                start_time=span.start_ns, end_time=span.end_ns, instrumentation_scope=self.scope,
            )  # fmt: skip
            self.processor.on_end(readable)
        except Exception:
            log.exception("span %s could not be handed to the span processor", span.name)

    def _checked(self, attributes: dict[str, Any], maximum: int | None) -> Any:
        """Plain values within the limits as they are (an ended span's dict no longer changes); anything else
        through the SDK's checks (which drop what OTLP cannot carry, and apply the OTEL_* limits)."""
        plain = self._max_length is None and (maximum is None or len(attributes) <= maximum)
        if plain and all(type(v) in _PLAIN for v in attributes.values()):
            return attributes
        from opentelemetry.attributes import BoundedAttributes

        return BoundedAttributes(maxlen=maximum, attributes=attributes, immutable=True, max_value_len=self._max_length)

    def _events(self, events: list[tuple[str, dict[str, Any], int]] | None) -> tuple[Any, ...]:
        if not events:
            return ()
        from opentelemetry.sdk.trace import Event

        kept = events if self._max_events is None else events[: self._max_events]
        return tuple(Event(name, self._checked(values, self._max_event_attributes), at) for name, values, at in kept)


_sink: Sink | None = None


def set_sink(sink: Sink | None) -> None:
    global _sink
    _sink = sink


class RecordedSpan:
    """The parts of the OpenTelemetry Span API kb calls; a context manager that makes it current."""

    __slots__ = (
        "_token", "attributes", "end_ns", "events", "kind", "name", "parent_id", "parent_remote", "pending", "root",
        "sampled", "span_id", "start_ns", "status", "trace_id",
    )  # fmt: skip
    trace_id: int
    parent_id: int
    parent_remote: bool
    sampled: bool

    def __init__(self, name: str, kind: Any, attributes: dict[str, Any], parent: Any, remote: Any = None) -> None:
        """``parent``: a RecordedSpan or None; ``remote``: a caller's SpanContext and its Context (traceparent)."""
        self.name, self.kind, self.attributes = name, kind, attributes
        self.events: list[tuple[str, dict[str, Any], int]] | None = None
        self.status: Any = None
        self.end_ns = 0
        self.span_id = _random.getrandbits(64) or 1
        self.pending: list[RecordedSpan] | None = None
        if parent is not None:
            self.trace_id, self.parent_id, self.parent_remote = parent.trace_id, parent.span_id, False
            self.sampled, self.root = parent.sampled, parent.root
        else:  # a root here: the sampler decides for the whole trace
            parent_context = None
            if remote is not None:
                span_context, parent_context = remote
                self.trace_id, self.parent_id, self.parent_remote = span_context.trace_id, span_context.span_id, True
            else:
                self.trace_id, self.parent_id, self.parent_remote = _random.getrandbits(128) or 1, 0, False
            sink = _sink
            self.sampled = sink is not None and sink.sampled(parent_context, self.trace_id, name, kind, attributes)
            # a request's spans wait for it to end (after its response); other roots' (an ingestion run's,
            # a command's) go as they end, so a long run shows in the collector while it runs
            self.root, self.pending = self, ([] if getattr(kind, "name", None) == "SERVER" else None)
        self.start_ns = time.time_ns()

    # once ended, a span no longer changes (as the SDK's): what was handed on is not written to
    def set_attribute(self, key: str, value: Any) -> None:
        if not self.end_ns:
            self.attributes[key] = value

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        if not self.end_ns:
            self.attributes.update(attributes)

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        if self.end_ns:
            return
        if self.events is None:
            self.events = []
        self.events.append((name, dict(attributes or {}), time.time_ns()))

    def update_name(self, name: str) -> None:
        self.name = name

    def set_status(self, status: Any) -> None:
        if not self.end_ns:
            self.status = status

    def is_recording(self) -> bool:
        return self.sampled

    def __enter__(self) -> RecordedSpan:
        self._token = _current.set(self)
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            _current.reset(self._token)
        except ValueError:  # ended in another context than it began in (the SDK's detach logs and goes on too)
            log.warning("span %s ended in another context than it began in", self.name)
        sink = _sink
        if isinstance(exc, Exception) and self.sampled and sink is not None:
            sink.on_error(self, exc)
        self.end()

    def end(self) -> None:
        """A child waits in its root's list, the root hands them all on as it ends (after its response has
        gone, for a request); past ``_HELD`` of them, or after the root, they go at once. A second end(): none."""
        if self.end_ns:
            return
        self.end_ns = time.time_ns()
        sink = _sink
        if not self.sampled or sink is None:
            return
        root = self.root
        if root is not self:
            with _lock:
                pending = root.pending
                if pending is not None and len(pending) < _HELD:
                    pending.append(self)
                    return
            sink.emit(self)
            return
        with _lock:
            pending, self.pending = self.pending, None
        for child in pending or ():
            sink.emit(child)
        sink.emit(self)


def current() -> RecordedSpan | None:
    return _current.get()
