"""OpenTelemetry traces: the span tree of a request, its GenAI attributes, no text unless allowed, the
request id that is the trace id, ingestion per document; and once end to end, from a `kb ask` process
through the OTLP HTTP exporter into a receiver this test runs."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import tracing, tracing_spans
from app.bootstrap import Components
from app.errors import ConfigurationError
from app.logging_setup import RequestIdFilter
from tests.servers import api_client

QUESTION = "How many days of annual leave do I get?"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    with tracing.installed(exporter, store_text=False):
        yield exporter


def _tree(found: list[ReadableSpan], trace_id: int) -> dict[str, list[str]]:
    """Children's names by parent name, for one trace."""
    mine = [s for s in found if s.context.trace_id == trace_id]
    names = {s.context.span_id: s.name for s in mine}
    tree: dict[str, list[str]] = {}
    for s in mine:
        parent = names.get(s.parent.span_id) if s.parent is not None else "<root>"
        tree.setdefault(parent or "<elsewhere>", []).append(s.name)
    return tree


def _texts(found: list[ReadableSpan]) -> str:
    """Everything the spans carry, as text (attributes and events)."""
    parts = [s.name for s in found] + [s.status.description or "" for s in found]
    for s in found:
        parts += [f"{k}={v}" for k, v in (s.attributes or {}).items()]
        parts += [f"{k}={v}" for e in s.events for k, v in (e.attributes or {}).items()]
    return "\n".join(parts)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_chat_request_is_one_trace_with_a_span_per_step(
    spans: InMemorySpanExporter, handbook_components: Components, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.rag.answer")
    records = _Records()
    logging.getLogger().addHandler(records)
    try:
        with api_client(handbook_components, role="employee", collections=("handbook",)) as client:
            got = client.post("/chat", json={"question": QUESTION, "collection": "handbook", "cache": False})
            stored = client.post("/chat", json={"question": QUESTION, "collection": "handbook"})  # into the cache
            again = client.post("/chat", json={"question": QUESTION, "collection": "handbook"})  # an answer-cache hit
    finally:
        logging.getLogger().removeHandler(records)
    assert got.status_code == 200 and stored.status_code == 200 and again.status_code == 200
    assert not stored.json()["cached"] and again.json()["cached"]
    request_id = got.json()["request_id"]
    assert got.headers["x-request-id"] == request_id and len(request_id) == 32
    found = list(spans.get_finished_spans())
    trace_id = int(request_id, 16)  # the request id is the trace id
    tree = _tree(found, trace_id)
    assert tree["<root>"] == ["POST /chat"], tree
    assert {"kb.auth", "kb.answer", "kb.bookkeeping"} <= set(tree["POST /chat"]), tree
    assert {"kb.condense", "kb.retrieve", "kb.verify"} <= set(tree["kb.answer"]), tree
    model_call = [n for n in tree["kb.answer"] if n.startswith("chat ")]
    assert model_call == ["chat extractive-1"], tree
    assert {"kb.embed", "kb.dense_search", "kb.lexical_search", "kb.fusion"} <= set(tree["kb.retrieve"]), tree

    by_name = {s.name: s for s in found if s.context.trace_id == trace_id}
    llm = by_name["chat extractive-1"].attributes or {}
    assert llm["gen_ai.operation.name"] == "chat" and llm["gen_ai.request.model"] == "extractive-1"
    assert llm["gen_ai.usage.input_tokens"] > 0 and llm["gen_ai.usage.output_tokens"] > 0
    assert llm["kb.cost_usd"] == 0.0 and llm["kb.cache_hit"] is False and llm["kb.prompt"].startswith("answer@")
    root = by_name["POST /chat"].attributes or {}
    assert root["http.route"] == "/chat" and root["http.response.status_code"] == 200
    assert (by_name["kb.auth"].attributes or {})["kb.principal"] == "test-employee"
    assert (by_name["kb.answer"].attributes or {})["kb.grounded"] is True
    assert by_name["kb.dense_search"].attributes["kb.collection"] == "handbook"  # type: ignore[index]
    # the third request was answered from the answer cache: no model call in its trace
    third = int(again.json()["request_id"], 16)
    third_spans = [s for s in found if s.context.trace_id == third]
    assert not [s for s in third_spans if s.name.startswith("chat ")]
    lookups = [s.attributes["kb.answer_cache.hit"] for s in third_spans if s.name == "kb.answer_cache.lookup"]  # type: ignore[index]
    assert lookups == [True]
    # the logs carry the same id
    answered = [r for r in records.records if r.getMessage().startswith(f"answered request {request_id}")]
    assert answered and {r.request_id for r in answered} == {request_id}  # type: ignore[attr-defined]
    # no question and no document text (KB_AUDIT__STORE_TEXT=false)
    carried = _texts(found)
    assert "annual leave" not in carried and "27 days" not in carried


def test_the_question_is_in_a_span_only_when_text_may_be_stored(handbook_components: Components) -> None:
    exporter = InMemorySpanExporter()
    with tracing.installed(exporter, store_text=True):
        handbook_components.rag.answer(QUESTION, "handbook")
    (answer,) = [s for s in exporter.get_finished_spans() if s.name == "kb.answer"]
    assert (answer.attributes or {})["kb.question"] == QUESTION
    assert "27 days" not in _texts(list(exporter.get_finished_spans()))  # passages never


def test_a_caller_s_traceparent_is_continued(spans: InMemorySpanExporter, handbook_components: Components) -> None:
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    header = f"00-{parent_trace}-00f067aa0ba902b7-01"
    with api_client(handbook_components) as client:
        got = client.post("/search", json={"query": "hotel", "collection": "handbook"}, headers={"traceparent": header})
    roots = [s for s in spans.get_finished_spans() if s.name == "POST /search"]
    assert roots and roots[0].parent is not None and format(roots[0].parent.span_id, "016x") == "00f067aa0ba902b7"
    # the caller's trace may span many requests: the request id is its trace id and this request's span id
    own = format(roots[0].context.span_id, "016x")
    assert got.status_code == 200 and got.headers["x-request-id"] == f"{parent_trace}-{own}"


def test_the_sampler_decides_at_the_root(handbook_components: Components, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_TRACES_SAMPLER is the operator's (the SDK's samplers, parent-based by default): a caller's
    traceparent that says "not sampled" records nothing; a request that is not sampled still gets its trace
    id as request id."""
    exporter = InMemorySpanExporter()
    with tracing.installed(exporter), api_client(handbook_components) as client:
        unsampled = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}
        got = client.post("/search", json={"query": "hotel", "collection": "handbook"}, headers=unsampled)
        assert got.status_code == 200 and got.headers["x-request-id"].startswith("4bf92f3577b34da6a3ce929d0e0e4736-")
        assert exporter.get_finished_spans() == ()
        sampled = client.post("/search", json={"query": "hotel", "collection": "handbook"})
        found = exporter.get_finished_spans()
        assert {s.name for s in found} >= {"POST /search", "kb.auth", "kb.embed"}
        assert {format(s.context.trace_id, "032x") for s in found} == {sampled.headers["x-request-id"]}
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exporter = InMemorySpanExporter()
    with tracing.installed(exporter), api_client(handbook_components) as client:
        got = client.post("/search", json={"query": "hotel", "collection": "handbook"})
        assert got.status_code == 200 and len(got.headers["x-request-id"]) == 32
    assert exporter.get_finished_spans() == ()


def test_a_request_s_spans_are_handed_on_when_its_root_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request's (SERVER) spans wait for its root; one ending after the root, and beyond the held number,
    go at once; another root's (an ingestion run's) go as they end. One end() only; the OTEL_* limits apply."""
    from opentelemetry.trace import SpanKind

    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "5")
    exporter = InMemorySpanExporter()
    with tracing.installed(exporter):
        with tracing.span("POST /chat", kind=SpanKind.SERVER):
            with tracing.span("child", {"kb.collection": "handbook"}) as child:
                pass
            child.end()  # a second end(): nothing more
            child.set_attribute("kb.after_end", 1)  # an ended span no longer changes
            assert exporter.get_finished_spans() == ()
            late = tracing.start("late")
            for _ in range(300):
                with tracing.span("step"):
                    pass
            assert len(exporter.get_finished_spans()) == 301 - tracing_spans._HELD
        assert len(exporter.get_finished_spans()) == 302
        late.end()
        found = exporter.get_finished_spans()
        assert len(found) == 303 and found[-1].name == "late" and len({s.context.trace_id for s in found}) == 1
        roots = {s.context.span_id for s in found if s.name == "POST /chat"}
        assert roots == {s.parent.span_id for s in found if s.parent}
        assert [s.attributes for s in found if s.name == "child"] == [{"kb.collection": "handb"}]
        exporter.clear()
        with tracing.span("kb.ingest"):
            with tracing.span("kb.ingest.document"):
                pass
            assert [s.name for s in exporter.get_finished_spans()] == ["kb.ingest.document"]


