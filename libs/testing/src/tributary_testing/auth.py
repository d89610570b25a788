"""One API token for the tests: its API_TOKENS entry, its header, an app that accepts it.

The token holds every scope (``*``): tests that check a scope is refused make
their own tokens. Process and integration tests put :data:`API_TOKENS` in the
service's environment and send :data:`AUTH` with every request.
"""

from __future__ import annotations

from collections.abc import Sequence

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
