"""The HTTP API: servers and analytics, with bad input answered by a clear 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from snapshot.api import servers_router
from snapshot.credentials import SecretBox
from tributary.egress import EgressPolicy
from tributary.http import create_app
from tributary.metrics import Metrics
from tributary.web.access import ApiAccess

from .harness import MB, Harness

#: /openapi.json served (no credentials configured: every caller may read it)
DOCS_ON = ApiAccess(docs="protected")


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app("snapshot", Metrics(), routers=harness.parts.routers, access=DOCS_ON)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_register_list_deactivate(harness: Harness, client: httpx.AsyncClient) -> None:
    server = await harness.sim.add_server()
    body = {
        "apiUrl": server.api_url,
        "certSha256": server.certificate.sha256.lower(),
        "name": "eu-1",
    }
    created = await client.post("/servers", json=body)
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["name"] == "eu-1"
    assert view["cert_sha256"] == server.certificate.sha256
    assert view["endpoint"] == f"127.0.0.1:{server.port}"
    assert view["active"] is True
    assert (await client.post("/servers", json=body)).status_code == 409
    listed = (await client.get("/servers")).json()
    assert [s["id"] for s in listed] == [view["id"]]
    assert (await client.get("/servers/eu-1")).json()["id"] == view["id"]
    gone = await client.delete(f"/servers/{view['id']}")
    assert gone.status_code == 200
    assert gone.json()["active"] is False
    assert (await client.get("/servers")).json() == []
    assert len((await client.get("/servers?include_inactive=true")).json()) == 1
    assert (await harness.app.scheduler.tick()).published == []  # inactive: not collected
    back = await client.post(f"/servers/{view['id']}/activate")
    assert back.json()["active"] is True
    schema = (await client.get("/openapi.json")).json()
    body = schema["paths"]["/servers"]["post"]["requestBody"]["content"]["application/json"]
    assert {"apiUrl", "certSha256"} <= set(body["schema"]["properties"])


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 422, "JSON object"),
        (b'{"certSha256": "' + b"A" * 64 + b'"}', 422, "apiUrl"),
        (b'{"apiUrl": "http://1.2.3.4:1/abc", "certSha256": "' + b"A" * 64 + b'"}', 422, "https"),
        (b'{"apiUrl": "https://1.2.3.4:1/", "certSha256": "' + b"A" * 64 + b'"}', 422, "secret"),
        (b'{"apiUrl": "https://1.2.3.4:1/abcdef", "certSha256": "xyz"}', 422, "64 hex"),
        (b'{"apiUrl": "https://1.2.3.4:99999/a", "certSha256": "' + b"A" * 64 + b'"}', 422, "URL"),
    ],
)
async def test_bad_registrations_get_a_clear_4xx(
    client: httpx.AsyncClient, body: bytes, status: int, needle: str
) -> None:
    response = await client.post(
        "/servers", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    assert needle in response.json()["message"]


async def test_analytics_endpoints(harness: Harness, client: httpx.AsyncClient) -> None:
    server = await harness.sim.add_server()
    for _ in range(3):
        server.create_key()
    server.keys["2"].data_limit = 100 * MB
    server_id = harness.register(server)
    await harness.collect(server_id)
    harness.advance(3600)
    for key, nbytes in (("0", 5 * MB), ("1", 50 * MB), ("2", 20 * MB)):
        server.add_traffic(key, nbytes)
    await harness.collect(server_id)
    top = (await client.get("/analytics/top-consumers?period=24h&limit=2")).json()
    assert [(t["key_id"], t["bytes"]) for t in top] == [("1", 50 * MB), ("2", 20 * MB)]
    assert (await client.get("/analytics/top-consumers?period=30d")).json()[0]["key_id"] == "1"
    assert (await client.get("/analytics/top-consumers?period=2d")).status_code == 422
    assert (await client.get("/analytics/top-consumers?limit=0")).status_code == 422
    forecast = (await client.get(f"/analytics/forecast?server={server_id}&key=2")).json()
    assert forecast["limit_bytes"] == 100 * MB
    assert forecast["used_bytes"] == 20 * MB
    assert forecast["hours_to_limit"] == pytest.approx(4.0)  # 20 MB/h towards 100 MB
    no_limit = (await client.get(f"/analytics/forecast?server={server_id}&key=0")).json()
    assert no_limit["limit_bytes"] is None
    assert no_limit["state"] == "ok"
    assert (await client.get(f"/analytics/forecast?server={server_id}&key=9")).status_code == 404
    assert (await client.get("/analytics/forecast?server=x")).status_code == 422
    summary = (await client.get("/analytics/summary")).json()
    assert summary["snapshot_count"] == 6
    assert summary["servers_active"] == 1
    assert summary["servers"][0]["last_success_at"] is not None
    assert summary["servers_in_backoff"] == []
    assert (await client.get("/analytics/anomalies")).json() == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/analytics/forecast?server=s&key=%00", None),
        ("GET", "/servers/%00", None),
        ("DELETE", "/servers/a%00", None),
        ("GET", "/analytics/top-consumers?server=%00", None),
        ("POST", "/servers", {"apiUrl": "https://1.2.3.4:1/abcdef", "certSha256": "A" * 64,
                              "name": "eu\u0000"}),
    ],
)  # fmt: skip
async def test_nul_anywhere_in_a_request_is_a_422_not_a_500(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, str] | None
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == 422
    (item,) = response.json()["detail"]
    assert item["msg"] == "must not contain NUL characters"


async def test_errors_have_the_shape_the_schema_declares(client: httpx.AsyncClient) -> None:
    missing = await client.get("/servers/nope")
    assert missing.status_code == 404
    assert missing.json() == {"message": "no server 'nope'", "detail": []}
    bad = await client.post(
        "/servers", content=b"[1]", headers={"content-type": "application/json"}
    )
    assert set(bad.json()) == {"message", "detail"}
    schema = (await client.get("/openapi.json")).json()
    responses = schema["paths"]["/servers/{server}"]["get"]["responses"]
    assert responses["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert {"400", "409", "413", "422"} <= set(schema["paths"]["/servers"]["post"]["responses"])


async def test_a_registration_body_over_the_limit_is_a_413(client: httpx.AsyncClient) -> None:
    body = {"apiUrl": "https://1.2.3.4:1/abcdef", "certSha256": "A" * 64, "name": "x" * 2**21}
    response = await client.post("/servers", json=body)
    assert response.status_code == 413
    assert len(response.content) < 1000


@pytest.mark.parametrize(
    ("api_url", "needle"),
    [
        ("https://169.254.169.254:443/secret", "apiUrl refused (address): "),
        ("https://10.0.0.5:8080/secret", "private address"),
        ("https://[fd00:ec2::254]/secret", "private address"),
        ("https://2852039166/secret", "link-local address"),
        ("https://127.0.0.1:6379/secret", "loopback address"),
        ("https://[::ffff:127.0.0.1]/secret", "loopback (embedded in IPv6) address"),
        ("https://100.64.0.1/secret", "shared (CGNAT) address"),
        ("http://93.184.216.34/secret", "must start with https://"),
    ],
)
async def test_registrations_of_refused_addresses_are_a_422(
    harness: Harness, api_url: str, needle: str
) -> None:
    """The default policy (nothing allow-listed): an apiUrl is a user-given URL."""
    router = servers_router(
        harness.res.sessions,
        SecretBox(harness.settings.encryption_key),
        harness.now,
        EgressPolicy(),
    )
    transport = httpx.ASGITransport(app=create_app("snapshot", Metrics(), routers=[router]))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        body = {"apiUrl": api_url, "certSha256": "A" * 64}
        response = await http.post("/servers", json=body)
        assert response.status_code == 422, response.text
        assert needle in response.json()["message"]
        assert "secret" not in response.text
        assert (await http.get("/servers")).json() == []
