"""Inbound auth of every API: static tokens, scopes, 401/403/415 before the body, audit."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from tributary.config import ServiceSettings, load_settings
from tributary.errors import ConfigError
from tributary.http import HttpServer, create_app, metrics_app
from tributary.logs import JsonFormatter
from tributary.metrics import Metrics
from tributary.web.access import ApiAccess
from tributary.web.auth import requires
from tributary.web.identity import Authenticator
from tributary.web.tokens import parse_api_tokens, scope_granted
from tributary_testing.asgi import Exchange

OLD = "old-token-0123456789abcdef"
NEW = "new-token-0123456789abcdef"
READER = "reader-token-0123456789ab"
TOKENS = (
    f"ops-2026a:{OLD}:svc-test:*, ops-2026b:{NEW}:svc-test:read svc-test:write\n"
    f"grafana:{READER}:*:read"
)


class Note(BaseModel):
    text: str


def notes_router(seen: list[str]) -> APIRouter:
    router = APIRouter(prefix="/notes")

    @router.post("", status_code=201)
    async def add_note(note: Note) -> dict[str, str]:
        seen.append(note.text)
        return {"text": note.text}

    @router.get("/{note_id}")
    async def get_note(note_id: int) -> dict[str, int]:
        return {"id": note_id}

    @router.delete("/{note_id}", status_code=204)
    async def delete_note(note_id: int) -> None:
        seen.append(f"deleted {note_id}")

    @router.post("/search", dependencies=[requires("read")])
    async def search(note: Note) -> list[str]:
        return [t for t in seen if note.text in t]

    return router


def make_app(seen: list[str], tokens: str = TOKENS, **settings: Any) -> FastAPI:
    access = ApiAccess.from_settings(ServiceSettings(api_tokens=tokens, **settings))
    return create_app("svc-test", Metrics(), routers=[notes_router(seen)], access=access)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def seen() -> list[str]:
    return []


@pytest.fixture
async def client(seen: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(seen))
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        yield client


@pytest.fixture
def audit() -> Iterator[io.StringIO]:
    """The audit lines, as the JSON formatter writes them."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("svc-test"))
    logger = logging.getLogger("tributary.audit")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield buffer
    logger.removeHandler(handler)
    logger.setLevel(level)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


async def test_two_tokens_are_valid_at_once_for_rotation(client: httpx.AsyncClient) -> None:
    for token in (OLD, NEW):
        response = await client.post("/notes", json={"text": "hi"}, headers=bearer(token))
        assert response.status_code == 201


@pytest.mark.parametrize(
    "header",
    [f"bearer {NEW}", f"BEARER {NEW}", f"Bearer  {NEW}", f"Bearer {NEW} ", f" Bearer {NEW}"],
)
async def test_the_scheme_is_case_insensitive_and_spaces_are_as_rfc_7235_says(
    client: httpx.AsyncClient, header: str
) -> None:
    response = await client.get("/notes/1", headers={"Authorization": header})
    assert response.status_code == 200


async def test_no_credentials_is_a_401_with_a_bearer_challenge(
    client: httpx.AsyncClient, seen: list[str]
) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        response = await client.post("/notes", json={"text": "x"}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="svc-test"'
        assert response.json() == {"message": "a bearer token is required", "detail": []}
    assert seen == []


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong-token-0123456789abc",
        f"Bearer {NEW}x",
        f"Bearer {NEW[:-1]}",
        f"Bearer {NEW} {NEW}",
        f"Bearer {NEW.upper()}",
        "Bearer",
        "Bearer ",
    ],
)
async def test_a_wrong_token_never_matches(client: httpx.AsyncClient, header: str) -> None:
    response = await client.get("/notes/1", headers={"Authorization": header})
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="svc-test", error="invalid_token"')


async def test_a_valid_token_without_the_scope_is_a_403(
    client: httpx.AsyncClient, seen: list[str]
) -> None:
    assert (await client.get("/notes/1", headers=bearer(READER))).status_code == 200
    response = await client.post("/notes", json={"text": "x"}, headers=bearer(READER))
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        'Bearer realm="svc-test", error="insufficient_scope", scope="svc-test:write"'
    )
    assert response.json()["message"] == "the token lacks the scope svc-test:write"
    assert seen == []


async def test_a_route_may_declare_its_scope(client: httpx.AsyncClient) -> None:
    """POST /notes/search only reads: the reader may call it."""
    response = await client.post("/notes/search", json={"text": "x"}, headers=bearer(READER))
    assert response.status_code == 200


async def test_a_body_that_is_not_json_is_a_415(client: httpx.AsyncClient, seen: list[str]) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = bearer(NEW) | ({"Content-Type": content_type} if content_type else {})
        response = await client.post("/notes", content=b'{"text": "csrf"}', headers=headers)
        assert response.status_code == 415, content_type
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        headers = bearer(NEW) | {"Content-Type": content_type}
        response = await client.post("/notes", content=b'{"text": "ok"}', headers=headers)
        assert response.status_code == 201, content_type
    assert (await client.delete("/notes/1", headers=bearer(NEW))).status_code == 204
    assert seen == ["ok", "ok", "deleted 1"]


