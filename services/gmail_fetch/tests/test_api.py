"""The HTTP API: bearer auth, validation, 4xx for bad input, no secrets in responses."""

from __future__ import annotations

from typing import Any

import pytest

from tributary_testing.auth import secured_app

from .harness import API_TOKEN, Harness

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic abc"}],
)
async def test_requests_without_a_valid_bearer_token_are_refused(
    harness: Harness, headers: dict[str, str]
) -> None:
    reply = await harness.http.post("/api/analytics/jobs", json={"user_id": "u"}, headers=headers)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith('Bearer realm="gmail_fetch"')
    assert (await harness.http.get("/api/analytics/jobs/x", headers=headers)).status_code == 401


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"user_id": "user-1", "max_results": 501}, "at most 500"),
        ({"user_id": "user-1", "max_results": 0}, "max_results"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "user-1", "type": "delete_everything"}, "type"),
        ({"user_id": "user-1", "extra": 1}, "extra"),
        ({}, "user_id"),
    ],
)
async def test_invalid_bodies_get_a_clear_422(
    harness: Harness, body: dict[str, Any], fragment: str
) -> None:
    harness.add_account()
    reply = await harness.http.post("/api/analytics/jobs", json=body, headers=AUTH)
    assert reply.status_code == 422
    assert fragment in reply.text


async def test_malformed_json_is_a_422(harness: Harness) -> None:
    reply = await harness.http.post(
        "/api/analytics/jobs",
        content=b"{not json",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert reply.status_code == 422


async def test_unknown_user_and_unknown_job_are_404(harness: Harness) -> None:
    reply = await harness.http.post("/api/analytics/jobs", json={"user_id": "nobody"}, headers=AUTH)
    assert reply.status_code == 404
    assert "nobody" in reply.text
    assert (await harness.http.get("/api/analytics/jobs/missing", headers=AUTH)).status_code == 404
    assert (
        await harness.http.delete("/api/analytics/jobs/missing", headers=AUTH)
    ).status_code == 404


async def test_create_get_list_and_cancel_a_pending_job(harness: Harness) -> None:
    harness.add_account()
    reply = await harness.http.post(
        "/api/analytics/jobs", json={"user_id": "user-1", "max_results": 10}, headers=AUTH
    )
    assert reply.status_code == 202
    job = reply.json()
    assert reply.headers["location"] == f"/api/analytics/jobs/{job['id']}"
    assert (job["status"], job["progress"], job["total"], job["max_results"]) == (
        "pending",
        0,
        0,
        10,
    )
    listed = await harness.http.get(
        "/api/analytics/jobs", params={"user_id": "user-1"}, headers=AUTH
    )
    assert [j["id"] for j in listed.json()] == [job["id"]]

    cancelled = await harness.http.delete(f"/api/analytics/jobs/{job['id']}", headers=AUTH)
    assert cancelled.json()["status"] == "cancelled"
    await harness.drain()  # the worker skips it
    assert (await harness.job(job["id"]))["status"] == "cancelled"
    assert harness.fake.counts["http"] == 0
    events = await harness.events(job["id"])
    assert events[-1][1]["status"] == "cancelled"


async def test_default_max_results_comes_from_the_settings(harness: Harness) -> None:
    harness.add_account()
    job = await harness.create_job()
    assert job["max_results"] == harness.settings.default_max_results


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/analytics/jobs?user_id=user-1%00", None),
        ("GET", "/api/analytics/jobs/a%00", None),
        ("POST", "/api/analytics/jobs", {"user_id": "user-1\u0000"}),
    ],
)
async def test_nul_in_a_request_is_a_422_not_a_500(
    harness: Harness, method: str, path: str, body: dict[str, str] | None
) -> None:
    reply = await harness.http.request(method, path, json=body, headers=AUTH)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["msg"] == "must not contain NUL characters"


async def test_every_error_has_the_documented_shape(harness: Harness) -> None:
    harness.add_account()
    over_cap = await harness.http.post(
        "/api/analytics/jobs", json={"user_id": "user-1", "max_results": 501}, headers=AUTH
    )
    assert over_cap.status_code == 422
    assert over_cap.json() == {"message": "max_results: must be at most 500", "detail": []}
    unauthorized = await harness.http.get("/api/analytics/jobs/x")
    assert unauthorized.json() == {"message": "a bearer token is required", "detail": []}
    assert (await harness.http.get("/openapi.json", headers=AUTH)).status_code == 404  # docs off
    schema = secured_app("gmail_fetch", harness.res.metrics, harness.parts.routers).openapi()
    operation = schema["paths"]["/api/analytics/jobs/{job_id}"]["delete"]
    assert {"401", "404", "409", "422"} <= set(operation["responses"])


async def test_a_body_over_the_limit_is_refused_before_it_is_read(harness: Harness) -> None:
    body = b'{"user_id": "' + b"u" * (2 * 1024 * 1024) + b'"}'
    headers = {"Content-Type": "application/json"}
    # no credentials: a 401 from the headers alone, before a byte of the body is read
    reply = await harness.http.post("/api/analytics/jobs", content=body, headers=headers)
    assert reply.status_code == 401
    reply = await harness.http.post("/api/analytics/jobs", content=body, headers=headers | AUTH)
    assert reply.status_code == 413
    assert len(reply.content) < 1000
