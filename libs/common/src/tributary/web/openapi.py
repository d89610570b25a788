"""The OpenAPI schema documents the one error body on every operation.

FastAPI documents its own 422 body (with ``input`` and ``ctx``, which are never
sent) and nothing else. :func:`document_errors` declares, per operation, the
errors the shared layer itself can answer (400/413/422 for a body, 422 for
parameters, 503 for an unreachable store) and gives every documented 4xx and
5xx the :class:`~tributary.web.errors.ErrorBody` schema. Codes a route answers
itself (404, 409...) are declared on the route with ``error_responses``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from tributary.web.auth import BEARER_SCHEME, OIDC_SCHEME, Policy
from tributary.web.errors import ErrorBody

#: the operations of the probes (/healthz, /readyz, /metrics) carry this tag
PROBE_TAG = "operations"
REF = "#/components/schemas/{model}"
#: FastAPI's own validation error schemas, replaced by ErrorBody
FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
BODY_ERRORS = {
    "400": "Bad Request: the body could not be read",
    "413": "Content Too Large: the body is larger than HTTP_MAX_BODY_BYTES",
    "422": "Unprocessable: a field is missing or invalid",
}
PARAMETER_ERRORS = {"422": "Unprocessable: a parameter is missing or invalid"}
STORE_ERRORS = {"503": "Service Unavailable: a database or Redis is unreachable"}
AUTH_ERRORS = {
    "401": "Unauthorized: no valid bearer token (see the WWW-Authenticate header)",
    "403": "Forbidden: the token lacks the scope this operation needs",
}
JSON_ONLY = {"415": "Unsupported Media Type: the body must be application/json"}


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=ErrorBody.__name__)}}}


def _document(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    added: dict[str, str] = {}
    if "requestBody" in operation:
        added |= BODY_ERRORS
    if operation.get("parameters"):
        added |= PARAMETER_ERRORS
    if PROBE_TAG not in operation.get("tags", ()):
        added |= STORE_ERRORS
    for code, description in added.items():
        responses.setdefault(code, {"description": description})
    for code, response in responses.items():
        if code[0] in "45":  # 404, 4XX...
            response["content"] = _error_content()
            if "description" not in response:
                response["description"] = HTTPStatus(int(code)).phrase if code.isdigit() else code


def _add_error_schemas(schema: dict[str, Any]) -> None:
    schemas: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in FASTAPI_SCHEMAS:
        schemas.pop(name, None)
    body = ErrorBody.model_json_schema(ref_template=REF)
    schemas.update(body.pop("$defs", {}))
    schemas[ErrorBody.__name__] = body


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with the one error body on every operation (changed in place)."""
    for item in schema.get("paths", {}).values():
        for method in METHODS:
            if method in item:
                _document(item[method])
    _add_error_schemas(schema)
    return schema


def _security_schemes(oidc_discovery_url: str | None) -> dict[str, Any]:
    schemes: dict[str, Any] = {
        BEARER_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "A static API token (API_TOKENS) or an OIDC access token (a JWT "
            "from OIDC_ISSUER). The scopes listed per operation are the ones it needs.",
        }
    }
    if oidc_discovery_url is not None:
        schemes[OIDC_SCHEME] = {"type": "openIdConnect", "openIdConnectUrl": oidc_discovery_url}
    return schemes


def document_security(
    schema: dict[str, Any],
    routes: Sequence[BaseRoute],
    policy: Policy,
    oidc_discovery_url: str | None = None,
) -> dict[str, Any]:
    """Every operation's security requirement (its scope), as the Guard enforces it."""
    schemes = _security_schemes(oidc_discovery_url)
    schema.setdefault("components", {})["securitySchemes"] = schemes
    paths = schema.get("paths", {})
    for route in iter_route_contexts(routes):
        if not isinstance(route.original_route, APIRoute) or route.path_format not in paths:
            continue
        for method in route.methods or ():
            operation = paths[route.path_format].get(method.lower())
            if operation is None:
                continue
            rule = policy.rule(route, method)
            if rule.public or rule.scope is None:
                operation.pop("security", None)
                continue
            operation["security"] = [{name: [rule.scope]} for name in schemes]
            responses = operation.setdefault("responses", {})
            added = AUTH_ERRORS | (JSON_ONLY if "requestBody" in operation else {})
            for code, description in added.items():
                responses.setdefault(code, {"description": description})
    return schema


def install_openapi(app: FastAPI, *steps: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Make ``app.openapi()`` (and /openapi.json) document the errors (after ``steps``)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for step in steps:
                schema = step(schema)
            app.openapi_schema = document_errors(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
