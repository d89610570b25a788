"""The real Gmail API's quirks, as the fake reproduces them (docs/services/gmail_fetch.md,
"What the fake reproduces"): one test per quirk, each the service's reaction to it."""

from __future__ import annotations

import asyncio

import pytest

from gmail_fetch import repository as repo
from gmail_fetch.gmail_api import GmailClient
from gmail_fetch.gmail_http import GmailExecutor, make_credentials
from gmail_fetch.metrics import GmailMetrics
from gmail_fetch.quota import QuotaBucket
from simulators.gmail import GmailServer
from simulators.gmail_errors import ErrorStyle
from tributary import catalog
from tributary.keys import Keys

from .harness import EMAIL, USER, Harness, close_harness, make_settings, open_harness


@pytest.mark.parametrize("style", ["error_info", "message_only"])
async def test_rate_limit_403s_in_every_error_shape_are_retried(
    harness: Harness, style: ErrorStyle
) -> None:
    """A 403 whose reason hides behind ``details`` (ErrorInfo) or is only in the message
    ("Quota exceeded for quota metric ...") is a rate limit, not a permission error."""
    harness.add_user(60)
    ids = list(harness.fake.mailbox(EMAIL).messages)
    harness.fake.fail_ids(ids[:4], status=403, reason="userRateLimitExceeded", style=style)
    harness.fake.fail_next_requests(
        1, status=403, reason="rateLimitExceeded", path="/gmail/v1/", style=style
    )

    job = await harness.run_job(max_results=60)

    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert set(harness.cached()) == set(ids)
    assert harness.fake.counts["messages.get"] == 60 + 4


async def test_permission_403_in_the_same_shape_still_fails_at_once(harness: Harness) -> None:
    harness.add_user(10)
    harness.fake.fail_next_requests(
        1, status=403, reason="insufficientPermissions", path="/messages", style="error_info"
    )

    job = await harness.run_job(max_results=10)

    assert job["status"] == "failed"
    assert job["attempts"] == 1
    assert "403" in job["error"]
    assert "insufficientPermissions" in job["error"]


async def test_short_and_empty_list_pages_with_a_next_page_token_are_followed(
    harness: Harness,
) -> None:
    """maxResults is an upper bound: pages may hold fewer ids, even none, and go on;
    resultSizeEstimate is only an estimate."""
    harness.add_user(60)
    harness.fake.list_page_cap = 7
    harness.fake.empty_list_pages = 2
    harness.fake.result_size_estimate = 3

    job = await harness.run_job(max_results=60)

    assert job["status"] == "completed", job
    assert (job["total"], job["fetched"]) == (60, 60)
    assert set(harness.cached()) == set(harness.fake.mailbox(EMAIL).messages)
    assert harness.fake.counts["messages.list"] == 2 + 9  # 8 pages of 7, one of 4


async def test_mail_arriving_while_listing_does_not_list_a_message_twice(
    harness: Harness,
) -> None:
    """New mail shifts later pages; the id shifted onto the next page is listed once."""
    harness.add_user(60)
    harness.fake.list_page_cap = 20
    harness.fake.arrive_after_listing(1)

    job = await harness.run_job(max_results=60)

    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert (job["total"], job["fetched"]) == (60, 60)
    fetched = harness.fake.fetched_ids
    assert len(fetched) == len(set(fetched)) == 60


async def test_messages_deleted_between_list_and_get_are_skipped_and_counted(
    harness: Harness,
) -> None:
    """Listed, then deleted by the user: their batch parts answer 404."""
    harness.add_user(120)
    ids = list(harness.fake.mailbox(EMAIL).messages)
    gone = [ids[3], ids[60], ids[110]]
    harness.fake.delete_after_listing(gone)

    job = await harness.run_job(max_results=120)

    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert (job["total"], job["fetched"], job["cached"]) == (120, 117, 0)
    assert job["current_step"].endswith("3 deleted before they could be fetched (skipped)")
    assert set(harness.cached()) == set(ids) - set(gone)
    registry = harness.res.metrics.registry
    assert registry.get_sample_value("gmail_fetch_messages_vanished_total") == 3


@pytest.mark.parametrize("answer_404", [True, False])
async def test_a_start_history_id_ahead_of_the_mailbox_falls_back_to_a_full_sync(
    harness: Harness, answer_404: bool
) -> None:
    """A stored historyId the mailbox never issued (a restored mailbox, a mix-up): Gmail
    typically answers 404, or 200 with its own lower historyId; both mean a full sync."""
    harness.add_user(40)
    await harness.run_job(max_results=40)
    mailbox = harness.fake.mailbox(EMAIL)
    with harness.res.sessions.begin() as session:
        repo.update_account(session, USER, history_id=mailbox.history_id + 10_000)
    harness.fake.future_history_is_404 = answer_404
    added = [m.id for m in mailbox.generate(2)]
    harness.fake.reset_counts()

    job = await harness.run_job(max_results=40)

    assert job["status"] == "completed", job
    assert job["sync_mode"] == "full"
    assert sorted(harness.fake.fetched_ids) == sorted(added)
    with harness.res.sessions.begin() as session:
        account = repo.get_account(session, USER)
    assert account is not None
    assert account.history_id == mailbox.history_id


