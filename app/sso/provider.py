"""The OpenID provider as kb sees it: discovery, signing keys, token checks, the code flow with PKCE.

Tokens are verified with joserfc (Authlib's JOSE library) against the keys the provider publishes at
its ``jwks_uri``; the web login's authorization URL and code exchange are Authlib's OAuth 2 client.
Nothing here parses or signs a JWT by hand.

What a token must be to be accepted: an asymmetric signature (RS/PS/ES/EdDSA: never ``none``, never an
HMAC whose secret a client could hold) by a key the provider publishes, this provider as ``iss``, kb's
audience in ``aud``, and ``exp`` in the future (``nbf``/``iat`` not in it) within ``clock_skew_s``.
A token signed by a key kb has not seen makes it fetch the keys again, at most every
``jwks_refresh_min_s`` (a provider rotates keys; a stream of forged kids must not turn into a stream
of fetches). Keys already fetched keep working while the provider is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError
from joserfc.jwk import KeySet

from app.errors import IdentityProviderError, TokenError
from app.settings import OidcSettings

log = logging.getLogger(__name__)

# Asymmetric algorithms only: "none" and HS* (the shared-secret kind) are refused whatever the header says.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class OidcClient:
    """One per process: the provider's metadata and keys are fetched on first use and cached."""

    def __init__(self, settings: OidcSettings):
        self.settings = settings
        self.issuer = settings.issuer.strip()  # compared exactly: some issuers end in "/" (Auth0, Entra ID v1)
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._keys_tried_at = -1e9  # the last fetch of the keys, successful or not
        self._keys_failed = False
        self._lock = asyncio.Lock()

    # ---- the provider's documents ------------------------------------------------------------
    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self.settings.timeout_s) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("identity provider's %s (%s) cannot be read: %s: %s", what, url, type(exc).__name__, exc)
            raise IdentityProviderError(UNAVAILABLE) from exc
        if not isinstance(body, dict):
            log.warning("identity provider's %s (%s) is not a JSON object", what, url)
            raise IdentityProviderError(UNAVAILABLE)
        return body

    async def metadata(self, *, fresh: bool = False) -> dict[str, Any]:
        """The discovery document, fetched once (``fresh``: again, so a login learns at once the provider is down)."""
        if self._metadata is None or fresh:
            found = await self._get_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery")
            if found.get("issuer") != self.issuer:
                raise IdentityProviderError(
                    f"the discovery document names issuer {found.get('issuer')!r}, not {self.issuer!r}: "
                    "set KB_OIDC__ISSUER exactly as the provider spells it"
                )
            self._metadata = found
        return self._metadata

    async def _endpoint(self, name: str) -> str:
        url = (await self.metadata()).get(name)
        if not isinstance(url, str) or not url:
            raise IdentityProviderError(f"the identity provider's discovery document has no {name}")
        return url

    async def _keyset(self, *, refresh: bool = False) -> KeySet:
        """The provider's keys: fetched once, again on ``refresh`` at most every ``jwks_refresh_min_s`` (counted
        from the last attempt, failed or not, so forged key ids cannot turn into a stream of fetches). While
        the provider is down the keys already fetched keep serving; with none yet, a failed fetch is retried
        at most every few seconds and each token meanwhile gets a 503."""
        async with self._lock:
            since = time.monotonic() - self._keys_tried_at
            wait = self.settings.jwks_refresh_min_s if self._keys is not None else RETRY_COLD_S
            if (self._keys is None or refresh) and since >= wait:
                self._keys_tried_at = time.monotonic()
                try:
                    body = await self._get_json(await self._endpoint("jwks_uri"), "signing keys")
                    keys = KeySet.import_key_set(body)  # type: ignore[arg-type]
                except (JoseError, ValueError, TypeError, KeyError) as exc:
                    log.warning("identity provider's signing keys cannot be read: %s", exc)
                    self._keys_failed = True
                    if self._keys is None:
                        raise IdentityProviderError(UNAVAILABLE) from exc
                    return self._keys
                except IdentityProviderError:
                    self._keys_failed = True
                    if self._keys is None:
                        raise
                    return self._keys
                if self._keys is not None:
                    log.info("identity provider keys fetched again: %s", [k.kid for k in keys.keys])
                self._keys, self._keys_failed = keys, False
            if self._keys is None:
                raise IdentityProviderError(UNAVAILABLE)
            return self._keys

    # ---- tokens ------------------------------------------------------------------------------
    async def verify(self, token: str, *, audience: str, nonce: str | None = None) -> dict[str, Any]:
        """The claims of a token the provider signed for ``audience``; else a ``TokenError`` saying what is wrong."""
        not_a_jwt = TokenError("the bearer token is neither a kb API key nor a JWT from the identity provider")
        try:
            header = jws.extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, TypeError, AttributeError, UnicodeError) as exc:
            raise not_a_jwt from exc
        if not isinstance(header, dict):
            raise not_a_jwt
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenError(f"the token is signed with algorithm {alg!r}, which kb does not accept")
        keys = await self._keyset()
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise not_a_jwt
        if kid is not None and not _has_kid(keys, kid):
            keys = await self._keyset(refresh=True)
            if not _has_kid(keys, kid):
                raise TokenError("the token is signed by a key the identity provider does not publish")
        candidates: list[Any] = [keys] if kid is not None else [k for k in keys.keys if k.key_type == _KTY.get(alg[:2])]
        decoded = None
        for key in candidates:  # no kid: the provider's keys of the algorithm's type, in turn
            try:
                decoded = jwt.decode(token, key, algorithms=[alg])
                break
            except BadSignatureError:
                continue
            except (JoseError, ValueError, TypeError) as exc:
                raise TokenError(f"the token cannot be verified: {_describe(exc)}") from exc
        if decoded is None:
            raise TokenError("the token's signature does not verify with the identity provider's keys")
        claims = decoded.claims
        if not isinstance(claims, dict):
            raise not_a_jwt
        self._check_claims(claims, audience)
        if nonce is not None and claims.get("nonce") != nonce:
            raise TokenError("the ID token's nonce is not the one this sign-in sent")
        if nonce is not None and claims.get("azp", audience) != audience:
            raise TokenError("the ID token was issued to another client (azp)")
        return claims

    def check_access_token(self, token: str, claims: Mapping[str, Any]) -> None:
        """An ID token is not a credential for an API (RFC 9068; OpenID Connect Core 3.1.3.7): refuse one even
        when its audience is ours (kb's audience defaults to its client id, which is an ID token's aud)."""
        header = jws.extract_compact(token.encode("ascii")).protected
        typ = str(header.get("typ") or "").lower()
        if typ not in ("", "jwt", "at+jwt", "application/at+jwt") or "nonce" in claims or claims.get("typ") == "ID":
            raise TokenError("this is an ID token; send an access token issued for kb")

    def _check_claims(self, claims: Mapping[str, Any], audience: str) -> None:
        registry = jwt.JWTClaimsRegistry(
            leeway=int(self.settings.clock_skew_s),
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(dict(claims))
        except ExpiredTokenError as exc:
            raise TokenError(
                "the token has expired; get a new one from the identity provider", code=TokenError.TOKEN_EXPIRED
            ) from exc
        except (InvalidClaimError, MissingClaimError) as exc:
            name = getattr(exc, "claim", "") or ""
            expected = {"iss": f"issued by {self.issuer}", "aud": f"for audience {audience!r}"}.get(name, "")
            detail = f" (kb accepts tokens {expected})" if expected else ""
            raise TokenError(f"the token's {name or 'claims'} claim is not accepted{detail}") from exc
        except (JoseError, ValueError, TypeError) as exc:
            raise TokenError(f"the token is not accepted: {_describe(exc)}") from exc

    # ---- the web login -----------------------------------------------------------------------
    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        s = self.settings
        return AsyncOAuth2Client(
            client_id=s.client_id,
            client_secret=s.client_secret or None,
            scope=s.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if s.client_secret else "none",
            timeout=s.timeout_s,
        )

    async def authorization_url(self, *, redirect_uri: str, state: str, code_verifier: str, nonce: str) -> str:
        endpoint = await self._endpoint("authorization_endpoint")
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(endpoint, state=state, code_verifier=code_verifier, nonce=nonce)
        return str(url)

    async def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str) -> dict[str, Any]:
        """The token response for an authorization code (its ``id_token`` still to be verified)."""
        endpoint = await self._endpoint("token_endpoint")
        try:
            async with self._client(redirect_uri) as client:
                token = await client.fetch_token(endpoint, code=code, code_verifier=code_verifier)
        except httpx.HTTPError as exc:
            raise IdentityProviderError(f"the identity provider's token endpoint cannot be reached: {exc}") from exc
        except Exception as exc:  # Authlib's OAuthError: the provider refused the code
            raise TokenError(
                f"the identity provider refused the sign-in code: {exc}", code=TokenError.SIGN_IN_REFUSED
            ) from exc
        return dict(token)

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """The userinfo claims (for groups a provider leaves out of its ID tokens); empty when it has none."""
        endpoint = (await self.metadata()).get("userinfo_endpoint")
        if not endpoint:
            return {}
        try:
            async with httpx.AsyncClient(timeout=self.settings.timeout_s) as client:
                response = await client.get(endpoint, headers={"Authorization": f"Bearer {access_token}"})
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("userinfo not read (%s: %s): groups come from the ID token only", type(exc).__name__, exc)
            return {}
        return body if isinstance(body, dict) else {}


UNAVAILABLE = "the identity provider cannot be reached; sign-in waits for it (programs can use kb API keys)"
RETRY_COLD_S = 5.0  # with no keys fetched yet, a failed fetch is retried at most this often
_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def _describe(exc: Exception) -> str:
    return str(getattr(exc, "description", "") or type(exc).__name__)


def _has_kid(keys: KeySet, kid: str) -> bool:
    try:
        keys.get_by_kid(kid)
    except (JoseError, ValueError, KeyError):
        return False
    return True
