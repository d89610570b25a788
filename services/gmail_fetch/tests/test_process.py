"""Real processes: a replica SIGKILLed mid-job, another one finishing it; the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from gmail_fetch.config import GmailFetchSettings
from gmail_fetch.testing import EMAIL, Harness

Launch = Callable[..., subprocess.Popen[bytes]]


def service_env(settings: GmailFetchSettings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GMAIL_FETCH_", "OTEL_"))}
    env.update(
        REDIS_URL=settings.redis_url.get_secret_value(),
        DATABASE_URL=settings.database_url.get_secret_value(),
        STREAM_PREFIX=settings.stream_prefix,
        HTTP_PORT="0",
        LOG_LEVEL="INFO",
        SHUTDOWN_TIMEOUT_SECONDS="10",
        GMAIL_FETCH_DB_SCHEMA=settings.db_schema,
        GMAIL_FETCH_API_ENDPOINT=settings.api_endpoint,
        GMAIL_FETCH_TOKEN_URI=settings.token_uri,
        GMAIL_FETCH_OAUTH_CLIENT_ID=settings.oauth_client_id,
        GMAIL_FETCH_OAUTH_CLIENT_SECRET=settings.oauth_client_secret.get_secret_value(),
        GMAIL_FETCH_TOKEN_ENCRYPTION_KEYS=settings.token_encryption_keys.get_secret_value(),
        GMAIL_FETCH_API_TOKENS=settings.api_tokens.get_secret_value(),
        GMAIL_FETCH_CLAIM_IDLE_SECONDS="2",
        GMAIL_FETCH_BATCHES_IN_FLIGHT="1",
    )
    env.update(extra)
    return env


@pytest.fixture
def launch(settings: GmailFetchSettings) -> Iterator[Launch]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **extra: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gmail_fetch", *args],
            env=service_env(settings, **extra),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


async def wait_for(
    harness: Harness,
    job_id: str,
    proc: subprocess.Popen[bytes],
    check: Callable[[dict[str, object]], bool],
) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while True:
        job = await harness.job(job_id)
        if check(job):
            return job
        if proc.poll() is not None:
            pytest.fail(
                f"worker exited with {proc.returncode}: {proc.communicate()[1].decode()[-3000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"job did not get there in time: {job}")
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_job_whose_worker_is_killed_is_finished_by_another_replica(
    harness: Harness, launch: Launch
) -> None:
    harness.add_user(500)
    harness.fake.latency = 0.15
    job = await harness.create_job(max_results=500)
    await harness.res.relay.relay_once()

    first = launch("run", CONSUMER_NAME="replica-a")
    await wait_for(harness, job["id"], first, lambda j: int(str(j["progress"])) >= 100)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    cached_before = set(harness.cached())
    fetched_before = len(harness.fake.fetched_ids)
    assert 100 <= len(cached_before) < 500

    second = launch("run", CONSUMER_NAME="replica-b")
    done = await wait_for(harness, job["id"], second, lambda j: j["status"] == "completed")

    assert done["attempts"] == 2
    assert set(harness.cached()) == set(harness.fake.mailbox(EMAIL).messages)
    refetched = set(harness.fake.fetched_ids[fetched_before:]) & cached_before
    assert not refetched, "the second replica fetched messages the first had cached"
    completed = [t for t, _ in await harness.events(job["id"]) if t == "gmail.job.completed"]
    assert completed == ["gmail.job.completed"]
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    assert "ya29." not in second.communicate()[1].decode()


async def test_cli_adds_an_account_and_creates_and_shows_a_job(
    harness: Harness, launch: Launch
) -> None:
    token = harness.fake.add_user("bob@example.com", 3)
    proc = launch("accounts", "add", "bob", "bob@example.com")
    out, err = proc.communicate(token.encode() + b"\n", timeout=60)
    assert proc.returncode == 0, err.decode()
    assert token not in out.decode() + err.decode()

    proc = launch("jobs", "create", "bob", "--max-results", "3")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    job_id = json.loads(out)["id"]
    await harness.drain()
    proc = launch("jobs", "show", job_id)
    out, err = proc.communicate(timeout=60)
    shown = json.loads(out)
    assert shown["status"] == "completed"
    assert shown["total"] == 3
