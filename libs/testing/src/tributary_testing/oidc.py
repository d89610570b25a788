"""A fake OIDC issuer: discovery document, JWKS, and the JWTs it signs.

It speaks the real wire format (OpenID Connect Discovery 1.0, RFC 7517 JWKS)
through an :class:`httpx.MockTransport`, which the service's JWKS cache is
given instead of the network. Keys can be rotated, and every fetch is counted.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://issuer.test/realms/tributary"
AUDIENCE = "tributary-api"
JWKS_PATH = "/realms/tributary/protocol/openid-connect/certs"


class FakeIssuer:
    """Signs RS256 JWTs with its current key and publishes its keys as a JWKS."""

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.requests: list[str] = []
        self.current = self.rotate()

    def rotate(self, keep_old: bool = True) -> str:
        """A new signing key (its kid); the old ones stay published unless told otherwise."""
        kid = f"key-{len(self.keys) + 1}"
        if not keep_old:
            self.keys.clear()
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.current = kid
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        base = httpx.URL(self.issuer)
        if request.url.path == base.path + "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": self.issuer,
                    "jwks_uri": str(base.copy_with(path=JWKS_PATH)),
                    "id_token_signing_alg_values_supported": ["RS256"],
                },
            )
        if request.url.path == JWKS_PATH:
            return httpx.Response(200, json=self.jwks())
        return httpx.Response(404, json={"error": "not found"})

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def token(
        self,
        *,
        sub: str = "ci-pipeline",
        scope: str = "",
        audience: str = AUDIENCE,
        issuer: str | None = None,
        expires_in: float = 300,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": issuer or self.issuer,
            "aud": audience,
            "sub": sub,
            "iat": now,
            "exp": now + int(expires_in),
            "scope": scope,
            **claims,
        }
        kid = kid or self.current
        return jwt.encode(payload, self.keys[kid], algorithm="RS256", headers={"kid": kid})
