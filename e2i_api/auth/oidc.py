"""OpenID Connect client for the UI login (Authlib): discovery, authorization code with PKCE,
and ID-token validation (signature against the IdP's JWKS; iss, aud, exp, nonce).

Works with any IdP that publishes ``<issuer>/.well-known/openid-configuration`` (Okta, Entra ID,
Keycloak, Google). Errors name the step that failed, never token or response content.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from e2i_api.core.config import OidcSettings

# Asymmetric signatures only: never "none", never a secret shared with the client.
ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                       "ES512", "EdDSA")
CLOCK_LEEWAY_SECONDS = 60


class OidcError(Exception):
    """A login step failed; the message names the step, safe to show."""


def new_login_secrets() -> dict[str, str]:
    """Fresh state, nonce and PKCE code verifier for one login."""
    return {"state": generate_token(32), "nonce": generate_token(32), "verifier": generate_token(64)}


class OidcClient:
    """One IdP: its discovered metadata and keys are fetched once and cached."""

    def __init__(self, settings: OidcSettings, timeout: float = 10.0) -> None:
        self.settings = settings
        self._secret = settings.secret("client_secret")
        self._timeout = timeout
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._lock = asyncio.Lock()

    def _oauth(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.settings.client_id, client_secret=self._secret,
            scope=self.settings.scopes, redirect_uri=self.settings.redirect_url,
            code_challenge_method="S256", timeout=self._timeout,
        )

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.get(url)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError):
            raise OidcError(f"the identity provider's {what} could not be read") from None
        if not isinstance(body, dict):
            raise OidcError(f"the identity provider's {what} is not a JSON object")
        return body

    async def metadata(self) -> dict[str, Any]:
        """The issuer's discovery document (its ``issuer`` must equal the configured one)."""
        async with self._lock:
            if self._metadata is None:
                issuer = self.settings.issuer.rstrip("/")
                meta = await self._get_json(f"{issuer}/.well-known/openid-configuration", "discovery")
                if str(meta.get("issuer", "")).rstrip("/") != issuer:
                    raise OidcError("the discovery document names another issuer")
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(meta.get(key), str):
                        raise OidcError(f"the discovery document lacks {key}")
                self._metadata = meta
            return self._metadata

    async def _key_set(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            jwks_uri = (await self.metadata())["jwks_uri"]
            try:
                self._keys = KeySet.import_key_set(await self._get_json(jwks_uri, "key set"))
            except (JoseError, ValueError, TypeError, KeyError):
                raise OidcError("the identity provider's key set is invalid") from None
        return self._keys

    async def authorization_url(self, secrets: dict[str, str]) -> str:
        """Where to send the browser: the IdP's login with state, nonce and the PKCE challenge."""
        endpoint = (await self.metadata())["authorization_endpoint"]
        async with self._oauth() as client:
            url, _ = client.create_authorization_url(
                endpoint, state=secrets["state"], nonce=secrets["nonce"], code_verifier=secrets["verifier"])
        return url

    async def exchange(self, code: str, secrets: dict[str, str]) -> dict[str, Any]:
        """Trade the authorization code for tokens; the validated ID-token claims."""
        endpoint = (await self.metadata())["token_endpoint"]
        try:
            async with self._oauth() as client:
                token = await client.fetch_token(endpoint, code=code, code_verifier=secrets["verifier"],
                                                 grant_type="authorization_code")
        except Exception:  # noqa: BLE001 - Authlib/httpx errors may carry the IdP's response
            raise OidcError("the identity provider refused the authorization code") from None
        id_token = token.get("id_token") if isinstance(token, dict) else None
        if not isinstance(id_token, str):
            raise OidcError("the token response has no id_token")
        return await self.validate_id_token(id_token, secrets["nonce"])

    async def validate_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The claims of ``id_token`` if signed by the IdP and valid for us and this login."""
        meta = await self.metadata()
        try:
            decoded = jwt.decode(id_token, await self._key_set(), algorithms=ID_TOKEN_ALGORITHMS)
        except JoseError:  # an unknown key id after a rotation: fetch the keys once more
            try:
                decoded = jwt.decode(id_token, await self._key_set(refresh=True),
                                     algorithms=ID_TOKEN_ALGORITHMS)
            except JoseError:
                raise OidcError("the ID token's signature is not valid") from None
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            leeway=CLOCK_LEEWAY_SECONDS,
            iss={"essential": True, "value": meta["issuer"]},
            aud={"essential": True, "value": self.settings.client_id},
            exp={"essential": True}, sub={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            claim = getattr(exc, "claim", "") or "a claim"
            raise OidcError(f"the ID token is not valid ({claim})") from None
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.settings.client_id:
            raise OidcError("the ID token is not valid (azp)")
        return claims
