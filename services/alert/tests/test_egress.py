"""Receivers' URLs are user-given: refused when saved, refused again at connect time, and
what a delivery records says nothing about the receiver's answer or the port.

Also: a receiver checks the HMAC signature the way docs/security.md shows."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from alert.app import AlertApp
from alert.config import AlertSettings
from alert.models import delivery_attempts, notifications
from simulators.ports import free_port
from tributary.egress import EgressPolicy, egress_client
from tributary.migrate import alembic_config
from tributary.service import Service, migrate
from tributary_testing.dns import Rebinder

from .conftest import Hook
from .harness import Harness, stub_resolver


async def fire(harness: Harness, device: str = "aq-1") -> None:
    await harness.reading(device, 35, harness.clock())
    await harness.drain()


# -- when saved ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/", "address"),
        ("http://10.0.0.5:8080/", "address"),
        ("http://[fd00:ec2::254]/", "address"),
        ("http://2852039166/", "address"),
        ("http://[::ffff:127.0.0.1]:6379/", "address"),
        ("http://0x7f000001/", "address"),
        ("http://017700000001/", "address"),
        ("http://0.0.0.0/", "address"),
        ("http://100.64.0.1/", "address"),
        ("http://224.0.0.1/", "address"),
        ("https://user:pw@hooks.example/", "userinfo"),
        ("https://nowhere.invalid/", "resolve"),
    ],
)
async def test_receivers_with_refused_urls_are_a_422_naming_the_rule(
    http: httpx.AsyncClient, harness: Harness, url: str, rule: str
) -> None:
    harness.app.egress = EgressPolicy(resolver=stub_resolver)  # no allow-list
    receiver = {"name": "ops", "kind": "webhook", "url": url}
    created = await http.post("/receivers", json=receiver)
    assert created.status_code == 422, created.text
    assert created.json()["message"].startswith(f"url refused ({rule}): ")
    assert url not in created.text
    ok = await http.post("/receivers", json={**receiver, "url": "https://hooks.example/a"})
    assert ok.status_code == 201
    replaced = await http.put(f"/receivers/{ok.json()['id']}", json=receiver)
    assert replaced.status_code == 422
    assert (await http.get(f"/receivers/{ok.json()['id']}")).json()["url"] == (
        "https://hooks.example/a"
    )


async def test_loopback_is_refused_unless_allow_listed(
    http: httpx.AsyncClient, harness: Harness, hook: Hook
) -> None:
    """The tests' settings allow-list 127.0.0.0/8 (their hook listens there); the
    default policy does not."""
    assert (await http.post("/receivers", json=_hook(hook.url))).status_code == 201
    harness.app.egress = EgressPolicy()
    refused = await http.post("/receivers", json=_hook(hook.url, "other"))
    assert refused.status_code == 422
    assert "loopback address" in refused.json()["message"]


def _hook(url: str, name: str = "ops") -> dict[str, str]:
    return {"name": name, "kind": "webhook", "url": url}


# -- when delivering ----------------------------------------------------------------------------


async def test_dns_rebinding_is_refused_at_connect_and_nothing_is_sent(
    http: httpx.AsyncClient, harness: Harness, hook: Hook
) -> None:
    dns = Rebinder()
    rebinding = EgressPolicy(resolver=dns)
    harness.app.egress = rebinding
    port = urlsplit(hook.url).port
    saved = await http.post("/receivers", json=_hook(f"http://rebind.example:{port}/hook"))
    assert saved.status_code == 201, saved.text
    harness.add_rule(operator=">", threshold=30, receivers=["ops"])
    async with egress_client(rebinding, timeout=2) as client:
        harness.app.notifier.client = client
        await fire(harness)
        await harness.notify()
    assert dns.answers == 2
    assert hook.calls == []
    (n,) = harness.notifications()
    assert (n.status, n.last_error) == ("failed", "refused-address")  # not retried


async def test_an_error_answer_is_recorded_as_its_status_only(
    http: httpx.AsyncClient, harness: Harness, hook: Hook
) -> None:
    """The alert service cannot be used to read another service's error messages."""
    hook.status, hook.answer = 422, b'{"detail": "internal secret message"}'
    harness.add_receiver(**_hook(hook.url))
    harness.add_rule(operator=">", threshold=30, receivers=["ops"])
    await fire(harness)
    await harness.notify()
    assert len(hook.calls) == 1
    (event,) = (await http.get("/events")).json()
    detail = await http.get(f"/events/{event['id']}")
    assert "internal secret" not in detail.text
    (notification,) = detail.json()["notifications"]
    assert notification["last_error"] == "http-status"
    (attempt,) = notification["delivery_attempts"]
    assert (attempt["status_code"], attempt["error"]) == (422, "http-status")