@pytest.mark.parametrize(
    "headers",
    [[], [(b"authorization", b"Bearer wrong-token-0123456789abc")]],
    ids=["no-token", "wrong-token"],
)
async def test_the_credential_is_checked_before_a_byte_of_the_body_is_read(
    seen: list[str], headers: list[tuple[bytes, bytes]]
) -> None:
    exchange = Exchange([b" " * 16 * 1024] * 64, [(b"transfer-encoding", b"chunked"), *headers])
    await make_app(seen)(exchange.scope, exchange.receive, exchange.send)  # type: ignore[arg-type]
    assert exchange.sent[0]["status"] == 401
    assert exchange.reads == 0


async def test_a_large_unauthenticated_body_over_real_http_is_a_401(seen: list[str]) -> None:
    server = HttpServer(make_app(seen), "127.0.0.1", 0)
    port = await server.start()
    try:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"http://127.0.0.1:{port}/notes",
                content=b'{"text": "' + b"x" * (100 * 1024 * 1024) + b'"}',
                headers={"Content-Type": "application/json", "Authorization": "bearer x"},
            )
    finally:
        await server.stop()
    assert response.status_code == 401
    assert seen == []


async def test_every_write_is_one_audit_line_without_the_credential(
    client: httpx.AsyncClient, audit: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.post("/notes", json={"text": "a"}, headers=bearer(NEW))
    await client.delete("/notes/7", headers=bearer(OLD))
    await client.delete("/notes/7", headers=bearer(READER))
    await client.delete("/notes/7", headers=bearer("wrong-token-0123456789abc"))
    await client.get("/notes/7", headers=bearer(NEW))  # reads are not audited
    entries = lines(audit)
    picked = [
        {k: e[k] for k in ("identity", "auth", "http_method", "route", "status", "outcome")}
        for e in entries
    ]
    assert picked == [
        {
            "identity": "ops-2026b",
            "auth": "token",
            "http_method": "POST",
            "route": "/notes",
            "status": 201,
            "outcome": "ok",
        },
        {
            "identity": "ops-2026a",
            "auth": "token",
            "http_method": "DELETE",
            "route": "/notes/{note_id}",
            "status": 204,
            "outcome": "ok",
        },
        {
            "identity": "grafana",
            "auth": "token",
            "http_method": "DELETE",
            "route": "/notes/{note_id}",
            "status": 403,
            "outcome": "denied",
        },
        {
            "identity": None,
            "auth": None,
            "http_method": "DELETE",
            "route": "/notes/{note_id}",
            "status": 401,
            "outcome": "denied",
        },
    ]
    assert all(e["logger"] == "tributary.audit" and e["audit"] is True for e in entries)
    for secret in (OLD, NEW, READER, "wrong-token"):
        assert secret not in audit.getvalue()
        assert secret not in caplog.text


async def test_probes_are_public_and_metrics_need_their_scope(seen: list[str]) -> None:
    tokens = TOKENS + f",prometheus:{'p' * 20}:svc-test:metrics"
    transport = httpx.ASGITransport(app=make_app(seen, tokens))
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=bearer(READER))).status_code == 403
        scrape = await client.get("/metrics", headers=bearer("p" * 20))
        assert scrape.status_code == 200
        assert (await client.get("/nowhere")).status_code == 401  # no route, still no peeking
        assert (await client.get("/nowhere", headers=bearer(READER))).status_code == 404


async def test_with_a_metrics_port_metrics_leave_the_api(seen: list[str]) -> None:
    app = make_app(seen, METRICS_PORT=0)
    assert "/metrics" not in app.openapi()["paths"]
    transport = httpx.ASGITransport(app=metrics_app(Metrics()))
    async with httpx.AsyncClient(transport=transport, base_url="http://metrics.test") as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/notes/1")).status_code == 404


@pytest.mark.parametrize(
    ("mode", "anonymous", "reader"), [("protected", 401, 200), ("public", 200, 200)]
)
async def test_docs_are_off_unless_enabled(
    seen: list[str], mode: str, anonymous: int, reader: int
) -> None:
    transport = httpx.ASGITransport(app=make_app(seen, HTTP_DOCS=mode))
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert (await client.get(path)).status_code == anonymous, path
            assert (await client.get(path, headers=bearer(READER))).status_code == reader, path


def test_the_openapi_schema_declares_the_scheme_and_every_operations_scope(
    seen: list[str],
) -> None:
    schema = make_app(seen).openapi()
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    security = {
        (path, method): op.get("security")
        for path, item in schema["paths"].items()
        for method, op in item.items()
    }
    assert security == {
        ("/healthz", "get"): None,
        ("/readyz", "get"): None,
        ("/metrics", "get"): [{"bearerAuth": ["svc-test:metrics"]}],
        ("/notes", "post"): [{"bearerAuth": ["svc-test:write"]}],
        ("/notes/{note_id}", "get"): [{"bearerAuth": ["svc-test:read"]}],
        ("/notes/{note_id}", "delete"): [{"bearerAuth": ["svc-test:write"]}],
        ("/notes/search", "post"): [{"bearerAuth": ["svc-test:read"]}],
    }
    post = schema["paths"]["/notes"]["post"]["responses"]
    assert {"401", "403", "415"} <= set(post)
    assert "415" not in schema["paths"]["/notes/{note_id}"]["get"]["responses"]


