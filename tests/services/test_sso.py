"""Single sign-on against a real OpenID provider (oidc-provider, tests/oidc_server.py).

Four users: alice (hr-team → handbook), bob (eng → engineering), carol (contractors: mapped to
nothing) and dana (kb-admins → admin). Their access tokens come from the provider's real code flow
through its login form; forged ones are signed here with the provider's own key (the test
generated it) or with another. kb runs under uvicorn over HTTP, key-only API use beside it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.api.main import create_app
from app.bootstrap import Components
from app.db.schema import audit, usage
from app.settings import AuthSettings, LimitSettings, OidcSettings, Settings
from tests.browser import CHROMIUM, MISSING, chromium_page
from tests.conftest import ROOT
from tests.oidc_server import AUDIENCE, CLIENT_ID, CLIENT_SECRET, OidcProvider, new_key, unavailable
from tests.servers import free_port, serve_app

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")

ENG_FACT = "The staging cluster is rebuilt from scratch every Sunday at 02:00."
LEAVE_QUESTION = "How many days of annual leave do I get?"
HANDBOOK_WORDS = ("27 days", "handbook.pdf")  # in the handbook, not in the question


@dataclass
class Site:
    url: str
    components: Components
    provider: OidcProvider

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def token(self, user: str) -> str:
        return str(self.provider.tokens(user)["access_token"])


def sso_settings(data_dir: Path, issuer: str, kb_url: str, **oidc: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        auth=AuthSettings(key_cache_s=0),
        limits=LimitSettings(failed_auth_per_minute=1000),
        oidc=OidcSettings(
            issuer=issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, audience=AUDIENCE,
            scopes="openid profile email groups", redirect_url=kb_url + "/auth/callback", jwks_refresh_min_s=0,
            **oidc,
        ),
    )  # fmt: skip


@pytest.fixture(scope="module")
def sso_data_dir(tmp_path_factory: pytest.TempPathFactory, handbook_data_dir: Path, embedder: Any) -> Path:
    """The handbook plus an 'engineering' collection, and the group mappings."""
    root = tmp_path_factory.mktemp("sso")
    data_dir = root / "data"
    shutil.copytree(handbook_data_dir, data_dir)
    components = Components(Settings(_env_file=None, data_dir=data_dir), embedder=embedder)  # type: ignore[call-arg]
    folder = root / "engineering"
    folder.mkdir()
    (folder / "staging.md").write_text(f"# Staging\n\n{ENG_FACT}\n", encoding="utf-8")
    assert components.ingest_pipeline.ingest([folder], "engineering").added == 1
    components.groups.map("hr-team", ["handbook"])
    components.groups.map("eng", ["engineering"])
    components.groups.map("kb-admins", [], role="admin")
    components.close()
    return data_dir


def open_site(root: Path, data_dir: Path, embedder: Any, **oidc: Any) -> Iterator[Site]:
    port = free_port()
    kb_url = f"http://127.0.0.1:{port}"
    provider = OidcProvider(root, [kb_url + "/auth/callback"]).start()
    components = Components(sso_settings(data_dir, provider.issuer, kb_url, **oidc), embedder=embedder)
    try:
        with serve_app(create_app(components.settings, components=components), port=port) as url:
            yield Site(url, components, provider)
    finally:
        provider.stop()
        components.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, sso_data_dir: Path, embedder: Any) -> Iterator[Site]:
    yield from open_site(tmp_path_factory.mktemp("sso-site"), sso_data_dir, embedder)


@pytest.fixture(scope="module")
def tokens(site: Site) -> dict[str, str]:
    return {user: site.token(user) for user in ("alice", "bob", "carol", "dana")}


def no_handbook_text(payload: Any) -> None:
    text = json.dumps(payload).lower()
    for words in HANDBOOK_WORDS:
        assert words not in text, f"handbook text {words!r} reached a user without access: {text[:500]}"


def test_a_users_access_token_reads_what_their_groups_grant(site: Site, tokens: dict[str, str]) -> None:
    with site.client(tokens["alice"]) as alice:
        assert [c["name"] for c in alice.get("/collections").json()] == ["handbook"]
        me = alice.get("/auth/me").json()
        assert me == {"name": "Alice Example (sso:alice)", "role": "employee", "collections": ["handbook"],
                      "via": "bearer"}  # fmt: skip
        answer = alice.post("/chat", json={"question": LEAVE_QUESTION}).json()
        assert "27" in answer["answer"] and answer["citations"][0]["source"] == "handbook.pdf", answer
        forbidden = alice.post("/chat", json={"question": "When is staging rebuilt?", "collection": "engineering"})
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "collection_forbidden"
        with alice.stream("POST", "/chat", json={"question": LEAVE_QUESTION, "stream": True}) as stream:
            events = "".join(stream.iter_text())
        assert stream.status_code == 200 and "event: done" in events and "handbook.pdf" in events
        v1 = alice.post(
            "/v1/chat/completions", json={"model": "kb", "messages": [{"role": "user", "content": LEAVE_QUESTION}]}
        )
        assert v1.status_code == 200 and "27" in v1.json()["choices"][0]["message"]["content"], v1.text

    # Bob (eng) asks the same question right after alice: the cached answer must not reach him.
    with site.client(tokens["bob"]) as bob:
        assert [c["name"] for c in bob.get("/collections").json()] == ["engineering"]
        answer = bob.post("/chat", json={"question": LEAVE_QUESTION}).json()
        no_handbook_text(answer)
        assert {c["source"] for c in answer["citations"]} <= {"staging.md"}
        search = bob.post("/search", json={"query": LEAVE_QUESTION, "top_k": 10}).json()
        assert {hit["collection"] for hit in search["results"]} <= {"engineering"}
        no_handbook_text(search)
        for path, body in (("/chat", {"question": LEAVE_QUESTION, "collection": "handbook"}),
                           ("/search", {"query": LEAVE_QUESTION, "collection": "handbook"})):  # fmt: skip
            refused = bob.post(path, json=body)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "collection_forbidden"
            no_handbook_text(refused.json())
        assert (
            ENG_FACT.split(" every")[0]
            in bob.post("/chat", json={"question": "When is staging rebuilt?"}).json()["answer"]
        )

    # Audit rows and the ledger name the user (name and subject), not a key.
    with site.components.db.connect() as conn:
        who = {row[0] for row in conn.execute(select(audit.c.key_name))}
        ledger = {row[0] for row in conn.execute(select(usage.c.key))}
    assert {"Alice Example (sso:alice)", "Bob Builder (sso:bob)"} <= who
    assert "Alice Example (sso:alice)" in ledger or "Bob Builder (sso:bob)" in ledger


def test_groups_that_map_to_nothing_get_a_403_that_says_so(site: Site, tokens: dict[str, str]) -> None:
    with site.client(tokens["carol"]) as carol:
        refused = carol.post("/chat", json={"question": LEAVE_QUESTION})
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert (
        error["code"] == "no_group_access" and "contractors" in error["message"] and "kb groups map" in error["message"]
    )


def test_an_admin_group_gives_the_admin_api(site: Site, tokens: dict[str, str]) -> None:
    with site.client(tokens["dana"]) as dana:
        assert dana.get("/admin/collections").status_code == 200
        assert {c["name"] for c in dana.get("/collections").json()} == {"handbook", "engineering"}
    with site.client(tokens["alice"]) as alice:
        assert alice.get("/admin/collections").json()["error"]["code"] == "admin_required"


def _tamper(token: str, **claims: Any) -> str:
    """The same header and signature over a changed payload."""
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(claims)
    changed = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{header}.{changed}.{signature}"


def _b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _unsigned(site: Site) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = json.loads(base64.urlsafe_b64decode(site.provider.sign({}).split(".")[1] + "=="))
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


ABUSE = {
    "expired": (lambda s, t: s.provider.sign({"exp": 1_000_000_000, "iat": 999_999_000}), "token_expired"),
    "expired beyond the clock skew": (
        lambda s, t: s.provider.sign({"exp": int(__import__("time").time()) - 120}),
        "token_expired",
    ),
    "wrong audience": (lambda s, t: s.provider.sign({"aud": "api://another-app"}), "invalid_token"),
    "wrong issuer": (lambda s, t: s.provider.sign({"iss": "http://127.0.0.1:1/evil"}), "invalid_token"),
    "alg none": (lambda s, t: _unsigned(s), "invalid_token"),
    "signed by another key": (lambda s, t: s.provider.sign({}, key=new_key(s.provider.keys[0].kid)), "invalid_token"),
    "signed by an unknown key id": (lambda s, t: s.provider.sign({}, key=new_key("attacker")), "invalid_token"),
    "tampered group claim": (lambda s, t: _tamper(t, groups=["kb-admins", "eng", "hr-team"]), "invalid_token"),
    "not a JWT": (lambda s, t: "a.b.c", "invalid_token"),
    "a header that is not an object": (lambda s, t: _b64(["RS256"]) + "." + t.split(".", 1)[1], "invalid_token"),
    "an ID token for kb's audience": (lambda s, t: s.provider.sign({"nonce": "n-1"}), "invalid_token"),
}


@pytest.mark.parametrize("case", list(ABUSE))
def test_abused_tokens_get_a_401_with_a_json_error(site: Site, tokens: dict[str, str], case: str) -> None:
    make, code = ABUSE[case]
    with site.client(make(site, tokens["bob"])) as client:
        response = client.post("/search", json={"query": LEAVE_QUESTION, "collection": "handbook"})
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and "Traceback" not in response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_token_without_a_key_id_is_checked_against_the_providers_keys(site: Site) -> None:
    with site.client(site.provider.sign({}, kid=False)) as client:
        assert client.get("/collections").status_code == 200
    with site.client(site.provider.sign({}, key=new_key("x"), kid=False)) as client:
        assert client.get("/collections").json()["error"]["code"] == "invalid_token"


def test_a_token_within_the_clock_skew_and_a_forged_but_valid_one_are_told_apart(site: Site) -> None:
    """Within 60 s of expiry skew the provider's signature is accepted; the same claims under another key are not."""
    import time

    recent = site.provider.sign({"exp": int(time.time()) - 20})
    with site.client(recent) as client:
        assert client.get("/collections").status_code == 200
    with site.client(site.provider.sign({"exp": int(time.time()) - 20}, key=new_key("key-1"))) as client:
        assert client.get("/collections").status_code == 401