async def test_a_redirect_is_a_failure_and_not_followed(harness: Harness, hook: Hook) -> None:
    hook.status = 307
    harness.add_receiver(**_hook(hook.url))
    harness.add_rule(operator=">", threshold=30, receivers=["ops"])
    await fire(harness)
    await harness.notify()
    assert len(hook.calls) == 1
    (n,) = harness.notifications()
    assert n.last_error == "redirect"


async def test_a_closed_port_and_a_redis_port_read_the_same(
    harness: Harness, redis_url: str
) -> None:
    """No port scanning through deliveries: the stored outcome does not say whether
    something listens."""
    redis_port = urlsplit(redis_url).port
    harness.add_receiver(**_hook(f"http://127.0.0.1:{free_port()}/", "closed"))
    harness.add_receiver(**_hook(f"http://127.0.0.1:{redis_port}/", "redis"))
    harness.add_rule(operator=">", threshold=30, receivers=["closed", "redis"])
    await fire(harness)
    await harness.notify()
    outcomes = {(n.status, n.last_error) for n in harness.notifications()}
    assert outcomes == {("pending", "connect-failed")}


# -- the signature, as a receiver checks it -------------------------------------------------------

#: how old a signed request a receiver accepts, in seconds (replays are refused)
TOLERANCE_SECONDS = 300


def verify_signature(
    secret: bytes, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> bool:
    """docs/security.md's receiver check, verbatim: only hmac and hashlib, on the raw body."""
    timestamp = headers.get("x-tributary-timestamp", "")
    signature = headers.get("x-tributary-signature", "")
    if not timestamp.isdigit():
        return False
    if abs((now or time.time()) - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature, f"sha256={expected}")


async def test_a_receiver_verifies_the_signature(harness: Harness, hook: Hook) -> None:
    harness.add_receiver(**_hook(hook.url), hmac_secret="s3cret")
    harness.add_rule(operator=">", threshold=30, receivers=["ops"])
    await fire(harness)
    await harness.notify()
    (call,) = hook.calls
    headers, body = call["headers"], call["body"]
    sent_at = harness.clock().timestamp()
    assert verify_signature(b"s3cret", headers, body, now=sent_at)
    assert not verify_signature(b"wrong", headers, body, now=sent_at)
    assert not verify_signature(b"s3cret", headers, body + b" ", now=sent_at)
    assert not verify_signature(b"s3cret", headers, body, now=sent_at + TOLERANCE_SECONDS + 1)
    replayed = {**headers, "x-tributary-timestamp": str(int(sent_at) + 60)}
    assert not verify_signature(b"s3cret", replayed, body, now=sent_at)


async def test_migration_0003_rewrites_stored_answers_to_failure_classes(
    harness: Harness, hook: Hook, migrated: Engine, service: Service[AlertSettings, AlertApp]
) -> None:
    """Attempts recorded before kept the receiver's answer; the upgrade leaves the word."""
    hook.status = 503
    harness.add_receiver(**_hook(hook.url))
    harness.add_rule(operator=">", threshold=30, receivers=["ops"])
    await fire(harness)
    await harness.notify()
    old = "HTTP 503: internal secret message"
    assert service.migrations is not None
    with migrated.begin() as conn:  # back to 0002 (later revisions undone), then the old texts
        config = alembic_config(service.migrations, conn, service.schema, service.version_table)
        command.downgrade(config, "0002")
        conn.execute(sa.update(delivery_attempts).values(error=old))
        conn.execute(sa.update(notifications).values(last_error=old))
    migrate(service, migrated)
    with migrated.connect() as conn:
        errors = conn.execute(sa.select(delivery_attempts.c.error)).scalars().all()
        last = conn.execute(sa.select(notifications.c.last_error)).scalars().all()
    assert (errors, last) == (["http-status"], ["http-status"])
