"""OpenTelemetry traces: off unless the standard ``OTEL_*`` variables ask for them.

On when ``OTEL_TRACES_EXPORTER`` is ``otlp`` or ``console``, or (that variable unset) when an OTLP endpoint
is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true``
or ``OTEL_TRACES_EXPORTER=none`` keeps it off. ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or ``..._TRACES_PROTOCOL``)
picks ``http/protobuf`` (the default) or ``grpc``; the exporters read their own ``OTEL_EXPORTER_OTLP_*``
variables (endpoint, headers, timeout, certificate), the batch processor ``OTEL_BSP_*``, the resource
``OTEL_SERVICE_NAME`` (default ``kb``) and ``OTEL_RESOURCE_ATTRIBUTES``.

Off, ``span()`` hands back one shared no-op context manager: no span objects, no context switches, so
tracing costs nothing when it is not wanted (docs/benchmarks.md, "Tracing"). On, a step records its span
in a few microseconds and hands the SDK a finished span when it ends (``app.tracing_spans``: why). kb keeps
its own span processor rather than the process-global tracer provider, so a test can install an
in-memory exporter and take it away again. Text: a span carries a question only when
``KB_AUDIT__STORE_TEXT`` allows keeping it (``text()``), and never a passage of a document.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from app import tracing_spans as _spans
from app.errors import ConfigurationError, KbError

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
    global _on, _processor, _store_text
    if _on:
        return True
    if exporter is None and not wanted(env):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    import app as app_pkg

    attributes = {"service.version": app_pkg.__version__}
    if not env.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "kb"
    # the SDK's provider reads OTEL_TRACES_SAMPLER(_ARG) and builds the resource; kb's spans (tracing_spans)
    # go straight to the processor: tests read them as soon as they end, otherwise batched in the background
    provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
    processor = SimpleSpanProcessor(exporter) if exporter is not None else BatchSpanProcessor(_exporter(env))
    scope = InstrumentationScope("kb", app_pkg.__version__)
    _spans.set_sink(_spans.Sink(processor, provider.sampler, provider.resource, scope, record_error))
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


def shutdown() -> None:
    """Send what is batched and turn tracing off (the app's end; a command's end; tests)."""
    global _on, _processor
    processor, _processor, _on = _processor, None, False
    _spans.set_sink(None)
    if processor is not None:
        processor.shutdown()


def enabled() -> bool:
    return _on


def span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None, *, kind: Any = None, context: Any = None
) -> AbstractContextManager[Any]:
    """A child span of the current one (or of ``context``: a span from ``current_context()``, or an
    OpenTelemetry Context carrying a caller's trace), current inside the block; the shared no-op when
    tracing is off."""
    if not _on:
        return _NOOP
    return _new(name, kind, attributes, context)


def start(name: str, attributes: Mapping[str, AttributeValue] | None = None, *, kind: Any = None) -> Any:
    """A span that is not made current, ended by the caller (``.end()``); None when tracing is off. For a
    generator: a current span would be set in one thread's context and reset in another's."""
    if not _on:
        return None
    return _new(name, kind, attributes, None)


def _new(name: str, kind: Any, attributes: Mapping[str, AttributeValue] | None, context: Any) -> _spans.RecordedSpan:
    values = dict(attributes) if attributes else {}
    if context is None:
        return _spans.RecordedSpan(name, kind, values, _spans.current())
    if isinstance(context, _spans.RecordedSpan):
        return _spans.RecordedSpan(name, kind, values, context)
    from opentelemetry.trace import get_current_span  # a caller's traceparent, extracted

    remote = get_current_span(context).get_span_context()
    if not remote.is_valid:
        return _spans.RecordedSpan(name, kind, values, None)
    return _spans.RecordedSpan(name, kind, values, None, (remote, context))


def current_context() -> Any:
    """The current span, to parent spans in a thread or task that does not inherit it (a pool's, the MCP
    SDK's); None when tracing is off or no span is open (then the thread's spans are roots of their own)."""
    return _spans.current() if _on else None


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), or None: tracing off, or no span open."""
    current = _spans.current() if _on else None
    return format(current.trace_id, "032x") if current is not None else None


def record_error(span_: Any, exc: BaseException) -> None:
    """Mark the span failed: the exception's type and kb's error code; its message and stack only when text
    may be stored (a database error's message lists its parameters: the question, the answer)."""
    from opentelemetry.trace import Status, StatusCode

    kind = type(exc).__name__
    code = exc.code if isinstance(exc, KbError) else None
    attributes: dict[str, Any] = {"exception.type": kind}
    if code:
        attributes["kb.error_code"] = code
    if _store_text:
        attributes["exception.message"] = str(exc)
        attributes["exception.stacktrace"] = "".join(traceback.format_exception(exc))
        description = f"{kind}: {exc}"
    else:
        description = f"{kind} ({code})" if code else kind
    span_.add_event("exception", attributes)
    span_.set_status(Status(StatusCode.ERROR, description))


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