def test_key_rotation_and_a_provider_outage(tmp_path: Path, sso_data_dir: Path, embedder: Any) -> None:
    for site in open_site(tmp_path, sso_data_dir, embedder, cookie_secure=True):
        with httpx.Client(base_url=site.url) as browser:  # Secure cookies get __Host- names: no subdomain plants them
            started = browser.get("/auth/login")
        login_cookie = started.headers["set-cookie"]
        assert login_cookie.startswith("__Host-kb_login=") and "Secure" in login_cookie and "Path=/;" in login_cookie

        old_token = site.token("alice")
        with site.client(old_token) as client:
            assert client.get("/collections").status_code == 200  # keys fetched and cached
        site.provider.restart([new_key("key-2")])  # rotation: key-1 retired
        with site.client(site.token("alice")) as client:
            assert client.get("/collections").status_code == 200  # kb fetched key-2 for the new kid
        with site.client(old_token) as client:
            refused = client.get("/collections")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token"

        fresh = site.token("alice")
        site.provider.stop()  # the provider goes down: tokens signed with a known key still work
        with site.client(fresh) as client:
            assert client.get("/collections").status_code == 200
        with site.client(site.provider.sign({}, key=new_key("key-3"))) as client:
            unknown = client.get("/collections")  # a key it cannot look up: refused with the keys it has
        assert unknown.status_code == 401 and unknown.json()["error"]["code"] == "invalid_token"
        with httpx.Client(base_url=site.url) as browser:
            page = browser.get("/auth/login")
        assert (
            page.status_code == 503 and "does not answer" in page.text and "text/html" in page.headers["content-type"]
        )


