"""OpenTelemetry traces: off unless the standard ``OTEL_*`` variables ask for them.

On when ``OTEL_TRACES_EXPORTER`` is ``otlp`` or ``console``, or (that variable unset) when an OTLP endpoint
is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true``
or ``OTEL_TRACES_EXPORTER=none`` keeps it off. ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or ``..._TRACES_PROTOCOL``)
picks ``http/protobuf`` (the default) or ``grpc``; the exporters read their own ``OTEL_EXPORTER_OTLP_*``
variables (endpoint, headers, timeout, certificate), the batch processor ``OTEL_BSP_*``, the resource
``OTEL_SERVICE_NAME`` (default ``kb``) and ``OTEL_RESOURCE_ATTRIBUTES``.

Off, ``span()`` hands back one shared no-op context manager: no span objects, no context switches, so
tracing costs nothing when it is not wanted (docs/benchmarks.md, "Tracing"). On, a step records its span
in a few microseconds and the SDK's span is made off the request path (``app.tracing_spans``). kb keeps
its own processor rather than the process-global tracer provider, so a test can install an in-memory
exporter and take it away again. Text: a span carries a question only when ``KB_AUDIT__STORE_TEXT`` allows keeping it
(``text()``), and never a passage of a document.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from app import tracing_spans as _spans
from app.errors import ConfigurationError

log = logging.getLogger(__name__)

AttributeValue = str | bool | int | float | Sequence[str] | Sequence[int] | Sequence[float]

_NOOP: AbstractContextManager[Any] = contextlib.nullcontext(None)
_on = False
_processor: Any = None  # the SDK's span processor (batching and exporting) while tracing is on
_store_text = False


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces (see the module's docstring)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _exporter(env: Mapping[str, str]) -> Any:
    kind = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER={kind!r}: kb exports traces with 'otlp', 'console' or 'none'")
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "").strip()
    if protocol in ("", "http/protobuf"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    raise ConfigurationError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: kb sends OTLP traces as 'http/protobuf' (default) or 'grpc'"
    )


def configure(store_text: bool, env: Mapping[str, str] = os.environ, exporter: Any = None) -> bool:
    """Turn tracing on if the environment asks (or an ``exporter`` is given: tests); returns whether it is on.

    Idempotent: a second call (``kb serve`` builds the app after the CLI's setup) changes nothing."""
    global _on, _store_text, _processor
    if _on:
        return True
    if exporter is None and not wanted(env):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    import app as app_pkg

    attributes = {"service.version": app_pkg.__version__}
    if not env.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "kb"
    # tests read spans as soon as they are flushed; otherwise batches, exported in the background
    processor = SimpleSpanProcessor(exporter) if exporter is not None else BatchSpanProcessor(_exporter(env))
    scope = InstrumentationScope("kb", app_pkg.__version__)
    _spans.set_emitter(_spans.Emitter(processor, Resource.create(attributes), scope, store_text))
    _processor, _store_text, _on = processor, store_text, True
    if exporter is None:
        atexit.register(shutdown)  # a command's last spans are sent before the process ends
    log.info("OpenTelemetry traces on: %s", type(exporter).__name__ if exporter is not None else _describe(env))
    return True


def _describe(env: Mapping[str, str]) -> str:
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "default"
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = protocol or "http/protobuf"
    return f"{env.get('OTEL_TRACES_EXPORTER') or 'otlp'} {protocol} to {endpoint}"


def flush() -> None:
    """Every span ended so far handed to the processor and exported (tests; the end of a command)."""
    emitter = _spans._emitter
    if emitter is not None:
        emitter.flush()
    if _processor is not None:
        _processor.force_flush()


def shutdown() -> None:
    """Send what is recorded and batched, and turn tracing off (the app's end; a command's exit; tests)."""
    global _on, _processor
    emitter, processor = _spans._emitter, _processor
    _on, _processor = False, None
    _spans.set_emitter(None)
    if emitter is not None:
        emitter.stop()
    if processor is not None:
        processor.shutdown()


def enabled() -> bool:
    return _on


def span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None, *, kind: Any = None, context: Any = None
) -> AbstractContextManager[Any]:
    """A child span of the current one (or of ``context``: a span from ``current_context()``, or an
    OpenTelemetry Context carrying a caller's trace), current inside the block; the shared no-op when
    tracing is off, or when the caller's trace is not sampled."""
    if not _on:
        return _NOOP
    parent = _parent(context)
    if parent is _UNSAMPLED:
        return _NOOP
    return _spans.RecordedSpan(name, kind, dict(attributes) if attributes else {}, parent)


def start(name: str, attributes: Mapping[str, AttributeValue] | None = None, *, kind: Any = None) -> Any:
    """A span that is not made current, ended by the caller (``.end()``); None when tracing is off. For a
    generator: a current span would be set in one thread's context and reset in another's."""
    if not _on:
        return None
    return _spans.RecordedSpan(name, kind, dict(attributes) if attributes else {}, _spans.current())


_UNSAMPLED = object()


def _parent(context: Any) -> Any:
    if context is None:
        return _spans.current()
    if isinstance(context, _spans.RecordedSpan):
        return context
    from opentelemetry.trace import get_current_span

    remote = get_current_span(context).get_span_context()
    if not remote.is_valid:
        return None
    return remote if remote.trace_flags.sampled else _UNSAMPLED


def current_context() -> Any:
    """The current span, to parent spans in a thread or task that does not inherit it (a pool's, the MCP
    SDK's); None when tracing is off."""
    return _spans.current() if _on else None


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), or None: tracing off, or no span open."""
    current = _spans.current() if _on else None
    return format(current.trace_id, "032x") if current is not None else None


def record_error(span_: Any, exc: BaseException) -> None:
    """Mark the span failed; the exception's message only when text may be stored (``tracing_spans``)."""
    _spans.record_error(span_, exc, with_text=_store_text)


def text(value: str) -> str | None:
    """``value`` if questions may be kept (KB_AUDIT__STORE_TEXT), else None: set no attribute."""
    return value if _store_text else None


def set_attributes(span_: Any, attributes: Mapping[str, AttributeValue | None]) -> None:
    """Set the attributes that have a value (None: left out) on a span from ``span()`` (None when off)."""
    if span_ is not None:
        span_.set_attributes({k: v for k, v in attributes.items() if v is not None})


def trace_id_of(span_: Any) -> str:
    """The span's trace id as 32 hex digits (what the request id becomes while tracing is on)."""
    return format(span_.trace_id, "032x")


@contextlib.contextmanager
def installed(exporter: Any, store_text: bool = False) -> Iterator[None]:
    """Tracing into ``exporter`` for a block (tests), then off again."""
    shutdown()
    configure(store_text, env={}, exporter=exporter)
    try:
        yield
    finally:
        shutdown()
