"""Admin API: upload documents into a collection (background job), inspect, delete.

Every route here needs an admin API key (the router is mounted with the ``admin``
dependency); ``KB_ADMIN__ENABLED=false`` removes the whole surface.
"""

from __future__ import annotations

import logging
import unicodedata
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import components
from app.api.schemas import error_responses
from app.errors import InvalidRequestError, JobNotFoundError, UploadNotStoredError, UploadTooLargeError
from app.queue import Jobs

log = logging.getLogger(__name__)
router = APIRouter(prefix="/admin", tags=["admin"])
_ERRORS = error_responses(401, 403, 404, 413, 422, 429)
_CHUNK = 1024 * 1024


_MAX_NAME_BYTES = 200  # file systems allow 255 bytes; leave room for the upload folder's own naming


def _safe_name(filename: str | None) -> str:
    """The file's own name, as listings and citations will show it.

    Control and format characters are dropped: a right-to-left override in "evil\\u202etxt.md" would
    otherwise show as "evildm.txt" in every listing and citation.
    """
    raw = unicodedata.normalize("NFC", (filename or "").replace("\\", "/"))
    name = "".join(ch for ch in PurePath(raw).name if unicodedata.category(ch) not in ("Cc", "Cf")).strip()
    if not name or name in {".", ".."} or name.startswith("."):
        raise InvalidRequestError(
            f"upload has no usable file name ({filename!r})", code=InvalidRequestError.INVALID_FILENAME
        )
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        raise InvalidRequestError(
            f"file name {name[:40]!r}... is {len(name)} characters; rename the file to at most {_MAX_NAME_BYTES} bytes",
            code=InvalidRequestError.INVALID_FILENAME,
        )
    return name


@router.post("/collections/{collection}/documents", status_code=202, responses=_ERRORS)
async def upload_documents(
    collection: str, request: Request, files: Annotated[list[UploadFile], File(description="Documents to ingest.")]
) -> JSONResponse:
    """Store the uploaded files and queue an ingestion job; poll GET /admin/jobs/{job_id}."""
    parts = components(request)
    collection = parts.admin.checked_name(collection)
    jobs: Jobs = request.app.state.jobs
    limit = int(parts.settings.limits.max_file_mb * 1024 * 1024)
    job_id, folder = jobs.new_job_dir()
    names: list[str] = []
    try:
        for upload in files:
            name = _safe_name(upload.filename)
            if name in names:  # the second would silently replace the first
                raise InvalidRequestError(
                    f"two files in this upload are named {name!r}; rename one or upload them separately",
                    code=InvalidRequestError.DUPLICATE_FILENAME,
                )
            size = 0
            with (folder / name).open("wb") as target:
                while chunk := await upload.read(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise UploadTooLargeError(
                            f"{name} is over the {limit / 1e6:.0f} MB limit (KB_LIMITS__MAX_FILE_MB)"
                        )
                    target.write(chunk)
            names.append(name)
    except OSError as exc:  # the data dir is full or read-only: nothing of this upload is kept
        jobs.discard(job_id, folder)
        log.error("cannot store an upload for job %s: %s", job_id, exc)
        raise UploadNotStoredError(f"the server cannot store the upload ({exc.strerror or exc})") from exc
    except BaseException:
        jobs.discard(job_id, folder)
        raise
    # the shared queue writes the files into PostgreSQL: never on the event loop (other requests wait)
    job = await run_in_threadpool(jobs.submit, job_id, collection, names, folder)
    log.info("accepted ingestion job %s: %d files into %r", job_id, len(names), collection)
    return JSONResponse(job.as_dict(), status_code=202, headers={"Location": f"/admin/jobs/{job_id}"})


@router.get("/jobs", responses=_ERRORS)
def list_jobs(request: Request) -> list[dict[str, Any]]:
    """The 50 newest ingestion jobs, newest first, with their status and progress."""
    return [job.as_dict() for job in request.app.state.jobs.list()]


@router.get("/jobs/{job_id}", responses=_ERRORS)
def get_job(job_id: str, request: Request) -> dict[str, Any]:
    """Status (queued, running, succeeded, failed, cancelled), progress (files done of total, chunks written)
    and, when done, the ingestion summary."""
    job = request.app.state.jobs.get(job_id)
    if job is None:
        raise JobNotFoundError(f"no ingestion job {job_id!r}")
    return dict(job.as_dict())


@router.delete("/jobs/{job_id}", responses=_ERRORS)
def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
    """Cancel a job: a queued one at once, a running one within a second or so (documents it has already
    written stay; ingest again or delete them). Poll GET /admin/jobs/{job_id} for status 'cancelled'."""
    job = request.app.state.jobs.cancel(job_id)
    if job is None:
        raise JobNotFoundError(f"no ingestion job {job_id!r}")
    return dict(job.as_dict())


@router.get("/collections", responses=_ERRORS)
def admin_collections(request: Request) -> list[dict[str, Any]]:
    """Collections with document and chunk counts."""
    parts = components(request)
    return parts.admin.collections()


@router.get("/collections/{collection}/documents", responses=_ERRORS)
def admin_documents(collection: str, request: Request) -> list[dict[str, Any]]:
    """A collection's documents: source, chunks, size, content hash, last ingested."""
    parts = components(request)
    return parts.admin.documents(collection)


@router.delete("/collections/{collection}/documents/{source:path}", responses=_ERRORS)
def admin_delete_document(collection: str, source: str, request: Request) -> dict[str, Any]:
    """Delete one document and its chunks."""
    parts = components(request)
    deleted = parts.admin.delete_document(collection, source)
    return {"collection": collection, "source": source, "chunks_deleted": deleted}


@router.delete("/collections/{collection}", responses=_ERRORS)
def admin_delete_collection(collection: str, request: Request) -> dict[str, Any]:
    """Delete a collection with all its documents and chunks."""
    parts = components(request)
    parts.admin.delete_collection(collection)
    return {"collection": collection, "deleted": True}