async def test_grant_revoked_mid_job_fails_every_job_of_the_user_once_and_no_other(
    harness: Harness,
) -> None:
    """invalid_grant on the refresh after a 401: the job fails with a re-authorize error,
    the user's other jobs fail without retries, another user's job is untouched."""
    token = harness.add_user(150)
    harness.add_user(30, user_id="user-2", email="bob@example.com")
    harness.fake.revoke_after(token, 70)  # during the first batches of the first job
    jobs = [await harness.create_job(max_results=150) for _ in range(3)]
    other = await harness.create_job(user_id="user-2", max_results=30)

    await harness.drain()

    for job in jobs:
        final = await harness.job(job["id"])
        assert final["status"] == "failed", final
        assert final["attempts"] == 1
        assert "authorize the account again" in final["error"]
    assert (await harness.job(other["id"]))["status"] == "completed"
    retry_key = harness.res.keys.retries(catalog.GMAIL_JOBS, "gmail_fetch")
    assert await harness.res.redis.zcard(retry_key) == 0
    with harness.res.sessions.begin() as session:
        account = repo.get_account(session, USER)
    assert account is not None
    assert account.auth_error is not None

    harness.fake.reset_counts()
    later = await harness.run_job(max_results=150)
    assert later["status"] == "failed"
    assert "authorize the account again" in later["error"]
    assert harness.fake.counts["http"] == 0


@pytest.mark.parametrize(("backoff_max", "attempts"), [(0.05, 2), (5.0, 1)])
async def test_a_rate_limit_saying_when_to_retry_is_waited_out_not_hammered(
    gmail: GmailServer,
    redis_url: str,
    postgres_url: str,
    pg_schema: str,
    keys: Keys,
    backoff_max: float,
    attempts: int,
) -> None:
    """429 "User-rate limit exceeded.  Retry after <time>": the call waits until then; a
    wait longer than a call's longest backoff ends the attempt at once, and the job's
    next attempt waits until then."""
    settings = make_settings(
        gmail, redis_url, postgres_url, pg_schema, keys, backoff_max_seconds=backoff_max
    )
    harness = await open_harness(settings, gmail)
    try:
        harness.add_user(30)
        harness.fake.rate_limit_for(0.5)

        job = await harness.run_job(max_results=30)

        assert job["status"] == "completed", job
        assert job["attempts"] == attempts
        assert harness.fake.counts["rate_limited"] == 1, "retried before the time Gmail gave"
        assert len(harness.cached()) == 30
    finally:
        await close_harness(harness)


async def test_a_token_endpoint_outage_retries_the_job_instead_of_failing_it(
    harness: Harness,
) -> None:
    """A 502 from the token endpoint (google-auth retries only 500/503/504/408/429, and
    calls the rest not retryable) is an outage, not a refused grant."""
    harness.add_user(20)
    harness.fake.fail_next_requests(1, status=502, reason="backendError", path="/token")

    job = await harness.run_job(max_results=20)

    assert job["status"] == "completed", job
    assert job["attempts"] == 2
    assert len(harness.cached()) == 20


async def test_batch_parts_answered_in_another_order_are_matched_by_content_id(
    harness: Harness,
) -> None:
    harness.add_user(80)
    harness.fake.reverse_batch_parts = True
    ids = list(harness.fake.mailbox(EMAIL).messages)
    harness.fake.fail_ids(ids[:3], status=503, reason="backendError")

    job = await harness.run_job(max_results=80)

    assert job["status"] == "completed", job
    cached = harness.cached()
    assert set(cached) == set(ids)
    mailbox = harness.fake.mailbox(EMAIL)
    assert all(cached[i]["thread_id"] == mailbox.messages[i].thread_id for i in ids)


async def test_a_message_without_labels_has_no_label_ids_field_and_is_cached(
    harness: Harness,
) -> None:
    """Gmail's JSON leaves out empty repeated fields: an archived message with no label
    comes without ``labelIds``, in messages.get and in history records."""
    harness.add_user(10)
    await harness.run_job(max_results=10)
    mailbox = harness.fake.mailbox(EMAIL)
    bare = mailbox.add_message(label_ids=[])

    job = await harness.run_job(max_results=10)

    assert job["status"] == "completed", job
    assert harness.cached()[bare.id]["label_ids"] == []


async def test_failed_batch_parts_alone_are_re_sent_after_growing_backoff(
    harness: Harness,
) -> None:
    """Per-part 429 and 503 in a 200 batch: only those parts go again, each round after
    an exponential, jittered delay; the parts that succeeded are not fetched again."""
    token = harness.add_user(20)
    ids = list(harness.fake.mailbox(EMAIL).messages)
    harness.fake.fail_ids(ids[:2], status=429, reason="rateLimitExceeded", times=3)
    harness.fake.fail_ids(ids[2:3], status=503, reason="backendError", times=1)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    settings = harness.settings
    executor = GmailExecutor(2, settings.http_timeout_seconds)
    client = GmailClient(
        settings,
        executor,
        QuotaBucket(harness.res.redis, harness.res.keys, settings.quota_units_per_minute),
        make_credentials(settings, token),
        USER,
        tracer=harness.res.telemetry.tracer,
        metrics=GmailMetrics(),
        sleep=sleep,
        rng=lambda: 0.5,
    )
    try:
        result = await client.fetch_messages(ids)
    finally:
        await asyncio.to_thread(executor.close)

    assert set(result.messages) == set(ids)
    assert result.retried_parts == 3 + 2 + 2
    assert harness.fake.counts["batch"] == 4
    assert harness.fake.counts["batch.parts"] == 20 + 3 + 2 + 2
    base = settings.backoff_base_seconds
    assert slept == [base * 0.5, base * 2 * 0.5, base * 4 * 0.5]
