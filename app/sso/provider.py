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
        self.issuer = settings.issuer.strip().rstrip("/")
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._keys_fetched_at = 0.0
        self._lock = asyncio.Lock()

    # ---- the provider's documents ------------------------------------------------------------
    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self.settings.timeout_s) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise IdentityProviderError(
                f"the identity provider's {what} ({url}) cannot be read: {type(exc).__name__}: {exc}. "
                "Sign-in is unavailable until it answers; programs can still use kb API keys"
            ) from exc
        if not isinstance(body, dict):
            raise IdentityProviderError(f"the identity provider's {what} ({url}) is not a JSON object")
        return body

    async def metadata(self, *, fresh: bool = False) -> dict[str, Any]:
        """The discovery document, fetched once (``fresh``: again, so a login learns at once the provider is down)."""
        if self._metadata is None or fresh:
            found = await self._get_json(self.issuer + "/.well-known/openid-configuration", "discovery document")
            if str(found.get("issuer", "")).rstrip("/") != self.issuer:
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
        async with self._lock:
            due = time.monotonic() - self._keys_fetched_at >= self.settings.jwks_refresh_min_s
            if self._keys is None or (refresh and due):
                body = await self._get_json(await self._endpoint("jwks_uri"), "signing keys")
                try:
                    keys = KeySet.import_key_set(body)  # type: ignore[arg-type]
                except (JoseError, ValueError, TypeError, KeyError) as exc:
                    raise IdentityProviderError(f"the identity provider's signing keys cannot be read: {exc}") from exc
                if self._keys is not None:
                    log.info("identity provider keys fetched again: %s", [k.kid for k in keys.keys])
                self._keys, self._keys_fetched_at = keys, time.monotonic()
            return self._keys

    # ---- tokens ------------------------------------------------------------------------------
    async def verify(self, token: str, *, audience: str, nonce: str | None = None) -> dict[str, Any]:
        """The claims of a token the provider signed for ``audience``; else a ``TokenError`` saying what is wrong."""
        try:
            header = jws.extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError) as exc:
            raise TokenError("the bearer token is neither a kb API key nor a JWT from the identity provider") from exc
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenError(f"the token is signed with algorithm {alg!r}, which kb does not accept")
        keys = await self._keyset()
        kid = header.get("kid")
        if kid is not None and not _has_kid(keys, kid):
            keys = await self._keyset(refresh=True)
            if not _has_kid(keys, kid):
                raise TokenError("the token is signed by a key the identity provider does not publish")
        try:
            decoded = jwt.decode(token, keys, algorithms=[alg])
        except BadSignatureError as exc:
            raise TokenError("the token's signature does not verify with the identity provider's keys") from exc
        except JoseError as exc:
            raise TokenError(f"the token cannot be verified: {exc.description or type(exc).__name__}") from exc
        claims = decoded.claims
        self._check_claims(claims, audience)
        if nonce is not None and claims.get("nonce") != nonce:
            raise TokenError("the ID token's nonce is not the one this sign-in sent")
        return claims

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
                "the token has expired; get a new one from the identity provider", code="token_expired"
            ) from exc
        except (InvalidClaimError, MissingClaimError) as exc:
            name = getattr(exc, "claim", "") or ""
            expected = {"iss": f"issued by {self.issuer}", "aud": f"for audience {audience!r}"}.get(name, "")
            detail = f" (kb accepts tokens {expected})" if expected else ""
            raise TokenError(f"the token's {name or 'claims'} claim is not accepted{detail}") from exc
        except JoseError as exc:
            raise TokenError(f"the token is not accepted: {exc.description or type(exc).__name__}") from exc
        if str(claims.get("iss", "")).rstrip("/") != self.issuer:  # JWTClaimsRegistry compares exactly already
            raise TokenError(f"the token's iss claim is not accepted (kb accepts tokens issued by {self.issuer})")

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
        await self.metadata(fresh=True)  # a provider that is down: a page saying so, not a browser error there
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
            raise TokenError(f"the identity provider refused the sign-in code: {exc}", code="sign_in_refused") from exc
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


def _has_kid(keys: KeySet, kid: str) -> bool:
    try:
        keys.get_by_kid(kid)
    except (JoseError, ValueError, KeyError):
        return False
    return True
