"""The OpenAPI schema documents the one error body on every operation.

FastAPI documents its own 422 body (with ``input`` and ``ctx``, which are never
sent) and nothing else. :func:`document_errors` declares, per operation, the
errors the shared layer itself can answer (400/413/422 for a body, 422 for
parameters, 503 for an unreachable store) and gives every documented 4xx and
5xx the :class:`~tributary.web.errors.ErrorBody` schema. Codes a route answers
itself (404, 409...) are declared on the route with ``error_responses``.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

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


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and /openapi.json) document the errors."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
