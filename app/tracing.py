"""OpenTelemetry traces: off unless the standard ``OTEL_*`` variables ask for them.

On when ``OTEL_TRACES_EXPORTER`` is ``otlp`` or ``console``, or (that variable unset) when an OTLP endpoint
is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true``
or ``OTEL_TRACES_EXPORTER=none`` keeps it off. ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or ``..._TRACES_PROTOCOL``)
picks ``http/protobuf`` (the default) or ``grpc``; the exporters read their own ``OTEL_EXPORTER_OTLP_*``
variables (endpoint, headers, timeout, certificate), the batch processor ``OTEL_BSP_*``, the resource
``OTEL_SERVICE_NAME`` (default ``kb``) and ``OTEL_RESOURCE_ATTRIBUTES``.

Off, ``span()`` hands back one shared no-op context manager: no span objects, no context switches, so
tracing costs nothing when it is not wanted (docs/benchmarks.md, "Tracing"). kb keeps its own tracer
provider rather than the process-global one, so a test can install an in-memory exporter and take it
away again. Text: a span carries a question only when ``KB_AUDIT__STORE_TEXT`` allows keeping it
(``text()``), and never a passage of a document.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from app.errors import ConfigurationError, KbError

log = logging.getLogger(__name__)

AttributeValue = str | bool | int | float | Sequence[str] | Sequence[int] | Sequence[float]

_NOOP: AbstractContextManager[Any] = contextlib.nullcontext(None)
_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_provider: Any = None
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
    global _tracer, _provider, _store_text
    if _tracer is not None:
        return True
    if exporter is None and not wanted(env):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    import app as app_pkg

    attributes = {"service.version": app_pkg.__version__}
    if not env.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "kb"
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))  # tests read spans as soon as they end
    else:
        provider.add_span_processor(BatchSpanProcessor(_exporter(env)))
    global _attach, _detach, _in_context
    from opentelemetry.context import attach, detach
    from opentelemetry.trace import set_span_in_context

    _attach, _detach, _in_context = attach, detach, set_span_in_context
    _provider, _tracer, _store_text = provider, provider.get_tracer("kb", app_pkg.__version__), store_text
    log.info("OpenTelemetry traces on: %s", type(exporter).__name__ if exporter is not None else _describe(env))
    return True


def _describe(env: Mapping[str, str]) -> str:
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "default"
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = protocol or "http/protobuf"
    return f"{env.get('OTEL_TRACES_EXPORTER') or 'otlp'} {protocol} to {endpoint}"


def shutdown() -> None:
    """Flush what is batched and turn tracing off (the app's end; tests)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


def span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None, *, kind: Any = None, context: Any = None
) -> AbstractContextManager[Any]:
    """A child span of the current one (or of ``context``), current inside the block; the shared no-op when
    tracing is off."""
    tracer = _tracer
    if tracer is None:
        return _NOOP
    if kind is None:
        return _Current(tracer.start_span(name, context=context, attributes=attributes))
    return _Current(tracer.start_span(name, context=context, kind=kind, attributes=attributes))


class _Current:
    """What the SDK's ``start_as_current_span`` does (the span current inside the block, an exception recorded,
    the span ended), without its two generator-based context managers: ~40% of a span's cost here."""

    __slots__ = ("_span", "_token")

    def __init__(self, span_: Any):
        self._span = span_

    def __enter__(self) -> Any:
        self._token = _attach(_in_context(self._span))
        return self._span

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        _detach(self._token)
        if isinstance(exc, Exception):
            record_error(self._span, exc)
        self._span.end()


def record_error(span_: Any, exc: BaseException) -> None:
    """Mark the span failed. An exception's message can hold text (a database error lists its parameters: the
    question, the answer), so without KB_AUDIT__STORE_TEXT only its type and kb's error code are kept."""
    from opentelemetry.trace import Status, StatusCode

    kind = type(exc).__name__
    code = exc.code if isinstance(exc, KbError) else None
    if _store_text:
        span_.record_exception(exc)
        description = f"{kind}: {exc}"
    else:
        span_.add_event("exception", {"exception.type": kind, **({"kb.error_code": code} if code else {})})
        description = f"{kind} ({code})" if code else kind
    span_.set_status(Status(StatusCode.ERROR, description))


def _attach(context: Any) -> Any:  # replaced by OpenTelemetry's at configure(): no import on every span
    raise RuntimeError("tracing is not configured")


_detach = _in_context = _attach


def start(name: str, attributes: Mapping[str, AttributeValue] | None = None, *, kind: Any = None) -> Any:
    """A span that is not made current, ended by the caller (``.end()``); None when tracing is off. For a
    generator: a current span's context would be attached in one thread and detached in another."""
    tracer = _tracer
    if tracer is None:
        return None
    if kind is None:
        return tracer.start_span(name, attributes=attributes)
    return tracer.start_span(name, kind=kind, attributes=attributes)


def current_context() -> Any:
    """The current OpenTelemetry context, to parent spans in a thread that does not inherit it (a pool's);
    None when tracing is off."""
    if _tracer is None:
        return None
    from opentelemetry.context import get_current

    return get_current()


def text(value: str) -> str | None:
    """``value`` if questions may be kept (KB_AUDIT__STORE_TEXT), else None: set no attribute."""
    return value if _store_text else None


def set_attributes(span_: Any, attributes: Mapping[str, AttributeValue | None]) -> None:
    """Set the attributes that have a value (None: left out) on a span from ``span()`` (None when off)."""
    if span_ is not None:
        span_.set_attributes({k: v for k, v in attributes.items() if v is not None})


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), or None: tracing off, or no span open."""
    if _tracer is None:
        return None
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def trace_id_of(span_: Any) -> str:
    """The span's trace id as 32 hex digits (what the request id becomes while tracing is on)."""
    return format(span_.get_span_context().trace_id, "032x")


@contextlib.contextmanager
def installed(exporter: Any, store_text: bool = False) -> Iterator[None]:
    """Tracing into ``exporter`` for a block (tests), then off again."""
    shutdown()
    configure(store_text, env={}, exporter=exporter)
    try:
        yield
    finally:
        shutdown()
