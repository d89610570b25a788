"""Real processes: a replica SIGKILLed mid-job, another one finishing it; the CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from gmail_fetch.config import GmailFetchSettings
from tributary_testing.process import ServiceProcesses, service_env
from tributary_testing.waiting import await_until

from .harness import EMAIL, Harness


@pytest.fixture
def procs(settings: GmailFetchSettings, pg_schema: str) -> Iterator[ServiceProcesses]:
    env = service_env(
        redis_url=settings.redis_url.get_secret_value(),
        database_url=settings.database_url.get_secret_value(),
        stream_prefix=settings.stream_prefix,
        drop_prefixes=("GMAIL_FETCH_",),
        LOG_LEVEL="INFO",
        DB_SCHEMA=pg_schema,
        GMAIL_FETCH_API_ENDPOINT=settings.api_endpoint,
        GMAIL_FETCH_TOKEN_URI=settings.token_uri,
        GMAIL_FETCH_OAUTH_CLIENT_ID=settings.oauth_client_id,
        GMAIL_FETCH_OAUTH_CLIENT_SECRET=settings.oauth_client_secret.get_secret_value(),
        GMAIL_FETCH_TOKEN_ENCRYPTION_KEYS=settings.token_encryption_keys.get_secret_value(),
        API_TOKENS=settings.api_tokens.get_secret_value(),
        GMAIL_FETCH_CLAIM_IDLE_SECONDS="2",
        GMAIL_FETCH_BATCHES_IN_FLIGHT="1",
    )
    procs = ServiceProcesses("gmail_fetch", env)
    yield procs
    procs.close()


async def wait_for(
    harness: Harness,
    job_id: str,
    proc: subprocess.Popen[bytes],
    check: Callable[[dict[str, object]], bool],
) -> dict[str, object]:
    """The job once ``check`` holds for it (fails at once if ``proc`` dies)."""
    seen: list[dict[str, object]] = []

    async def there() -> bool:
        seen.append(await harness.job(job_id))
        return check(seen[-1])

    await await_until(there, proc=proc, what=lambda: f"job {seen[-1]}", poll=0.05)
    return seen[-1]


@pytest.mark.slow
async def test_a_job_whose_worker_is_killed_is_finished_by_another_replica(
    harness: Harness, procs: ServiceProcesses
) -> None:
    harness.add_user(500)
    harness.fake.latency = 0.15
    job = await harness.create_job(max_results=500)
    await harness.res.relay.relay_once()

    first = procs.start("run", CONSUMER_NAME="replica-a")
    await wait_for(harness, job["id"], first, lambda j: int(str(j["progress"])) >= 100)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    cached_before = set(harness.cached())
    fetched_before = len(harness.fake.fetched_ids)
    assert 100 <= len(cached_before) < 500

    second = procs.start("run", CONSUMER_NAME="replica-b")
    done = await wait_for(harness, job["id"], second, lambda j: j["status"] == "completed")

    assert done["attempts"] == 2
    assert set(harness.cached()) == set(harness.fake.mailbox(EMAIL).messages)
    refetched = set(harness.fake.fetched_ids[fetched_before:]) & cached_before
    assert not refetched, "the second replica fetched messages the first had cached"

    async def completed() -> list[str]:
        return [t for t, _ in await harness.events(job["id"]) if t == "gmail.job.completed"]

    # the event follows the job's commit through the outbox: the relay may not have run yet
    async def published() -> bool:
        return bool(await completed())

    await await_until(published, proc=second, what="gmail.job.completed published")
    assert await completed() == ["gmail.job.completed"]
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    assert "ya29." not in second.communicate()[1].decode()


async def test_cli_adds_an_account_and_creates_and_shows_a_job(
    harness: Harness, procs: ServiceProcesses
) -> None:
    token = harness.fake.add_user("bob@example.com", 3)
    # the token on standard input (ServiceProcesses gives its processes none)
    added = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gmail_fetch", "accounts", "add", "bob", "bob@example.com"],
        env=procs.env,
        input=token.encode() + b"\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr.decode()
    assert token not in added.stdout.decode() + added.stderr.decode()

    proc = procs.start("jobs", "create", "bob", "--max-results", "3")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    job_id = json.loads(out)["id"]
    await harness.drain()
    proc = procs.start("jobs", "show", job_id)
    out, err = proc.communicate(timeout=60)
    shown = json.loads(out)
    assert shown["status"] == "completed"
    assert shown["total"] == 3
