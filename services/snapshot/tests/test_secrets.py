"""The apiUrl secret path never appears in logs, errors, API responses, traces or events."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from snapshot.credentials import SecretBox, parse_api_url
from snapshot.instruments import mask_url
from tributary.http import create_app
from tributary.metrics import Metrics

from .harness import MB, Harness


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"http_timeout_seconds": 0.3, "backoff_base_seconds": 1.0}


def _api(harness: Harness) -> httpx.AsyncClient:
    app = create_app("snapshot", Metrics(), routers=harness.parts.routers)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_secret_path_is_never_shown(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    spans = InMemorySpanExporter()
    harness.res.telemetry.provider.add_span_processor(SimpleSpanProcessor(spans))
    harness.res.telemetry.instrument_httpx()
    fine, failing, slow, wrong_pin = [await harness.sim.add_server() for _ in range(4)]
    for server in (fine, failing, slow, wrong_pin):
        server.create_key()
        server.add_traffic("0", MB)
    failing.down, slow.latency = True, 1.0
    secrets = [s.secret for s in (fine, failing, slow, wrong_pin)]
    ids = [harness.register(s) for s in (fine, failing, slow)]
    ids.append(harness.register(wrong_pin, pin="00" * 32))
    gone = await harness.sim.add_server()
    secrets.append(gone.secret)
    ids.append(harness.register(gone))
    await harness.sim.shut_down(gone)  # nothing listens any more: connection refused

    outcomes = [await harness.collect(i) for i in ids]
    assert {o.reason for o in outcomes[1:]} >= {"http", "timeout", "certificate", "connect"}

    shown: list[str] = [caplog.text]
    shown += [json.dumps(r.__dict__, default=str) for r in caplog.records]
    shown += [repr(o) for o in outcomes]
    async with _api(harness) as client:
        for path in ("/servers", "/servers?include_inactive=true", "/analytics/summary",
                     "/analytics/top-consumers", f"/servers/{ids[0]}"):  # fmt: skip
            response = await client.get(path)
            assert response.status_code == 200
            shown.append(response.text)
        bad = {"apiUrl": fine.api_url, "certSha256": "nope"}
        duplicate = {"apiUrl": fine.api_url, "certSha256": fine.certificate.sha256}
        no_pin = {"apiUrl": fine.api_url}
        for body in (bad, duplicate, no_pin, [fine.api_url]):
            response = await client.post("/servers", json=body)
            assert 400 <= response.status_code < 500
            shown.append(response.text)
    shown += [json.dumps(list(r._mapping.values()), default=str)
              for r in harness.rows("SELECT * FROM servers")]  # fmt: skip
    shown += [json.dumps(dict(s.attributes or {})) + s.name for s in spans.get_finished_spans()]
    urls = [
        (s.attributes or {}).get("url.full") or (s.attributes or {}).get("http.url")
        for s in spans.get_finished_spans()
    ]
    assert any(urls), "the httpx spans were not captured"
    assert all("/***/" in str(u) for u in urls if u)
    for secret in secrets:
        for text in shown:
            assert secret not in text


def test_api_url_never_prints_its_secret() -> None:
    url = parse_api_url("https://10.0.0.1:4444/Zx9aQ7bT3kLm2NpR4sVw1Y/")
    assert url.secret_path == "Zx9aQ7bT3kLm2NpR4sVw1Y"
    for text in (repr(url), str(url), f"{url}", url.endpoint):
        assert "Zx9aQ7bT3kLm2NpR4sVw1Y" not in text
    assert mask_url(url.url("/metrics/transfer")) == "https://10.0.0.1:4444/***/metrics/transfer"
    box = SecretBox(__import__("snapshot.credentials").credentials.generate_key())
    token = box.encrypt(url)
    assert "Zx9aQ7bT3kLm2NpR4sVw1Y" not in token
    assert box.decrypt(token) == url
