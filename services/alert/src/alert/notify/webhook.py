"""Webhook receivers: Alertmanager's v4 webhook JSON, signed with HMAC-SHA256.

Signature: ``X-Tributary-Signature: sha256=<hex>`` over ``<timestamp>.<body>``
with the receiver's secret, ``X-Tributary-Timestamp: <unix seconds>``, so a
receiver can check both origin and freshness (replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from alert.notify.delivery import Attempt, Delivery
from tributary import egress

#: Alertmanager's "zero" endsAt for alerts still firing
ZERO_TIME = "0001-01-01T00:00:00Z"
SIGNATURE_HEADER = "X-Tributary-Signature"
TIMESTAMP_HEADER = "X-Tributary-Timestamp"
#: HTTP statuses worth another attempt; any other 4xx will not get better
RETRYABLE_STATUSES = frozenset({408, 425, 429})


def _rfc3339(value: datetime | None) -> str:
    if value is None:
        return ZERO_TIME
    return value.isoformat().replace("+00:00", "Z")


def alertmanager_payload(d: Delivery, external_url: str) -> dict[str, Any]:
    """The body Alertmanager would POST for one alert of one group."""
    resolved = d.kind == "resolved"
    status = "resolved" if resolved else "firing"
    labels: Mapping[str, str] = d.labels
    alert = {
        "status": status,
        "labels": dict(labels),
        "annotations": dict(d.annotations),
        "startsAt": _rfc3339(d.starts_at),
        "endsAt": _rfc3339(d.ends_at) if resolved else ZERO_TIME,
        "generatorURL": f"{external_url.rstrip('/')}/events/{d.event_id}",
        "fingerprint": d.fingerprint,
    }
    group_labels = {"alertname": labels.get("alertname", ""), "subject": d.subject}
    return {
        "version": "4",
        "groupKey": f"{{}}:{{alertname={group_labels['alertname']!r}, subject={d.subject!r}}}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": d.receiver_name,
        "groupLabels": group_labels,
        "commonLabels": dict(labels),
        "commonAnnotations": dict(d.annotations),
        "externalURL": external_url,
        "alerts": [alert],
        # not in Alertmanager's shape; receivers that only know it ignore these
        "notificationKind": d.kind,
        "eventId": d.event_id,
    }


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def encode_body(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


async def post(
    client: httpx.AsyncClient,
    d: Delivery,
    external_url: str,
    default_timeout: float,
    timestamp: int,
) -> Attempt:
    """POST the alert; the outcome is the status and a fixed failure class (never the
    response body, never the error's text: see tributary.egress.failures)."""
    config = d.config
    body = encode_body(alertmanager_payload(d, external_url))
    headers = {"Content-Type": "application/json", "User-Agent": "tributary-alert"}
    headers.update({str(k): str(v) for k, v in (config.get("headers") or {}).items()})
    if d.secret:
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = sign(d.secret, timestamp, body)
    timeout = float(config.get("timeout_seconds") or default_timeout)
    try:
        # the whole exchange is bounded, not each read: a peer dripping bytes gains nothing;
        # the body is never read (nothing of it is kept)
        async with (
            asyncio.timeout(timeout),
            client.stream(
                "POST", str(config["url"]), content=body, headers=headers, timeout=timeout
            ) as response,
        ):
            code = response.status_code
    except (httpx.HTTPError, TimeoutError) as exc:
        failed = egress.classify(exc)
        return Attempt(ok=False, retryable=failed != egress.REFUSED_ADDRESS, error=failed)
    failure = egress.status_failure(code)
    if failure is None:
        return Attempt(ok=True, status_code=code)
    retryable = code >= 500 or code in RETRYABLE_STATUSES
    return Attempt(ok=False, retryable=retryable, status_code=code, error=failure)
