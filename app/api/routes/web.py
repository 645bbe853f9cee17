"""The web chat page at ``/`` and its static files at ``/static``.

Plain HTML, CSS and one small script, all served from the package: the product runs
air-gapped, so nothing is loaded from a CDN and there is no build step. The page is
public (it holds no data); everything it shows comes from the API with the key the
employee types, so the same auth and access control apply as for any other client.

Document text is untrusted (anyone who can get a file ingested controls it), so the
script only ever inserts it as text, and the page is served with a strict
Content-Security-Policy as a second line of defence: no inline script, no other origin.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=1)
def _page() -> str:
    return (WEB_DIR / "index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse)
def index() -> HTMLResponse:
    """The chat page; it asks for an API key and talks to /collections and /chat."""
    return HTMLResponse(_page(), headers=SECURITY_HEADERS)


def install(api: FastAPI) -> None:
    """Serve the page and mount its static files (a mount cannot live on an APIRouter)."""
    api.include_router(router)
    api.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")