def test_a_failure_s_message_stays_out_of_spans_without_store_text(
    spans: InMemorySpanExporter, handbook_components: Components
) -> None:
    """A database error's message lists its parameters (here the question and the answer): the span keeps its
    type only."""
    from sqlalchemy import text

    with handbook_components.db.begin() as conn:
        conn.execute(text("DROP TABLE turns"))  # the conversation's turn cannot be written
    with api_client(handbook_components) as client:
        got = client.post("/chat", json={"question": QUESTION, "collection": "handbook", "cache": False})
    assert got.status_code == 503 and got.json()["error"]["code"] == "database_unavailable"
    found = list(spans.get_finished_spans())
    (failed,) = [s for s in found if s.name == "kb.bookkeeping"]
    assert not failed.status.is_ok and failed.status.description == "OperationalError"
    assert [e.attributes for e in failed.events] == [{"exception.type": "OperationalError"}]
    assert "annual leave" not in _texts(found) and "27 days" not in _texts(found)


def test_ingestion_is_traced_per_document(
    spans: InMemorySpanExporter, handbook_components: Components, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "oncall.md").write_text("# On call\n\nThe on-call engineer answers pages within 15 minutes.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    report = handbook_components.ingest_pipeline.ingest([folder], "ops")
    assert report.added == 1 and len(report.failed) == 1
    found = list(spans.get_finished_spans())
    (run,) = [s for s in found if s.name == "kb.ingest"]
    tree = _tree(found, run.context.trace_id)
    assert sorted(tree["kb.ingest"]) == ["kb.ingest.document", "kb.ingest.document", "kb.ingest.write"], tree
    docs = {s.attributes["kb.source"]: s.attributes for s in found if s.name == "kb.ingest.document"}  # type: ignore[index]
    assert docs["oncall.md"]["kb.outcome"] == "queued" and docs["oncall.md"]["kb.chunks"] >= 1
    assert docs["broken.pdf"]["kb.outcome"] == "failed" and "not a readable PDF" in docs["broken.pdf"]["kb.reason"]
    (write,) = [s for s in found if s.name == "kb.ingest.write"]
    assert [e.attributes["kb.source"] for e in write.events] == ["oncall.md"]  # type: ignore[index]
    assert (run.attributes or {})["kb.added"] == 1 and (run.attributes or {})["kb.failed"] == 1
    assert "15 minutes" not in _texts(found)


def test_the_otel_variables_decide() -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert not tracing.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing.enabled()
    with pytest.raises(ConfigurationError, match="http/protobuf"):
        tracing.configure(False, env={"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    assert not tracing.enabled()
    tracing.configure(False, env={"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    try:
        assert tracing.enabled()  # the gRPC exporter is built (nothing is sent before a span ends)
    finally:
        tracing.shutdown()


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: POST /v1/traces with an ExportTraceServiceRequest (protobuf)."""

    received: ClassVar[list[ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            type(self).received.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.slow
def test_kb_ask_exports_its_trace_over_otlp_http(handbook_data_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(handbook_data_dir, data_dir)
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        env = {
            **os.environ, "KB_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "kb-test",
            "KB_AUDIT__STORE_TEXT": "false",
        }  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "ask", QUESTION, "--collection", "handbook"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        receiver.shutdown()
    assert done.returncode == 0, done.stderr
    assert "27 days" in done.stdout
    exported = [
        (resource.resource, span)
        for request in _Receiver.received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = {span.name for _, span in exported}
    assert {
        "kb.answer",
        "kb.condense",
        "kb.retrieve",
        "kb.embed",
        "kb.fusion",
        "chat extractive-1",
        "kb.verify",
    } <= names
    services = {
        a.value.string_value for resource, _ in exported for a in resource.attributes if a.key == "service.name"
    }
    assert services == {"kb-test"}
    (llm,) = [span for _, span in exported if span.name == "chat extractive-1"]
    attributes = {a.key: a.value for a in llm.attributes}
    assert attributes["gen_ai.request.model"].string_value == "extractive-1"
    assert attributes["gen_ai.usage.output_tokens"].int_value > 0
    assert len({span.trace_id for _, span in exported}) == 1  # one question, one trace


def test_an_mcp_call_is_a_child_of_its_http_request(
    spans: InMemorySpanExporter, handbook_components: Components
) -> None:
    """The MCP SDK runs each call in a task of its own; its span still joins the request's trace."""
    from app.api.main import create_app
    from tests.api.test_mcp import _http, _run
    from tests.servers import serve_app

    token = handbook_components.keys.create("mcp-traced", "employee", ["handbook"]).token
    with serve_app(create_app(handbook_components.settings, components=handbook_components)) as url:
        answer = _run(_http(f"{url}/mcp", token), lambda c: c.call_tool("ask", {"question": QUESTION}))
    request_id = answer.structured_content["request_id"]
    found = list(spans.get_finished_spans())
    tree = _tree(found, int(request_id, 16))
    assert tree["<root>"] == ["POST /mcp"] and {"kb.auth", "kb.mcp.ask"} <= set(tree["POST /mcp"]), tree
    assert {"kb.answer", "kb.bookkeeping"} <= set(tree["kb.mcp.ask"]), tree
