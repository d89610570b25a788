"""One API token for the tests: its API_TOKENS entry, its header, an app that accepts it.

The token holds every scope (``*``): tests that check a scope is refused make
their own tokens. Process and integration tests put :data:`API_TOKENS` in the
service's environment and send :data:`AUTH` with every request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import httpx
from fastapi import APIRouter, FastAPI

from tributary.http import ReadinessCheck, create_app
from tributary.metrics import Metrics
from tributary.web.access import ApiAccess
from tributary.web.identity import Authenticator
from tributary.web.tokens import parse_api_tokens

TOKEN = "tributary-tests-token-0123456789"  # noqa: S105 - a test token, nothing real
#: the API_TOKENS value holding TOKEN, under the name "tests"
API_TOKENS = f"tests:{TOKEN}:*"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def secured_app(
    service: str,
    metrics: Metrics,
    routers: Sequence[APIRouter],
    checks: Sequence[ReadinessCheck] = (),
) -> FastAPI:
    """``create_app`` with authentication on: only :data:`AUTH` gets in."""
    access = ApiAccess(authenticator=Authenticator(parse_api_tokens(API_TOKENS)))
    return create_app(service, metrics, checks, routers, access=access)


#: the only operations that need no credentials
PUBLIC_OPERATIONS = {("/healthz", "get"), ("/readyz", "get")}


async def check_every_operation_needs_a_token(app: FastAPI) -> int:
    """Walk ``app``'s OpenAPI: every operation but the probes declares a security
    requirement (a scope), and answers 401 to a request without credentials, before
    its parameters or body are even looked at. Returns the operations checked."""
    schema = app.openapi()
    assert "bearerAuth" in schema["components"]["securitySchemes"]
    transport = httpx.ASGITransport(app=app)
    checked = 0
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        for path, item in schema["paths"].items():
            for method, operation in item.items():
                if (path, method) in PUBLIC_OPERATIONS:
                    continue
                security = operation.get("security")
                assert security, f"{method.upper()} {path} has no security requirement"
                assert all(scopes for req in security for scopes in req.values()), path
                url = re.sub(r"\{[^}]+\}", "1", path)
                response = await client.request(method.upper(), url, json={})
                assert response.status_code == 401, f"{method.upper()} {path}: {response}"
                assert response.headers["www-authenticate"].startswith("Bearer ")
                checked += 1
    return checked
