"""The Outline simulator over real HTTPS: wire format, secret paths, rolling window, knobs."""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from simulators.outline import WINDOW_SECONDS, ManualClock, OutlineSimulator


@pytest.fixture
async def sim() -> AsyncIterator[OutlineSimulator]:
    async with OutlineSimulator(2, 3, clock=ManualClock(1_800_000_000), seed=1) as simulator:
        yield simulator


def _client() -> httpx.AsyncClient:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test reads the certificate and compares it itself
    return httpx.AsyncClient(verify=context)


async def test_each_server_has_its_own_certificate_and_secret(sim: OutlineSimulator) -> None:
    first, second = sim.servers
    assert first.certificate.sha256 != second.certificate.sha256
    assert first.secret != second.secret
    async with _client() as client:
        response = await client.get(f"{first.api_url}/server")
        der = response.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
        assert hashlib.sha256(der).hexdigest().upper() == first.certificate.sha256
        assert response.json()["serverId"] == first.server_id
        wrong = await client.get(f"https://127.0.0.1:{first.port}/{second.secret}/server")
        assert wrong.status_code == 404
    registration = sim.registrations()[0]
    assert registration["apiUrl"] == first.api_url
    assert registration["certSha256"] == first.certificate.sha256


async def test_transfer_is_a_rolling_30_day_window(sim: OutlineSimulator) -> None:
    server, clock = sim.servers[0], sim.clock
    assert isinstance(clock, ManualClock)
    server.add_traffic("0", 100)
    clock.advance(WINDOW_SECONDS / 2)
    server.add_traffic("1", 50)
    async with _client() as client:
        url = f"{server.api_url}/metrics/transfer"
        body = (await client.get(url)).json()
        assert body == {"bytesTransferredByUserId": {"0": 100, "1": 50}}  # "2" unused: absent
        clock.advance(WINDOW_SECONDS / 2)
        assert (await client.get(url)).json()["bytesTransferredByUserId"] == {"1": 50}
        server.delete_key("1")  # usage stays recorded under the id, like Prometheus
        assert (await client.get(url)).json()["bytesTransferredByUserId"] == {"1": 50}
        keys = (await client.get(f"{server.api_url}/access-keys")).json()["accessKeys"]
        assert [k["id"] for k in keys] == ["0", "2"]
        server.reset_metrics()
        assert (await client.get(url)).json()["bytesTransferredByUserId"] == {}


async def test_interval_endpoint(sim: OutlineSimulator) -> None:
    server, clock = sim.servers[0], sim.clock
    assert isinstance(clock, ManualClock)
    server.add_traffic("0", 100)
    clock.advance(120)
    server.add_traffic("0", 7)
    async with _client() as client:
        base = f"{server.api_url}/experimental/server/metrics"
        recent = (await client.get(base, params={"since": "60s"})).json()
        assert recent["accessKeys"][0]["accessKeyId"] == 0
        assert recent["accessKeys"][0]["dataTransferred"] == {"bytes": 7}
        hour = (await client.get(base, params={"since": "1h"})).json()
        assert hour["server"]["dataTransferred"] == {"bytes": 107}
        assert (await client.get(base, params={"since": "5m"})).status_code == 400
        server.interval_metrics = False
        assert (await client.get(base, params={"since": "60s"})).status_code == 404


async def test_latency_errors_churn_and_automatic_traffic() -> None:
    clock = ManualClock(1_800_000_000)
    async with OutlineSimulator(1, 5, clock=clock, latency=0.05, key_rate=1000.0) as sim:
        server = sim.servers[0]
        async with _client() as client:
            started = time.perf_counter()
            await client.get(f"{server.api_url}/server")
            assert time.perf_counter() - started >= 0.05
            clock.advance(100)
            usage = (await client.get(f"{server.api_url}/metrics/transfer")).json()
            assert sum(usage["bytesTransferredByUserId"].values()) > 0
            server.churn_rate = 1.0
            before = set(server.keys)
            await client.get(f"{server.api_url}/access-keys")
            assert set(server.keys) != before
            assert len(server.keys) == 5
            server.error_rate = 1.0
            assert (await client.get(f"{server.api_url}/server")).status_code == 500


async def test_it_answers_as_the_real_server_does(sim: OutlineSimulator) -> None:
    """What outline-server's manager_service.ts / manager_metrics.ts do (issue 20)."""
    server = sim.servers[0]
    long_id = "my-identifier-" + "x" * 300
    async with _client() as client:
        put = await client.put(f"{server.api_url}/access-keys/{long_id}", json={"name": "n"})
        assert put.status_code == 201
        assert put.json()["id"] == long_id
        again = await client.put(f"{server.api_url}/access-keys/{long_id}", json={})
        assert again.json()["code"] == "Conflict"
        missing = await client.get(f"{server.api_url}/access-keys/nobody")
        assert (missing.status_code, missing.json()["code"]) == (404, "NotFound")
        unknown = await client.get(f"{server.api_url}/nowhere")
        assert unknown.json()["code"] == "ResourceNotFound"
        for since, status, code in (("", 400, "MissingParameter"), ("5m", 400, "InvalidArgument"),
                                    ("0s", 500, "InternalServer")):  # fmt: skip
            bad = await client.get(f"{server.api_url}/experimental/server/metrics?since={since}")
            assert (bad.status_code, bad.json()["code"]) == (status, code)
        server.add_traffic(long_id, 100)
        server.add_traffic("0", 50)
        server.quirks.unlabelled_bytes = 7
        metrics = await client.get(f"{server.api_url}/experimental/server/metrics?since=1h")
        ids = sorted(
            (str(e["accessKeyId"]), e["dataTransferred"]["bytes"])
            for e in metrics.json()["accessKeys"]
        )
        assert ids == [("0", 50), ("None", 7), ("None", 100)]
        transfer = await client.get(f"{server.api_url}/metrics/transfer")
        assert transfer.json()["bytesTransferredByUserId"] == {long_id: 100, "0": 50, "": 7}


async def test_the_query_cache_answers_the_same_since_for_300_seconds(
    sim: OutlineSimulator,
) -> None:
    server, clock = sim.servers[0], sim.clock
    assert isinstance(clock, ManualClock)
    server.quirks.query_cache = True
    url = f"{server.api_url}/experimental/server/metrics?since=300s"
    async with _client() as client:
        server.add_traffic("0", 10)
        first = (await client.get(url)).json()
        clock.advance(300)
        server.add_traffic("0", 99)
        assert (await client.get(url)).json() == first  # cached
        clock.advance(1)
        fresh = (await client.get(url)).json()
        assert fresh["accessKeys"][0]["dataTransferred"]["bytes"] == 99
