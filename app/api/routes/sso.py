"""The web sign-in: OpenID Connect authorization code flow with PKCE, a server-side session, logout.

``GET /auth/login`` starts a login (a row in the shared database: state, PKCE verifier, nonce, and the
sha256 of a random ``kb_login`` cookie that binds it to this browser) and redirects to the provider.
``GET /auth/callback`` consumes that row once, exchanges the code (Authlib), verifies the ID token
(signature, issuer, audience, expiry, nonce), maps the user's groups to collections and sets the
session cookie: random, HttpOnly (the page's script cannot read it), SameSite=Strict (another site
cannot make the browser send it), Secure over HTTPS. ``POST /auth/logout`` ends the session.
What goes wrong on the way is a page a person can read (the provider is down, the user's groups
give no access, the link was already used), not a JSON error: these are browser navigations.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import (
    CurrentPrincipal,
    RateLimiter,
    components,
    cookie_name,
    cross_site,
    secure_cookies,
    session_cookie,
)
from app.api.routes.web import SECURITY_HEADERS
from app.api.schemas import error_responses
from app.errors import AuthError, ForbiddenError, IdentityProviderError, KbError, SingleSignOnError
from app.sso.identity import identity_from
from app.sso.sessions import LOGIN_TTL_S, new_secret

log = logging.getLogger(__name__)

router = APIRouter(prefix="/auth", tags=["sign-in"])


def _page(status: int, title: str, message: str) -> HTMLResponse:
    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>kb: {html.escape(title)}</title>'
        '<link rel="stylesheet" href="/static/chat.css"></head><body class="auth-page"><main class="auth-box">'
        f'<h1>{html.escape(title)}</h1><p id="auth-message">{html.escape(message)}</p>'
        '<p><a href="/">Back to kb</a></p></main></body></html>'
    )
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def _redirect_uri(request: Request) -> str:
    return components(request).settings.oidc.redirect_url or str(request.url_for("sso_callback"))


@router.get("/config", summary="Whether single sign-on is offered (the web page asks)")
def config(request: Request) -> dict[str, Any]:
    return {"sso": components(request).oidc is not None, "login_url": "/auth/login"}


@router.get(
    "/me", summary="Who the caller is: name, role and readable collections", responses=error_responses(401, 403, 429)
)
def me(request: Request, who: CurrentPrincipal) -> dict[str, Any]:
    via = "session" if not request.headers.get("authorization") and session_cookie(request) else "bearer"
    collections = None if who.collections is None else sorted(who.collections)
    return {"name": who.name, "role": who.role, "collections": collections, "via": via}


@router.get(
    "/login", summary="Start a web sign-in at the identity provider", response_model=None, include_in_schema=False
)
async def login(request: Request) -> Response:
    parts = components(request)
    if parts.oidc is None:
        return _page(404, "Single sign-on is not configured", "Use an API key, or ask an admin to set KB_OIDC__ISSUER.")
    limiter: RateLimiter = request.app.state.rate_limiter  # each start writes a row and asks the provider
    await run_in_threadpool(limiter.hit, f"sso-login:{request.client.host if request.client else 'unknown'}")
    try:
        await parts.oidc.metadata(fresh=True)  # the provider down: a page saying so, not a browser error there
    except IdentityProviderError:
        return _page(503, "Sign-in is unavailable", "The company sign-in service does not answer right now. "
                     "Try again in a few minutes; programs can keep using API keys.")  # fmt: skip
    browser = new_secret()
    redirect_uri = _redirect_uri(request)
    pending = await run_in_threadpool(parts.sessions.begin_login, browser=browser, redirect_uri=redirect_uri)
    url = await parts.oidc.authorization_url(
        redirect_uri=redirect_uri, state=pending.state, code_verifier=pending.code_verifier, nonce=pending.nonce
    )
    response = RedirectResponse(url, status_code=303)
    secure = secure_cookies(request)
    response.set_cookie(  # lax: the provider's redirect back is a cross-site navigation that must carry it
        cookie_name("kb_login", secure), browser, max_age=int(LOGIN_TTL_S), path="/", httponly=True, secure=secure,
        samesite="lax",
    )  # fmt: skip
    return response


@router.get(
    "/callback",
    name="sso_callback",
    summary="The provider's redirect back",
    response_model=None,
    include_in_schema=False,
)
async def callback(request: Request) -> Response:
    parts = components(request)
    if parts.oidc is None:
        return _page(404, "Single sign-on is not configured", "Use an API key.")
    q = request.query_params
    secure = secure_cookies(request)
    state, code = q.get("state", ""), q.get("code", "")
    browser = request.cookies.get(cookie_name("kb_login", secure), "")
    pending = await run_in_threadpool(parts.sessions.take_login, state, browser) if state and browser else None
    if pending is not None and q.get("error"):  # the provider's words only for a login this browser started
        detail = (q.get("error_description") or q["error"])[:300]
        return _page(400, "Sign-in did not complete", f"The identity provider said: {detail}. Start again from kb.")
    if pending is None or not code:
        why = "It is unknown, expired, already used, or was started in another browser. Sign in again from kb."
        return _page(400, "This sign-in link cannot be used", why)
    s = parts.settings.oidc
    try:
        tokens = await parts.oidc.exchange_code(
            code=code, redirect_uri=pending.redirect_uri, code_verifier=pending.code_verifier
        )
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SingleSignOnError("the identity provider sent no ID token (is 'openid' in KB_OIDC__SCOPES?)")
        claims = await parts.oidc.verify(id_token, audience=s.client_id, nonce=pending.nonce)
        if not identity_from(claims, groups_claim=s.groups_claim, name_claim=s.name_claim).groups and tokens.get(
            "access_token"
        ):
            claims = {**await parts.oidc.userinfo(str(tokens["access_token"])), **claims}
        who = identity_from(claims, groups_claim=s.groups_claim, name_claim=s.name_claim)
        await run_in_threadpool(parts.groups.principal_for, who)  # no access: say so now, open no session
        session = await run_in_threadpool(parts.sessions.create, who)
    except IdentityProviderError as exc:
        log.warning("sign-in failed: %s", exc.message)
        return _page(503, "Sign-in is unavailable", "The company sign-in service does not answer right now. "
                     "Try again in a few minutes.")  # fmt: skip
    except ForbiddenError as exc:
        log.info("sign-in refused: %s", exc.message)
        return _page(403, "No access to kb yet", exc.message)
    except (AuthError, SingleSignOnError) as exc:
        log.warning("sign-in failed (%s): %s", exc.code, exc.message)
        return _page(400, "Sign-in did not complete", exc.message)
    log.info("signed in: %s", who.label)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        cookie_name("kb_session", secure), session, max_age=int(s.session_hours * 3600), path="/", httponly=True,
        secure=secure, samesite="strict",
    )  # fmt: skip
    response.delete_cookie(cookie_name("kb_login", secure), path="/", secure=secure, httponly=True, samesite="lax")
    return response


@router.post("/logout", summary="End this browser's sign-in")
async def logout(request: Request) -> JSONResponse:
    parts = components(request)
    if cross_site(request):
        raise ForbiddenError("a sign-out from another site is refused", code=ForbiddenError.CROSS_SITE_REQUEST)
    cookie = session_cookie(request)
    if cookie and parts.oidc is not None:
        try:
            await run_in_threadpool(parts.sessions.end, cookie)
        except KbError as exc:  # the cookie goes anyway
            log.error("session not ended in the database (%s): %s", exc.code, exc.message)
    response = JSONResponse({"signed_out": True})
    secure = secure_cookies(request)
    name = cookie_name("kb_session", secure)
    response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="strict")
    return response
