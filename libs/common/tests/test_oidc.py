"""OIDC bearer JWTs against a fake issuer's discovery document and JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, FastAPI

from tributary.config import ServiceSettings
from tributary.http import create_app
from tributary.metrics import Metrics
from tributary.web.access import ApiAccess
from tributary.web.identity import InvalidToken
from tributary.web.oidc import JwksCache, JwtVerifier, OidcConfig
from tributary_testing.oidc import AUDIENCE, ISSUER, FakeIssuer

WRITE = "svc-test:read svc-test:write"


def router() -> APIRouter:
    api = APIRouter()

    @api.get("/things")
    async def things() -> list[str]:
        return ["a"]

    @api.post("/things", status_code=201)
    async def add() -> dict[str, bool]:
        return {"added": True}

    return api


def make_app(issuer: FakeIssuer, **overrides: Any) -> FastAPI:
    settings = ServiceSettings(oidc_issuer=ISSUER, oidc_audience=AUDIENCE, **overrides)
    access = ApiAccess.from_settings(settings, transport=issuer.transport)
    return create_app("svc-test", Metrics(), routers=[router()], access=access)


@pytest.fixture
def issuer() -> FakeIssuer:
    return FakeIssuer()


@pytest.fixture
async def client(issuer: FakeIssuer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(issuer))
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand: unsigned (key None) or HMAC-SHA256 with ``key``."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.digest(key, signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64(signature)}"


def claims(scope: str = WRITE) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300, "scope": scope}


async def test_a_valid_token_is_accepted_with_its_scopes(
    client: httpx.AsyncClient, issuer: FakeIssuer
) -> None:
    token = issuer.token(scope=WRITE)
    assert (await client.get("/things", headers=bearer(token))).status_code == 200
    assert (await client.post("/things", headers=bearer(token))).status_code == 201
    # the keys were found through the discovery document, fetched once
    assert issuer.requests == [
        "/realms/tributary/.well-known/openid-configuration",
        "/realms/tributary/protocol/openid-connect/certs",
    ]


async def test_scopes_come_from_scope_or_scp(client: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    reader = issuer.token(scope="svc-test:read")
    assert (await client.get("/things", headers=bearer(reader))).status_code == 200
    refused = await client.post("/things", headers=bearer(reader))
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    listed = issuer.token(scp=["svc-test:write"])
    assert (await client.post("/things", headers=bearer(listed))).status_code == 201


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"audience": "another-api"}, "the token is for another audience"),
        ({"issuer": "https://evil.test/"}, "the token is from another issuer"),
        ({"expires_in": -31}, "the token has expired"),  # leeway 30 s
    ],
    ids=["wrong-audience", "wrong-issuer", "expired-beyond-leeway"],
)
async def test_invalid_tokens_are_a_401_invalid_token(
    client: httpx.AsyncClient, issuer: FakeIssuer, kwargs: dict[str, Any], reason: str
) -> None:
    response = await client.get("/things", headers=bearer(issuer.token(scope=WRITE, **kwargs)))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="svc-test", error="invalid_token", error_description="{reason}"'
    )
    assert response.json()["message"] == reason


async def test_an_expired_token_within_the_leeway_is_accepted(
    client: httpx.AsyncClient, issuer: FakeIssuer
) -> None:
    token = issuer.token(scope=WRITE, expires_in=-10)
    assert (await client.get("/things", headers=bearer(token))).status_code == 200


async def test_alg_none_is_refused(client: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    token = forged({"alg": "none", "typ": "JWT", "kid": issuer.current}, claims(), None)
    response = await client.get("/things", headers=bearer(token))
    assert response.status_code == 401
    assert "algorithm is not allowed" in response.headers["www-authenticate"]


async def test_hs256_signed_with_the_public_key_is_refused(
    client: httpx.AsyncClient, issuer: FakeIssuer
) -> None:
    public = issuer.keys[issuer.current].public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_n = issuer.jwks()["keys"][0]["n"].encode()
    for secret in (pem, jwk_n):
        token = forged({"alg": "HS256", "typ": "JWT", "kid": issuer.current}, claims(), secret)
        response = await client.get("/things", headers=bearer(token))
        assert response.status_code == 401


async def test_a_tampered_token_is_refused(client: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    header, _, signature = issuer.token(scope="svc-test:read").split(".")
    payload = b64(json.dumps(claims(scope="svc-test:write")).encode())
    response = await client.post("/things", headers=bearer(f"{header}.{payload}.{signature}"))
    assert response.status_code == 401
    assert "signature is invalid" in response.headers["www-authenticate"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_unknown_key_id_fetches_the_keys_again_at_most_once_per_interval(
    issuer: FakeIssuer,
) -> None:
    config = OidcConfig(issuer=ISSUER, audience=AUDIENCE, min_refresh_s=30)
    clock = Clock()
    keys = JwksCache(config, issuer.transport, clock=clock)
    verifier = JwtVerifier(config, keys)
    assert (await verifier.verify(issuer.token(scope=WRITE))).name == "ci-pipeline"
    assert keys.fetches == 1

    issuer.rotate(keep_old=False)  # the issuer moves to a new key
    rotated = issuer.token(sub="after-rotation", scope=WRITE)
    clock.now += 5  # too soon after the last fetch: no new one, the key is unknown
    for _ in range(3):
        with pytest.raises(InvalidToken, match="unknown key"):
            await verifier.verify(rotated)
    assert keys.fetches == 1

    clock.now += 30  # the interval has passed: one fetch finds the new key
    assert (await verifier.verify(rotated)).name == "after-rotation"
    assert (await verifier.verify(rotated)).name == "after-rotation"
    assert keys.fetches == 2


async def test_the_rotated_key_is_picked_up_by_the_app(issuer: FakeIssuer) -> None:
    app = make_app(issuer, OIDC_JWKS_MIN_REFRESH_SECONDS=0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        first = issuer.token(scope=WRITE)
        assert (await client.get("/things", headers=bearer(first))).status_code == 200
        issuer.rotate()
        fresh = issuer.token(scope=WRITE)
        assert (await client.post("/things", headers=bearer(fresh))).status_code == 201


async def test_an_unreachable_issuer_is_a_401_not_a_500(issuer: FakeIssuer) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    settings = ServiceSettings(oidc_issuer=ISSUER, oidc_audience=AUDIENCE)
    access = ApiAccess.from_settings(settings, transport=httpx.MockTransport(down))
    app = create_app("svc-test", Metrics(), routers=[router()], access=access)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        response = await client.get("/things", headers=bearer(issuer.token(scope=WRITE)))
    assert response.status_code == 401


async def test_static_tokens_and_jwts_work_side_by_side(issuer: FakeIssuer) -> None:
    static = "static-token-0123456789"
    app = make_app(issuer, API_TOKENS=f"ops:{static}:svc-test:read")
    assert app.openapi()["components"]["securitySchemes"]["oidc"] == {
        "type": "openIdConnect",
        "openIdConnectUrl": f"{ISSUER}/.well-known/openid-configuration",
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        assert (await client.get("/things", headers=bearer(static))).status_code == 200
        token = issuer.token(scope=WRITE)
        assert (await client.post("/things", headers=bearer(token))).status_code == 201