async def test_without_any_credentials_configured_the_api_is_open(seen: list[str]) -> None:
    assert not Authenticator().enabled
    app = create_app("svc-test", Metrics(), routers=[notes_router(seen)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        assert (await client.post("/notes", json={"text": "a"})).status_code == 201


# -- settings -------------------------------------------------------------------------


def test_api_tokens_are_parsed_with_names_and_scopes() -> None:
    entries = parse_api_tokens(TOKENS)
    assert [(e.name, sorted(e.scopes)) for e in entries] == [
        ("ops-2026a", ["svc-test:*"]),
        ("ops-2026b", ["svc-test:read", "svc-test:write"]),
        ("grafana", ["*:read"]),
    ]
    assert OLD not in repr(entries)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("ops:short:*", "entry 1 (ops): the token must be at least 16 characters"),
        (f"ops:{NEW}", "entry 1: expected name:token:scopes"),
        (f"ops:{NEW}:", "entry 1 (ops): no scopes"),
        (f"ops:{NEW}:admin", "entry 1 (ops): 'admin' is not a scope"),
        (f"ops:{NEW}:*,ci:{NEW}:*", "the same token appears in two entries"),
        (f"o p:{NEW}:*", "entry 1: name must be"),
    ],
)
def test_malformed_api_tokens_are_a_config_error_that_never_shows_the_token(
    monkeypatch: pytest.MonkeyPatch, value: str, error: str
) -> None:
    monkeypatch.setenv("API_TOKENS", value)
    with pytest.raises(ConfigError) as raised:
        load_settings(ServiceSettings)
    assert "API_TOKENS" in str(raised.value)
    assert error in str(raised.value)
    assert NEW not in str(raised.value)


def test_scopes_match_with_wildcards() -> None:
    assert scope_granted({"alert:*"}, "alert:write")
    assert scope_granted({"*:read"}, "snapshot:read")
    assert scope_granted({"*"}, "gmail_fetch:write")
    assert not scope_granted({"*:read"}, "alert:write")
    assert not scope_granted({"alert:read"}, "alerting:read")


def test_the_api_listens_on_loopback_by_default() -> None:
    assert ServiceSettings().http_host == "127.0.0.1"


def test_an_open_api_on_a_public_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_HOST", "0.0.0.0")
    with pytest.raises(ConfigError) as raised:
        load_settings(ServiceSettings)
    assert str(raised.value) == (
        "invalid configuration: HTTP_HOST=0.0.0.0 is not a loopback address and no API "
        "authentication is configured: set API_TOKENS or OIDC_ISSUER (or "
        "HTTP_ALLOW_INSECURE=true to serve an open API anyway, never in production)"
    )
    monkeypatch.setenv("HTTP_ALLOW_INSECURE", "true")
    assert load_settings(ServiceSettings).http_exposed_without_auth
    monkeypatch.delenv("HTTP_ALLOW_INSECURE")
    monkeypatch.setenv("API_TOKENS", f"ops:{NEW}:*")
    assert not load_settings(ServiceSettings).http_exposed_without_auth
    monkeypatch.setenv("HTTP_PORT", "0")  # no API at all: nothing exposed
    monkeypatch.delenv("API_TOKENS")
    load_settings(ServiceSettings)
    for host in ("localhost", "::1", "127.0.0.2"):
        monkeypatch.setenv("HTTP_HOST", host)
        monkeypatch.setenv("HTTP_PORT", "8000")
        load_settings(ServiceSettings)


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"OIDC_ISSUER": "https://issuer.test"}, "OIDC_AUDIENCE is required with OIDC_ISSUER"),
        ({"OIDC_ALGORITHMS": "RS256,HS256"}, "OIDC_ALGORITHMS: Value error, only asymmetric"),
        ({"OIDC_ALGORITHMS": "none"}, "refused: none"),
    ],
)
def test_oidc_settings_are_checked(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=error):
        load_settings(ServiceSettings)


@pytest.mark.parametrize("verb", ["check-config", "run"])
def test_the_cli_refuses_an_open_api_on_a_public_address_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    from tributary.cli import main
    from tributary_testing.sample_service import SERVICE

    monkeypatch.setenv("HTTP_HOST", "0.0.0.0")
    monkeypatch.delenv("API_TOKENS", raising=False)
    monkeypatch.delenv("OIDC_ISSUER", raising=False)
    assert main(SERVICE, [verb]) == 2
    assert "HTTP_HOST=0.0.0.0 is not a loopback address" in capsys.readouterr().err
