"""A real OpenID provider process for the single sign-on tests: the certified ``oidc-provider`` (npm).

``tests/oidc/provider.mjs`` runs it with what the test configures here: the kb client and its
redirect URL, users with their groups, and the signing keys. The test generates those keys, so it
can also sign tokens the provider never issued (expired, another audience) with the provider's own
key, and rotate the key by restarting the provider with another. Real logins go through the
provider's own login form (``login``), as a browser's would.

``make test`` installs the package (``npm ci --prefix tests/oidc``); without node or the package the
tests skip and say so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.conftest import ROOT
from tests.servers import free_port, stop_process

PROVIDER_DIR = ROOT / "tests" / "oidc"
AUDIENCE = "api://kb"
CLIENT_ID, CLIENT_SECRET = "kb-web", "kb-test-secret"
USERS = {
    "alice": {"name": "Alice Example", "email": "alice@example.com", "groups": ["hr-team", "everyone"]},
    "bob": {"name": "Bob Builder", "email": "bob@example.com", "groups": ["eng", "everyone"]},
    "carol": {"name": "Carol Contractor", "email": "carol@example.com", "groups": ["contractors"]},
    "dana": {"name": "Dana Admin", "email": "dana@example.com", "groups": ["kb-admins"]},
}


def unavailable() -> str | None:
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (Debian package nodejs)"
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return "oidc-provider is not installed: npm ci --prefix tests/oidc (make test does it)"
    return None


def new_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, private=True, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


class OidcProvider:
    """The provider on 127.0.0.1:<port>; ``issuer`` is its URL."""

    def __init__(self, workdir: Path, redirect_uris: list[str], *, keys: list[RSAKey] | None = None):
        self.workdir = workdir
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.redirect_uris = redirect_uris
        self.keys = keys or [new_key("key-1")]
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> OidcProvider:
        config = {
            "port": self.port,
            "audience": AUDIENCE,
            "users": USERS,
            "keys": [k.as_dict(private=True) for k in self.keys],
            "clients": [
                {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": self.redirect_uris,
                    "grant_types": ["authorization_code"],
                    "response_types": ["code"],
                }
            ],
        }
        path = self.workdir / "oidc-provider.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        log = (self.workdir / "oidc-provider.log").open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            ["node", str(PROVIDER_DIR / "provider.mjs"), str(path)], cwd=PROVIDER_DIR, stdout=log, stderr=log, text=True
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.issuer + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"oidc-provider did not start: {(self.workdir / 'oidc-provider.log').read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)
            self.proc = None

    def restart(self, keys: list[RSAKey]) -> None:
        """The same issuer with other signing keys (a rotation); sessions and codes are forgotten."""
        self.stop()
        self.keys = keys
        self.start()

    def sign(self, claims: dict[str, Any], *, key: RSAKey | None = None, alg: str = "RS256", kid: bool = True) -> str:
        """A token with these claims over defaults (alice, for kb's audience, valid 10 minutes), signed by
        the provider's current key unless another is given."""
        key = key or self.keys[0]
        now = int(time.time())
        body = {"iss": self.issuer, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600,
                "name": USERS["alice"]["name"], "groups": USERS["alice"]["groups"], **claims}  # fmt: skip
        header = {"alg": alg, "typ": "at+jwt", **({"kid": key.kid} if kid else {})}
        return jwt.encode(header, body, key)

    def login_form(self, client: httpx.Client, url: str, user: str, stop_at: str) -> str:
        """Follow redirects from ``url`` through the provider's login form (as ``user``) until one leads to
        ``stop_at``; returns that URL (the callback, not yet requested)."""
        response = client.get(url)
        for _ in range(10):
            if response.status_code in (302, 303):
                location = str(response.url.join(response.headers["location"]))
                if location.startswith(stop_at):
                    return location
                response = client.get(location)
            elif response.status_code == 200 and 'name="login"' in response.text:
                action = re.search(r'action="([^"]+)"', response.text)
                assert action, response.text
                response = client.post(
                    response.url.join(action.group(1)), data={"prompt": "login", "login": user, "password": "any"}
                )
            else:
                raise AssertionError(
                    f"unexpected answer from the provider: {response.status_code} {response.text[:300]}"
                )
        raise AssertionError("the provider never redirected back")

    def tokens(self, user: str, scope: str = "openid profile email groups") -> dict[str, Any]:
        """A real token response for ``user``: the code flow with PKCE through the login form, code
        exchanged here (what a program's own OAuth client does to get kb an access token)."""
        verifier = generate_token(48)
        with OAuth2Client(
            CLIENT_ID, CLIENT_SECRET, scope=scope, redirect_uri=self.redirect_uris[0], code_challenge_method="S256"
        ) as oauth:
            url, _ = oauth.create_authorization_url(
                self.issuer + "/auth", code_verifier=verifier, nonce=generate_token()
            )
            with httpx.Client() as browser:
                callback = self.login_form(browser, url, user, stop_at=self.redirect_uris[0])
            token = oauth.fetch_token(self.issuer + "/token", authorization_response=callback, code_verifier=verifier)
        return dict(token)
