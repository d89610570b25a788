"""OAuth 2 / OIDC bearer JWTs, verified against the issuer's JWKS (PyJWT).

:class:`JwksCache` fetches the issuer's key set (its ``jwks_uri`` from
``{issuer}/.well-known/openid-configuration``, or ``OIDC_JWKS_URL``), keeps it
for ``cache_s`` and fetches it again when a token names a key id it does not
know (the issuer rotated its keys), at most once per ``min_refresh_s``: a
stream of tokens with made-up key ids cannot make the service hammer the
issuer. :class:`JwtVerifier` checks signature, ``iss``, ``aud``, ``exp`` (with
``leeway_s``) and ``nbf``; the algorithm comes from the configured list and the
key, never from the token alone, so ``alg: none`` and HS256 signed with the
public key are refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from tributary.logs import redact
from tributary.web.identity import Identity, InvalidToken

log = logging.getLogger(__name__)

#: asymmetric algorithms accepted by default (never HS*: the JWKS is public)
DEFAULT_ALGORITHMS = ("RS256", "ES256")
#: how long a fetched key set is used before it is fetched again, in seconds
DEFAULT_CACHE_S = 3600.0
#: the least time between two fetches prompted by unknown key ids, in seconds
DEFAULT_MIN_REFRESH_S = 30.0
#: clock skew tolerated on exp/nbf/iat, in seconds
DEFAULT_LEEWAY_S = 30.0
#: bound on one fetch of the discovery document or the key set, in seconds
FETCH_TIMEOUT_S = 5.0
DISCOVERY_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    jwks_url: str | None = None
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS
    leeway_s: float = DEFAULT_LEEWAY_S
    cache_s: float = DEFAULT_CACHE_S
    min_refresh_s: float = DEFAULT_MIN_REFRESH_S


class JwksCache:
    """The issuer's signing keys by key id, fetched lazily and refreshed (rate-limited)."""

    def __init__(
        self,
        config: OidcConfig,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._transport = transport
        self._clock = clock
        self._keys: dict[str | None, PyJWK] = {}
        self._jwks_url = config.jwks_url
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        #: fetches made (tests read it to see the rate limit work)
        self.fetches = 0

    async def key(self, kid: str | None) -> PyJWK:
        if self._due(kid):
            async with self._lock:
                if self._due(kid):  # another request may have fetched meanwhile
                    await self._refresh()
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise InvalidToken("the token is signed with an unknown key")
        return key

    def _due(self, kid: str | None) -> bool:
        if self._fetched_at is None:
            return True
        age = self._clock() - self._fetched_at
        return age >= self._config.cache_s or (
            kid not in self._keys and age >= self._config.min_refresh_s
        )

    async def _refresh(self) -> None:
        self._fetched_at = self._clock()  # a failed fetch counts too: no retry storm
        self.fetches += 1
        try:
            async with httpx.AsyncClient(
                transport=self._transport, timeout=FETCH_TIMEOUT_S, follow_redirects=False
            ) as client:
                url = self._jwks_url or await self._discover(client)
                self._jwks_url = url
                document = await _get_json(client, url)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("fetching the OIDC key set failed: %s", redact(f"{exc}"))
            return
        self._keys = _signing_keys(document)
        log.info("OIDC key set fetched: %d signing keys", len(self._keys))

    async def _discover(self, client: httpx.AsyncClient) -> str:
        document = await _get_json(client, self._config.issuer.rstrip("/") + DISCOVERY_PATH)
        if document.get("issuer") != self._config.issuer:
            raise ValueError("the discovery document names another issuer")
        url = document.get("jwks_uri")
        if not isinstance(url, str):
            raise ValueError("the discovery document has no jwks_uri")
        return url


async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(url, headers={"Accept": "application/json"})
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return document


def _signing_keys(document: dict[str, Any]) -> dict[str | None, PyJWK]:
    keys: dict[str | None, PyJWK] = {}
    for jwk in document.get("keys", ()):
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        try:
            keys[jwk.get("kid")] = PyJWK(jwk)
        except jwt.PyJWTError as exc:  # a key type or curve we cannot use: skip it
            log.info("skipping JWKS key %r: %s", jwk.get("kid"), exc)
    return keys


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    """RFC 9068 ``scope`` (space-separated) or ``scp`` (a list, or a string)."""
    found: list[str] = []
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            found += value.split()
        elif isinstance(value, list):
            found += [v for v in value if isinstance(v, str)]
    return frozenset(found)


#: what a verification failure is reported as (fixed texts: nothing from the token)
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.InvalidAudienceError, "the token is for another audience"),
    (jwt.InvalidIssuerError, "the token is from another issuer"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not allowed"),
    (jwt.InvalidSignatureError, "the token's signature is invalid"),
)


def _reason(exc: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "the token is not a valid JWT"


class JwtVerifier:
    """Turns a bearer JWT into an :class:`Identity` (``sub``, scopes) or raises InvalidToken."""

    def __init__(self, config: OidcConfig, keys: JwksCache | None = None) -> None:
        self.config = config
        self.keys = keys or JwksCache(config)

    async def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the token is not a valid JWT") from None
        if header.get("alg") not in self.config.algorithms:
            raise InvalidToken("the token's algorithm is not allowed")
        kid = header.get("kid")
        key = await self.keys.key(kid if isinstance(kid, str) else None)
        if key.algorithm_name not in self.config.algorithms:
            raise InvalidToken("the token's algorithm is not allowed")
        try:
            claims = jwt.decode(
                token,
                key,
                # the key's algorithm (from the JWKS), never the token's choice
                algorithms=[key.algorithm_name],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_reason(exc)) from None
        return Identity(name=str(claims["sub"]), scopes=_scopes(claims), method="jwt")
