"""GET /usage, /runs, /runs/{id}, /days: JSON, and 4xx (never 500) for bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import redis.asyncio as aioredis

from aggregation.api import router
from aggregation.keys import KeyFormat
from tributary.http import create_app

from .conftest import DAY, AppFactory, counters

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def client(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> AsyncIterator[httpx.AsyncClient]:
    for offset in range(3):
        day = DAY + timedelta(days=offset)
        values = {("m1", "calls"): 10 + offset, ("m1", "sms"): offset, ("m2", "calls"): 99}
        await counters(redis_client, key_format, values, day)
    res, app = await make_app()
    for offset in range(3):
        await app.aggregator.aggregate(DAY + timedelta(days=offset))
    await redis_client.set(key_format.counter("m1", DAY, "bad"), "x")
    await app.aggregator.aggregate(DAY)
    http = create_app("aggregation", res.metrics, routers=[router(res.sessions)])
    transport = httpx.ASGITransport(app=http)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_usage_of_a_merchant_in_a_range(client: httpx.AsyncClient) -> None:
    reply = await client.get(
        "/usage", params={"merchant": "m1", "from": str(DAY), "to": str(DAY + timedelta(1))}
    )
    assert reply.status_code == 200
    body = reply.json()
    assert [(r["date"], r["metric"], r["value"]) for r in body["rows"]] == [
        (str(DAY), "calls", 10),
        (str(DAY), "sms", 0),
        (str(DAY + timedelta(1)), "calls", 11),
        (str(DAY + timedelta(1)), "sms", 1),
    ]
    assert body["truncated"] is False
    only_calls = await client.get(
        "/usage",
        params={
            "merchant": "m1",
            "metric": "calls",
            "from": str(DAY),
            "to": str(DAY + timedelta(5)),
        },
    )
    assert [r["value"] for r in only_calls.json()["rows"]] == [10, 11, 12]
    limited = await client.get(
        "/usage", params={"merchant": "m1", "from": str(DAY), "to": str(DAY), "limit": 1}
    )
    assert len(limited.json()["rows"]) == 1
    assert limited.json()["truncated"] is True


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "merchant"),
        ({"merchant": "m1", "from": "2025-13-01"}, "from"),
        ({"merchant": "m1", "from": "2025-03-10", "to": "2025-03-01"}, "must not be after"),
        ({"merchant": "m1", "from": "2020-01-01", "to": "2025-01-01"}, "at most 366 days"),
        ({"merchant": "m1", "limit": "0"}, "limit"),
        ({"merchant": "x" * 300}, "merchant"),
    ],
)
async def test_bad_usage_queries_get_422_with_a_reason(
    client: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    reply = await client.get("/usage", params=params)
    assert reply.status_code == 422
    assert message in reply.text


async def test_runs_and_days(client: httpx.AsyncClient) -> None:
    runs = (await client.get("/runs")).json()["runs"]
    assert [r["status"] for r in runs] == ["partial", "succeeded", "succeeded", "succeeded"]
    partial = (await client.get(f"/runs/{runs[0]['id']}")).json()
    assert partial["date"] == str(DAY)
    assert partial["errors"] == 1
    assert partial["malformed"][0]["reason"] == "value is not an integer"
    assert (await client.get("/runs", params={"date": str(DAY)})).json()["runs"][0]["id"] == (
        runs[0]["id"]
    )
    assert len((await client.get("/runs", params={"before": runs[1]["id"]})).json()["runs"]) == 2
    assert (await client.get("/runs/999999")).status_code == 404
    assert (await client.get("/runs", params={"status": "weird"})).status_code == 422
    days = await client.get("/days", params={"from": str(DAY), "to": str(DAY + timedelta(9))})
    by_date = {d["date"]: d for d in days.json()["days"]}
    assert by_date[str(DAY)]["errors"] == 1
    assert by_date[str(DAY)]["final"] is True
    assert by_date[str(DAY + timedelta(1))]["rows_written"] == 3


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        ("/usage?merchant=m1%00", ["query", "merchant"]),
        ("/usage?merchant=m1&metric=%00", ["query", "metric"]),
        ("/runs/218129874436014592585891840", ["path", "run_id"]),
        ("/runs?before=99999999999999999999", ["query", "before"]),
    ],
)
async def test_text_and_numbers_the_database_cannot_take_are_a_422(
    client: httpx.AsyncClient, path: str, loc: list[str]
) -> None:
    reply = await client.get(path)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == loc


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/days", {"from": "2020-01-01", "to": "2025-01-01"}),
        ("/usage", {"merchant": "m1", "from": "2025-03-10", "to": "2025-03-01"}),
    ],
)
async def test_range_errors_have_the_documented_shape(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    reply = await client.get(path, params=params)
    assert reply.status_code == 422
    body = reply.json()
    assert set(body) == {"message", "detail"}
    assert body["detail"] == []
