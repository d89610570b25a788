"""The HTTP API: CRUD, clear 422s, event queries, readings, secrets never returned."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from tributary import catalog
from tributary.events import decode
from tributary.streams import client

from .harness import Harness

RULE = {
    "name": "hot",
    "source": "device.readings",
    "metric": "temp",
    "operator": ">",
    "threshold": 30,
}


async def test_rule_crud(http: httpx.AsyncClient) -> None:
    created = await http.post("/rules", json=RULE)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["spec"]["threshold"] == 30
    rule_id = rule["id"]
    assert (await http.get(f"/rules/{rule_id}")).json()["spec"]["name"] == "hot"
    changed = await http.put(f"/rules/{rule_id}", json={**RULE, "threshold": 40})
    assert changed.status_code == 200
    assert changed.json()["revision"] > rule["revision"]
    listed = (await http.get("/rules", params={"source": "device.readings"})).json()
    assert [r["id"] for r in listed] == [rule_id]
    assert (await http.delete(f"/rules/{rule_id}")).status_code == 204
    assert (await http.get(f"/rules/{rule_id}")).status_code == 404
    assert (await http.delete(f"/rules/{rule_id}")).status_code == 404
    assert (await http.put("/rules/999999", json=RULE)).status_code == 404


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"operator": "=>"}, "operator"),
        ({"recovery_threshold": 35}, "recovery_threshold 35 is on the wrong side"),
        ({"for_seconds": -5}, "for_seconds: Input should be greater than or equal to 0"),
        ({"keep_firing_for_seconds": -1}, "keep_firing_for_seconds"),
        ({"source": "nowhere"}, "source"),
        ({"receivers": ["nobody"]}, "unknown receiver(s): nobody"),
    ],
)
async def test_invalid_rules_get_422_with_a_clear_message(
    http: httpx.AsyncClient, change: dict[str, Any], message: str
) -> None:
    response = await http.post("/rules", json={**RULE, **change})
    assert response.status_code == 422
    body = response.json()
    text = body.get("message") or body.get("detail")
    assert message in str(text)


async def test_malformed_json_and_bad_ids_are_4xx(http: httpx.AsyncClient) -> None:
    bad = await http.post("/rules", content=b"{", headers={"content-type": "application/json"})
    assert bad.status_code == 422
    assert (await http.get("/rules/abc")).status_code == 422
    assert (await http.get("/events/nope")).status_code == 404


async def test_receivers_never_return_secrets(http: httpx.AsyncClient) -> None:
    receiver = {
        "name": "ops",
        "kind": "webhook",
        "url": "https://user:pw@hooks.example/x",
        "hmac_secret": "top-secret",
        "headers": {"Authorization": "Bearer abc"},
    }
    refused = await http.post("/receivers", json=receiver)
    assert refused.status_code == 422  # credentials go in headers, not in the URL
    assert "url refused (userinfo)" in refused.json()["message"]
    assert ":pw@" not in refused.text
    created = await http.post("/receivers", json={**receiver, "url": "https://hooks.example/x"})
    assert created.status_code == 201, created.text
    text = created.text
    assert "top-secret" not in text
    assert "Bearer abc" not in text
    body = created.json()
    assert body["has_hmac_secret"] is True
    assert body["header_names"] == ["Authorization"]
    receiver_id = body["id"]
    # an update without the secret keeps it
    kept = await http.put(
        f"/receivers/{receiver_id}",
        json={"name": "ops", "kind": "webhook", "url": "https://hooks.example/y"},
    )
    assert kept.json()["has_hmac_secret"] is True
    dup = await http.post("/receivers", json={"name": "ops", "kind": "email", "to": ["a@b.c"]})
    assert dup.status_code == 409
    bad = await http.post("/receivers", json={"name": "m", "kind": "email", "to": ["nobody"]})
    assert bad.status_code == 422
    # in use by a rule: cannot be deleted
    await http.post("/rules", json={**RULE, "receivers": ["ops"]})
    assert (await http.delete(f"/receivers/{receiver_id}")).status_code == 409


async def test_silences_and_maintenance_windows(http: httpx.AsyncClient, harness: Harness) -> None:
    now = harness.clock()
    silence = await http.post(
        "/silences",
        json={
            "matchers": [{"name": "device_id", "value": "aq-1"}],
            "ends_at": (now + timedelta(hours=1)).isoformat(),
            "comment": "cleaning",
        },
    )
    assert silence.status_code == 201, silence.text
    assert silence.json()["active"] is True
    assert len((await http.get("/silences", params={"active": True})).json()) == 1
    expired = await http.delete(f"/silences/{silence.json()['id']}")
    assert expired.json()["active"] is False
    assert (await http.get("/silences", params={"active": True})).json() == []
    backwards = await http.post(
        "/silences",
        json={
            "matchers": [{"name": "a", "value": "b"}],
            "ends_at": (now - timedelta(hours=1)).isoformat(),
        },
    )
    assert backwards.status_code == 422
    window = await http.post(
        "/maintenance-windows",
        json={"name": "weekly", "days_of_week": [0], "start_time": "11:30", "duration_minutes": 60},
    )
    assert window.status_code == 201, window.text
    assert window.json()["active"] is True  # T0 is a Monday, 12:00 UTC
    bad_zone = await http.post(
        "/maintenance-windows",
        json={
            "name": "w",
            "days_of_week": [0],
            "start_time": "25:00",
            "duration_minutes": 60,
            "timezone": "Mars/Olympus",
        },
    )
    assert bad_zone.status_code == 422
    assert "start_time" in bad_zone.text
    assert "Mars/Olympus" in bad_zone.text
    wid = window.json()["id"]
    assert (await http.delete(f"/maintenance-windows/{wid}")).status_code == 204
    assert (await http.get(f"/maintenance-windows/{wid}")).status_code == 404


async def test_post_readings_publishes_and_events_can_be_queried(
    http: httpx.AsyncClient, harness: Harness
) -> None:
    await http.post("/rules", json=RULE)
    now = harness.clock().isoformat()
    accepted = await http.post(
        "/readings",
        json=[
            {"device_id": "aq-1", "metric": "temp", "value": 35, "time": now},
            {"device_id": "aq-2", "metric": "temp", "value": 36},
        ],
    )
    assert accepted.status_code == 202, accepted.text
    assert len(accepted.json()["event_ids"]) == 2
    entries = await client.entries(
        harness.res.redis, harness.res.keys.stream(catalog.DEVICE_READINGS)
    )
    first = decode(entries[0][1], harness.res.service.registry)
    assert first.type == "device.reading.recorded"
    await harness.drain()
    open_events = (await http.get("/events", params={"open": "true"})).json()
    assert sorted(e["subject"] for e in open_events) == ["aq-1", "aq-2"]
    one = (await http.get("/events", params={"open": "true", "subject": "aq-2"})).json()
    assert [e["subject"] for e in one] == ["aq-2"]
    detail = (await http.get(f"/events/{one[0]['id']}")).json()
    assert detail["labels"]["device_id"] == "aq-2"
    assert detail["notifications"] == []
    assert (
        await http.post("/readings", json={"device_id": "x", "value": "hot"})
    ).status_code == 422
    assert (await http.post("/readings", json=[])).status_code == 422


async def test_metrics_and_openapi(http: httpx.AsyncClient, harness: Harness) -> None:
    await http.post("/rules", json=RULE)
    await http.post(
        "/readings",
        json={
            "device_id": "aq-1",
            "metric": "temp",
            "value": 35,
            "time": harness.clock().isoformat(),
        },
    )
    await harness.drain()
    text = (await http.get("/metrics")).text
    assert 'alert_samples_total{source="device.readings"} 1.0' in text
    assert 'alert_evaluations_total{source="device.readings"} 1.0' in text
    assert 'alert_transitions_total{kind="triggered"} 1.0' in text
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert {
        "/rules",
        "/rules/{rule_id}",
        "/events",
        "/events/{event_id}",
        "/readings",
        "/receivers",
        "/silences",
        "/maintenance-windows",
    } <= set(paths)


async def readings_published(harness: Harness) -> int:
    key = harness.res.keys.stream(catalog.DEVICE_READINGS)
    return len(await client.entries(harness.res.redis, key))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/silences", {"matchers": [{"name": "a", "value": "b\u0000"}],
                               "ends_at": "2099-01-01T00:00:00Z"}),
        ("POST", "/rules", {**RULE, "name": "hot\u0000"}),
        ("GET", "/events?subject=%00", None),
        ("POST", "/readings", {"device_id": "aq-1", "metadata": {"k": "\u0000"}}),
    ],
)  # fmt: skip
async def test_nul_in_a_request_is_a_422_not_a_500(
    http: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await http.request(method, path, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "must not contain NUL characters"


@pytest.mark.parametrize(
    ("method", "path", "loc"),
    [
        ("GET", "/rules?offset=18446744073709551615", ["query", "offset"]),
        ("GET", "/silences/1378755483034466524046819328", ["path", "silence_id"]),
        ("DELETE", "/silences/1378755483034466524046819328", ["path", "silence_id"]),
        ("GET", "/rules/197622310700137250816", ["path", "rule_id"]),
        ("DELETE", "/rules/197622310700137250816", ["path", "rule_id"]),
        ("GET", "/events?rule_id=99999999999999999999", ["query", "rule_id"]),
        ("GET", "/receivers/99999999999999999999", ["path", "receiver_id"]),
        ("DELETE", "/receivers/99999999999999999999", ["path", "receiver_id"]),
        ("GET", "/maintenance-windows/99999999999999999999", ["path", "window_id"]),
        ("DELETE", "/maintenance-windows/99999999999999999999", ["path", "window_id"]),
    ],
)
async def test_ids_beyond_bigint_are_a_422_not_a_500(
    http: httpx.AsyncClient, method: str, path: str, loc: list[str]
) -> None:
    response = await http.request(method, path)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


async def test_puts_to_ids_beyond_bigint_are_a_422_not_a_500(http: httpx.AsyncClient) -> None:
    receiver = {"name": "ops", "kind": "email", "to": ["a@b.c"]}
    put = await http.put("/receivers/99999999999999999999", json=receiver)
    assert put.status_code == 422
    assert put.json()["detail"][0]["loc"] == ["path", "receiver_id"]
    rule = await http.put("/rules/99999999999999999999", json=RULE)
    assert rule.json()["detail"][0]["loc"] == ["path", "rule_id"]


async def test_an_unpaired_surrogate_in_a_reading_is_a_422_and_nothing_is_published(
    http: httpx.AsyncClient, harness: Harness
) -> None:
    response = await http.post(
        "/readings",
        content=b'{"device_id": "aq-1", "metric": "\\udcff", "value": 1}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["body", "metric"],
            "msg": "must not contain unpaired surrogates",
            "type": "string_unstorable",
        }
    ]
    assert await readings_published(harness) == 0


async def test_route_errors_have_the_documented_shape(
    http: httpx.AsyncClient, harness: Harness
) -> None:
    empty = await http.post("/readings", json=[])
    assert empty.json() == {"message": "send 1..1000 readings per request", "detail": []}
    backwards = await http.post(
        "/silences",
        json={"matchers": [{"name": "a", "value": "b"}], "ends_at": "2000-01-01T00:00:00Z"},
    )
    assert backwards.json() == {"message": "ends_at must be after starts_at", "detail": []}
    missing = await http.get("/rules/12345")
    assert missing.json() == {"message": "rule 12345 not found", "detail": []}


async def test_a_body_over_the_limit_is_a_413_and_nothing_is_published(
    http: httpx.AsyncClient, harness: Harness
) -> None:
    reading = {"device_id": "aq-1", "json_value": "x" * (2 * 1024 * 1024)}
    response = await http.post("/readings", json=reading)
    assert response.status_code == 413
    assert len(response.content) < 1000
    assert await readings_published(harness) == 0
    receiver = {"name": "ops", "kind": "webhook", "url": "https://h.example/" + "x" * 2**21}
    assert (await http.post("/receivers", json=receiver)).status_code == 413


@pytest.mark.parametrize("field", ["json_value", "metadata"])
async def test_a_reading_field_too_large_for_a_stream_entry_is_a_422(
    http: httpx.AsyncClient, harness: Harness, field: str
) -> None:
    reading = {"device_id": "aq-1", "value": 1, field: {"blob": "x" * 10_000}}
    response = await http.post("/readings", json=[reading, {"device_id": "aq-2", "value": 1}])
    assert response.status_code == 422
    # the body is one reading or a list: pydantic reports both readings of it
    (item,) = [i for i in response.json()["detail"] if i["loc"][-1] == field]
    assert item["loc"] == ["body", "list[ReadingIn]", 0, field]
    assert item["msg"] == "Value error, must be at most 8192 bytes of JSON"
    assert "xxxx" not in response.text
    assert await readings_published(harness) == 0


async def test_rule_labels_and_annotations_are_bounded(http: httpx.AsyncClient) -> None:
    many = {f"l{i}": "v" for i in range(31)}
    assert (await http.post("/rules", json={**RULE, "labels": many})).status_code == 422
    long = {"summary": "s" * 4001}
    assert (await http.post("/rules", json={**RULE, "annotations": long})).status_code == 422


async def test_invalid_receivers_never_echo_secrets_or_header_values(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/receivers",
        json={
            "name": "bad name!",
            "kind": "webhook",
            "url": "ftp://hooks.example/x",
            "hmac_secret": "top-secret",
            "headers": {"Authorization": "Bearer abc", "X-Count": 5},
            "to": "not-a-list",
        },
    )
    assert response.status_code == 422
    assert "top-secret" not in response.text
    assert "Bearer abc" not in response.text
    locs = {tuple(item["loc"]) for item in response.json()["detail"]}
    assert ("body", "headers", "X-Count") in locs
    assert ("body", "name") in locs
    assert all(set(item) == {"loc", "msg", "type"} for item in response.json()["detail"])