def test_a_provider_down_at_start_is_a_503_and_not_a_storm_of_fetches(
    tmp_path: Path, sso_data_dir: Path, embedder: Any
) -> None:
    import time

    for site in open_site(tmp_path, sso_data_dir, embedder):
        token = site.provider.sign({})
        site.provider.stop()  # before kb has ever fetched the keys
        with site.client(token) as client:
            started = time.monotonic()
            answers = [client.get("/collections") for _ in range(5)]
            elapsed = time.monotonic() - started
        assert {(r.status_code, r.json()["error"]["code"]) for r in answers} == {(503, "identity_provider_unavailable")}
        assert "127.0.0.1" not in answers[0].text  # the provider's address stays in the log
        assert elapsed < 4, f"each refusal waited for another fetch ({elapsed:.1f} s)"  # one fetch, then backed off


def _sign_in(site: Site, browser: httpx.Client, user: str) -> str:
    """kb's /auth/login → the provider's login form → the callback URL (not yet followed)."""
    return site.provider.login_form(browser, site.url + "/auth/login", user, stop_at=site.url + "/auth/callback")


def test_web_sign_in_sets_a_server_side_session_and_refuses_replays(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=60) as browser:
        callback = _sign_in(site, browser, "alice")
        done = browser.get(callback)
        assert done.status_code == 303 and done.headers["location"] == "/"
        cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("kb_session="))
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/"} <= flags  # no script reads it, no other site sends it
        assert "secure" not in flags  # plain http on loopback; an https redirect_url makes it Secure
        me = browser.get("/auth/me").json()
        assert me["name"] == "Alice Example (sso:alice)" and me["via"] == "session"
        assert "27" in browser.post("/chat", json={"question": LEAVE_QUESTION}).json()["answer"]

        # The same callback again (a replayed code and state): refused, and the session is untouched.
        replay = browser.get(callback)
        assert replay.status_code == 400 and "already used" in replay.text
        bad_state = browser.get(callback.replace("state=", "state=forged"))
        assert bad_state.status_code == 400 and "cannot be used" in bad_state.text

        # A signed-in request that says it comes from another site is refused.
        cross = browser.post("/chat", json={"question": LEAVE_QUESTION}, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403 and cross.json()["error"]["code"] == "cross_site_request"
        old_browser = browser.post(
            "/chat", json={"question": LEAVE_QUESTION}, headers={"Origin": "https://evil.example"}
        )
        assert old_browser.status_code == 403  # no Fetch Metadata: the Origin header decides
        same = browser.post("/chat", json={"question": LEAVE_QUESTION}, headers={"Origin": site.url})
        assert same.status_code == 200
        assert browser.post("/auth/logout", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403

        # A provider error on a link this browser did not start shows no text of the link's.
        planted = browser.get("/auth/callback?error=x&error_description=Call+0800-EVIL&state=forged")
        assert planted.status_code == 400 and "0800-EVIL" not in planted.text

        assert browser.post("/auth/logout").json() == {"signed_out": True}
        assert browser.get("/auth/me").status_code == 401

        # An admin ends a user's sessions (kb sessions revoke SUBJECT): refused from the next request.
        browser.get(_sign_in(site, browser, "alice"))
        assert browser.get("/auth/me").status_code == 200
        assert site.components.sessions.end_for("alice") == 1
        assert browser.get("/auth/me").json()["error"]["code"] == "session_expired"

    with site.components.db.connect() as conn:  # the database holds only the session id's hash
        from app.db.schema import web_sessions

        stored = [row[0] for row in conn.execute(select(web_sessions.c.id_sha256))]
    assert cookie.split(";")[0].split("=", 1)[1] not in stored


def test_a_code_spliced_into_another_login_is_refused(site: Site) -> None:
    """A used code under a fresh state (the attacker's own login): the provider refuses it (used once, and its
    PKCE challenge belongs to the other login), so no session is opened."""
    with httpx.Client(base_url=site.url) as victim, httpx.Client(base_url=site.url) as attacker:
        used = _sign_in(site, victim, "alice")
        assert victim.get(used).status_code == 303
        fresh = _sign_in(site, attacker, "carol")
        spliced = (
            fresh.split("?")[0]
            + "?"
            + "&".join(
                p
                if not p.startswith("code=")
                else next(q for q in used.split("?")[1].split("&") if q.startswith("code="))
                for p in fresh.split("?")[1].split("&")
            )
        )
        refused = attacker.get(spliced)
        assert refused.status_code == 400 and "refused the sign-in code" in refused.text
        assert "kb_session" not in attacker.cookies


def test_a_callback_planted_in_another_browser_does_not_sign_it_in(site: Site) -> None:
    """Login CSRF: the attacker's callback URL, opened by the victim's browser, has no matching kb_login cookie."""
    with httpx.Client(base_url=site.url) as attacker, httpx.Client(base_url=site.url) as victim:
        callback = _sign_in(site, attacker, "carol")
        planted = victim.get(callback)
        assert planted.status_code == 400 and "another browser" in planted.text
        assert "kb_session" not in victim.cookies


def test_a_user_whose_groups_give_nothing_gets_a_page_that_says_so(site: Site) -> None:
    with httpx.Client(base_url=site.url) as browser:
        page = browser.get(_sign_in(site, browser, "carol"))
    assert page.status_code == 403 and "No access to kb yet" in page.text and "contractors" in page.text
    assert "kb_session" not in browser.cookies


def test_the_key_only_setup_needs_no_identity_provider(handbook_components: Components) -> None:
    token = handbook_components.keys.create("k", "employee", ["handbook"]).token
    with (
        serve_app(create_app(handbook_components.settings, components=handbook_components)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        assert client.get("/auth/config").json()["sso"] is False
        assert client.get("/auth/login").status_code == 404
        jwt_like = client.get("/collections", headers={"Authorization": "Bearer aaa.bbb.ccc"})
        assert jwt_like.status_code == 401 and jwt_like.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/collections", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get("/collections").json()["error"]["code"] == "missing_api_key"


def _browser_sign_in(page: Any, site: Site, user: str) -> None:
    page.goto(site.url)
    page.locator("#sign-in").wait_for(state="visible")  # offered because the server has a provider
    page.click("#sign-in")
    form = page.locator("input[name=login]")  # the provider's own login form (none when still signed in there)
    form.or_(page.locator("#user-name")).first.wait_for(state="visible")
    if form.count():
        page.fill("input[name=login]", user)
        page.fill("input[name=password]", "any password")
        page.click("button[type=submit]")
        page.wait_for_url(site.url + "/")
    page.locator("#user-name").wait_for(state="visible")


FETCH_CHAT = """async ([question, collection]) => {
  const r = await fetch("/chat", {method: "POST", headers: {"Content-Type": "application/json"},
                                  body: JSON.stringify({question, collection})});
  return [r.status, await r.text()];
}"""


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=MISSING)
def test_sign_in_through_the_providers_form_in_a_real_browser(site: Site, tmp_path: Path) -> None:
    artifacts = Path(os.environ.get("KB_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "sso"
    artifacts.mkdir(parents=True, exist_ok=True)
    with chromium_page(tmp_path / "alice") as page:
        _browser_sign_in(page, site, "alice")
        assert page.inner_text("#user-name") == "Signed in as Alice Example"
        assert page.locator("#key-form").is_hidden() and page.locator("#sign-in").is_hidden()
        session = [c for c in page.context.cookies() if c["name"] == "kb_session"]
        assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
        assert "kb_session" not in page.evaluate("document.cookie")  # the page's script cannot read it
        page.wait_for_selector("#collection option[value=handbook]", state="attached")
        page.fill("#question", LEAVE_QUESTION)
        with page.expect_response(lambda r: r.url.endswith("/chat")) as response:
            page.press("#question", "Enter")
        assert "authorization" not in response.value.request.headers  # the cookie, not a key, authenticates
        page.locator(".turn .sources").wait_for()
        assert "27 days" in page.locator(".turn .answer-text").inner_text()
        assert "handbook.pdf" in page.locator(".turn .sources").inner_text()
        page.screenshot(path=str(artifacts / "alice-signed-in.png"))
        page.click("#sign-out")
        page.locator("#sign-in").wait_for(state="visible")
        assert not [c for c in page.context.cookies() if c["name"] == "kb_session"]

        _browser_sign_in(page, site, "alice")  # signed in again, then an admin revokes her sessions
        assert site.components.sessions.end_for("alice") >= 1  # this browser's, and any earlier test's
        page.fill("#question", LEAVE_QUESTION)
        page.press("#question", "Enter")
        page.locator(".answer--error").wait_for()
        assert "Your sign-in has ended" in page.locator(".answer--error").inner_text()
        page.locator("#sign-in").wait_for(state="visible")

    with chromium_page(tmp_path / "bob") as page:  # another employee, in another group
        _browser_sign_in(page, site, "bob")
        page.wait_for_selector("#collection option[value=engineering]", state="attached")
        assert page.locator("#collection option[value=handbook]").count() == 0
        page.fill("#question", LEAVE_QUESTION)
        page.press("#question", "Enter")
        page.locator(".turn .meta").first.wait_for()
        seen = page.locator("#conversation").inner_text()
        assert "27 days" not in seen and "handbook.pdf" not in seen, seen
        asked = page.evaluate(FETCH_CHAT, [LEAVE_QUESTION, "handbook"])  # bob's own session naming the handbook
        assert asked[0] == 403 and "collection_forbidden" in asked[1] and "27 days" not in asked[1]
        page.screenshot(path=str(artifacts / "bob-signed-in.png"))
