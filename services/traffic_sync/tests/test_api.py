"""HTTP: GET /nodes/{id}/traffic and PUT /nodes/{id}/limit, bad input gets a clear 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import Engine

from traffic_sync.api import make_router
from traffic_sync.counters import TrafficKeys, record_traffic
from tributary.db import make_sessionmaker
from tributary.http import create_app
from tributary.metrics import Metrics

from .conftest import FlusherFactory


@pytest.fixture
async def client(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    router = make_router(make_sessionmaker(mysql_engine), redis_client, tkeys)
    app = create_app("traffic_sync", Metrics(), [], [router])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_node_traffic_shows_flushed_and_unflushed_bytes(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, tkeys: TrafficKeys,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    assert (await client.get("/nodes/5/traffic")).status_code == 404
    await record_traffic(redis_client, 5, 100, 50, keys=tkeys)
    body = (await client.get("/nodes/5/traffic")).json()
    assert (body["traffic_used_bytes"], body["unflushed_upload_bytes"]) == (0, 100)
    await make_flusher().flush()
    await record_traffic(redis_client, 5, 1, 0, keys=tkeys)
    body = (await client.get("/nodes/5/traffic")).json()
    assert body["upload_bytes"] == 100
    assert body["download_bytes"] == 50
    assert body["traffic_used_bytes"] == 150
    assert body["traffic_limit_bytes"] is None
    assert body["updated_at"].endswith(("Z", "+00:00"))
    assert (body["unflushed_upload_bytes"], body["unflushed_download_bytes"]) == (1, 0)


async def test_put_limit_sets_and_clears_a_nodes_limit(client: httpx.AsyncClient) -> None:
    response = await client.put("/nodes/9/limit", json={"limit_bytes": 10**12})
    assert response.status_code == 200
    assert response.json()["traffic_limit_bytes"] == 10**12
    assert response.json()["traffic_used_bytes"] == 0
    assert (await client.get("/nodes/9/traffic")).json()["traffic_limit_bytes"] == 10**12
    response = await client.put("/nodes/9/limit", json={"limit_bytes": None})
    assert response.json()["traffic_limit_bytes"] is None


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/nodes/9/limit", {"limit_bytes": -1}, "limit_bytes"),
        ("/nodes/9/limit", {"limit_bytes": "lots"}, "limit_bytes"),
        ("/nodes/9/limit", {"limit_bytes": 2**63}, "limit_bytes"),
        ("/nodes/9/limit", {"limit": 5}, "limit"),
        ("/nodes/9/limit", {}, "limit_bytes"),
        ("/nodes/abc/limit", {"limit_bytes": 1}, "node_id"),
        ("/nodes/-1/limit", {"limit_bytes": 1}, "node_id"),
        ("/nodes/99999999999999999999/limit", {"limit_bytes": 1}, "node_id"),
    ],
)
async def test_bad_limit_requests_get_422_naming_the_problem(
    client: httpx.AsyncClient, path: str, body: dict[str, object], needle: str
) -> None:
    response = await client.put(path, json=body)
    assert response.status_code == 422
    assert needle in response.json()["message"]


async def test_malformed_json_and_bad_ids_are_4xx_not_500(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/nodes/1/limit", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "invalid JSON" in response.json()["message"]
    assert (await client.get("/nodes/x/traffic")).status_code == 422


async def test_unreadable_unflushed_counters_show_as_null(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, tkeys: TrafficKeys
) -> None:
    await redis_client.hset(tkeys.node(4), mapping={"upload": "junk", "download": "3"})
    body = (await client.get("/nodes/4/traffic")).json()
    assert (body["unflushed_upload_bytes"], body["unflushed_download_bytes"]) == (None, 3)


async def test_a_node_key_of_the_wrong_type_is_not_a_500(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, tkeys: TrafficKeys
) -> None:
    await redis_client.set(tkeys.node(6), "12")
    await client.put("/nodes/6/limit", json={"limit_bytes": 5})
    response = await client.get("/nodes/6/traffic")
    assert response.status_code == 200
    assert response.json()["unflushed_upload_bytes"] is None


async def test_a_body_over_the_limit_is_a_413_and_nothing_is_echoed(
    client: httpx.AsyncClient,
) -> None:
    huge = await client.put("/nodes/1/limit", json={"limit_bytes": "9" * (2 * 1024 * 1024)})
    assert huge.status_code == 413
    assert len(huge.content) < 1000
    # under the limit but invalid: the 422 names the field and never carries the value back
    large = await client.put("/nodes/1/limit", json={"limit_bytes": "9" * 500_000, "x": "y" * 1000})
    assert large.status_code == 422
    assert len(large.content) < 4096
    assert "999" not in large.text
    assert "yyy" not in large.text
    assert {tuple(e["loc"]) for e in large.json()["detail"]} == {
        ("body", "limit_bytes"),
        ("body", "x"),
    }


async def test_a_missing_node_has_the_documented_error_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nodes/12345/traffic")
    assert missing.status_code == 404
    assert missing.json() == {"message": "node 12345 has no traffic recorded", "detail": []}
