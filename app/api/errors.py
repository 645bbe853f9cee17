"""Every error leaves the API as ``{"error": {"code", "message", "request_id"}}``.

KbError subclasses carry their status and code; validation errors become 422 with
the first problem spelled out; a vector store or SQL database that does not answer is a
503 naming which; anything unexpected is logged with its traceback and returned as a
bare 500 so no internals or secrets reach the client.
"""

from __future__ import annotations

import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import KbError
from vectorstore.store import StoreNotWritable, StoreUnavailable

_UNWRITABLE_SQLITE = ("readonly", "disk i/o error", "disk is full", "unable to open database file")

log = logging.getLogger(__name__)


def error_body(code: str, message: str, request: Request) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message, "request_id": getattr(request.state, "request_id", "")}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KbError)
    async def kb_error(request: Request, exc: KbError) -> JSONResponse:
        log.info("request failed with %s (%d): %s", exc.code, exc.http_status, exc.message)
        return JSONResponse(
            error_body(exc.code, exc.message, request), status_code=exc.http_status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":  # its loc is a character offset, which reads as a field "0"
                detail = (err.get("ctx") or {}).get("error", "")
                problems.append(f"the body is not valid JSON ({detail}); send a JSON object" if detail else
                                "the body is not valid JSON; send a JSON object")  # fmt: skip
                continue
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        message = "invalid request: " + "; ".join(problems[:5])
        return JSONResponse(error_body("invalid_request", message, request), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail), request), status_code=exc.status_code)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("vector store unavailable: %s", exc)  # the URL stays in the log
        message = "the vector store does not answer; try again shortly (see /readyz)"
        return JSONResponse(error_body("vector_store_unavailable", message, request), status_code=503)

    @app.exception_handler(StoreNotWritable)
    async def store_not_writable(request: Request, exc: StoreNotWritable) -> JSONResponse:
        log.error("%s", exc)
        message = f"{exc}; the disk may be full or read-only (see /readyz)"
        return JSONResponse(error_body("storage_not_writable", message, request), status_code=503)

    @app.exception_handler(sqlite3.OperationalError)
    async def data_file_not_writable(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        """The manifest, BM25 index or job files (SQLite in the data dir) refused a write."""
        if not any(word in str(exc).lower() for word in _UNWRITABLE_SQLITE):
            return await unexpected(request, exc)
        log.error("data file not writable in %s %s: %s", request.method, request.url.path, exc)
        message = f"kb cannot write its data files ({exc}); the disk may be full or read-only (see /readyz)"
        return JSONResponse(error_body("storage_not_writable", message, request), status_code=503)

    @app.exception_handler(OperationalError)
    async def database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        if any(word in str(exc.orig).lower() for word in _UNWRITABLE_SQLITE):  # SQLite: a full or read-only disk
            log.error("database not writable in %s %s: %s", request.method, request.url.path, exc.orig)
            message = f"kb cannot write its database ({exc.orig}); the disk may be full or read-only (see /readyz)"
            return JSONResponse(error_body("storage_not_writable", message, request), status_code=503)
        log.error("database unavailable in %s %s: %s", request.method, request.url.path, exc.orig)  # log only
        message = "the database does not answer; try again shortly (see /readyz)"
        return JSONResponse(error_body("database_unavailable", message, request), status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        message = "internal error; the server log has details under this request id"
        return JSONResponse(error_body("internal_error", message, request), status_code=500)
