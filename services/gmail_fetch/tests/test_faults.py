"""Rate limits, 5xx, token expiry and revocation, permissions, cancellation."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gmail_fetch.crypto import TokenCipher
from gmail_fetch.models import accounts
from tributary import catalog
from tributary_testing.waiting import await_until

from .harness import API_TOKEN, EMAIL, USER, Harness


async def test_rate_limited_batch_parts_are_retried_without_loss_or_duplicates(
    harness: Harness,
) -> None:
    harness.add_user(300)
    ids = list(harness.fake.mailbox(EMAIL).messages)
    harness.fake.fail_next_parts(40, status=429, reason="rateLimitExceeded")
    harness.fake.fail_ids(ids[:5], status=403, reason="userRateLimitExceeded", times=2)
    harness.fake.fail_ids(ids[5:10], status=503, reason="backendError")

    job = await harness.run_job(max_results=300)

    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert (job["total"], job["fetched"]) == (300, 300)
    assert set(harness.cached()) == set(ids)
    fetched = harness.fake.fetched_ids
    assert len(fetched) == len(set(fetched)) == 300, "a message was fetched twice"
    assert harness.fake.counts["batch"] > 6, "failed parts should have been re-sent"
    assert harness.fake.counts["batch.parts"] == 300 + 40 + 10 + 5


async def test_rate_limits_past_the_backoff_budget_retry_the_job(harness: Harness) -> None:
    harness.add_user(60)
    stubborn = list(harness.fake.mailbox(EMAIL).messages)[:3]
    harness.fake.fail_ids(stubborn, status=429, times=harness.settings.part_max_retries + 1)

    job = await harness.run_job(max_results=60)

    assert job["status"] == "completed", job
    assert job["attempts"] == 2
    assert len(harness.cached()) == 60
    steps = [p["current_step"] for _, p in await harness.events(job["id"])]
    assert any(s.startswith("Attempt 1 failed; retrying") for s in steps), steps


async def test_transient_failures_give_up_after_three_attempts(harness: Harness) -> None:
    harness.add_user(10)
    harness.fake.fail_next_requests(1000, status=503, path="/gmail/v1/")

    job = await harness.run_job(max_results=10)

    assert job["status"] == "failed"
    assert job["attempts"] == 3
    assert job["error"].startswith("failed after 3 attempts: ")
    assert "503" in job["error"]
    events = await harness.events(job["id"])
    assert events[-1][0] == "gmail.job.failed"
    assert events[-1][1]["error"] == job["error"]


async def test_token_expiry_mid_job_refreshes_and_continues(harness: Harness) -> None:
    harness.add_user(250)
    harness.fake.expire_tokens_after(60)  # mid-way through the second batch

    job = await harness.run_job(max_results=250)

    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert len(harness.cached()) == 250
    assert harness.fake.counts["token"] >= 2


async def test_revoked_token_fails_the_job_at_once_with_a_clear_error(harness: Harness) -> None:
    token = harness.add_user(20)
    harness.fake.revoke(token)

    job = await harness.run_job(max_results=20)

    assert job["status"] == "failed"
    assert job["attempts"] == 1
    assert "invalid_grant" in job["error"]
    assert "authorize the account again" in job["error"]
    assert harness.fake.counts["token"] == 1
    assert harness.fake.counts["messages.list"] == 0
    retry_key = harness.res.keys.retries(catalog.GMAIL_JOBS, "gmail_fetch")
    assert await harness.res.redis.zcard(retry_key) == 0
    events = await harness.events(job["id"])
    assert events[-1][0] == "gmail.job.failed"

    # the account is marked: the next job fails without asking Google again
    job = await harness.run_job(max_results=20)
    assert job["status"] == "failed"
    assert harness.fake.counts["token"] == 1


async def test_missing_permissions_fail_at_once(harness: Harness) -> None:
    harness.add_user(5, scopes=["openid", "email"])

    job = await harness.run_job(max_results=5)

    assert job["status"] == "failed"
    assert job["attempts"] == 1
    assert "403" in job["error"]
    assert "insufficientPermissions" in job["error"]


async def test_cancelling_a_running_job_stops_it(harness: Harness) -> None:
    harness.add_user(400)
    harness.fake.latency = 0.05
    job = await harness.create_job(max_results=400)
    await harness.res.relay.relay_once()
    task = asyncio.create_task(harness.parts.runners[0].drain(timeout=60))

    async def started() -> bool:
        return bool((await harness.job(job["id"]))["progress"] != 0)

    await await_until(started, task, what="the job making progress")
    reply = await harness.http.delete(
        f"/api/analytics/jobs/{job['id']}", headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert reply.status_code == 200
    await task

    final = await harness.job(job["id"])
    assert final["status"] == "cancelled"
    assert final["progress"] < 400
    assert len(harness.cached()) < 400
    again = await harness.http.delete(
        f"/api/analytics/jobs/{job['id']}", headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert again.status_code == 409


async def test_secrets_never_reach_logs_api_or_the_database_in_clear(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = harness.add_user(30)
    harness.fake.expire_tokens_after(2)
    job = await harness.run_job(max_results=30)
    revoked = harness.fake.grant(EMAIL)
    harness.add_account("user-2", EMAIL, revoked)
    harness.fake.revoke(revoked)
    failed = await harness.run_job(user_id="user-2", max_results=30)

    access_tokens = list(harness.fake._access)
    assert job["status"] == "completed"
    assert failed["status"] == "failed"
    text = caplog.text + str(job) + str(failed) + str(await harness.events())
    for secret in [token, revoked, *access_tokens, API_TOKEN]:
        assert secret not in text
    with harness.res.engine.connect() as conn:
        stored = {r.user_id: r.refresh_token_encrypted for r in conn.execute(accounts.select())}
    assert all(token not in s and revoked not in s for s in stored.values())
    assert TokenCipher(harness.settings.encryption_keys()).decrypt(stored[USER]) == token
