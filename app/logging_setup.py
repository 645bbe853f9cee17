"""Process-wide logging: readable text or one JSON object per line, each tagged with the
id of the HTTP request being served.

Why a contextvar: the request-id middleware sets it once, and every log line written
while that request is handled (route code, the RAG service in the thread pool, which
copies the context, and uvicorn's access line) carries it without passing the id down
through every call. Each request runs in its own task, so ids never leak between
requests; background threads (the ingestion worker) log without one.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import IO, Any

request_id_var: ContextVar[str | None] = ContextVar("kb_request_id", default=None)

NOISY = ("httpx", "chromadb", "sentence_transformers", "bm25s")
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "color_message"}
_MARK = "_kb_handler"


class RequestIdFilter(logging.Filter):
    """Copies the current request id onto every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", ...extra, "exc"}``, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in record.__dict__.items():  # fields passed with extra={...}
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The familiar one-liner, with ``[request id]`` appended while a request is served."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{line} [{rid}]" if rid else line


def configure_logging(level: str = "INFO", fmt: str = "text", *, stream: IO[str] | None = None) -> logging.Handler:
    """Install our one handler on the root logger (idempotent: replaces a previous one of ours).

    uvicorn must then run with ``log_config=None`` so its loggers propagate here instead of
    installing their own handlers and format.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # undo a uvicorn dictConfig run earlier in-process
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    return handler
