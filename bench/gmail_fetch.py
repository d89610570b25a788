"""gmail_fetch: a 500-message job against the fake Gmail with 100 ms per HTTP request,
then a second job on the unchanged mailbox.

The worker it replaces fetched 25 batches of 20 at ~2 s a batch (~50 s, 26+ requests).
Targets: first job <= 15 HTTP requests and <= 5 s; second job <= 2 requests, 0 messages.get.

Prints one JSON object per job and, last, the summary line:
{"messages": ..., "first_requests": ..., "first_seconds": ..., "second_requests": ...,
 "second_message_gets": ...}

Env: REDIS_URL, DATABASE_URL (defaults: the local services), BENCH_MESSAGES (500),
BENCH_LATENCY_MS (100). Runs in a throwaway PostgreSQL schema and Redis key prefix.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Any

import sqlalchemy as sa

from services.gmail_fetch.tests.harness import Harness, close_harness, make_settings, open_harness
from simulators.gmail import GmailServer
from tributary.keys import Keys
from tributary_testing.infra import delete_prefix

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "500"))
LATENCY_MS = float(os.environ.get("BENCH_LATENCY_MS", "100"))


async def timed_job(harness: Harness, label: str) -> dict[str, Any]:
    harness.fake.reset_counts()
    started = time.perf_counter()
    job = await harness.create_job(max_results=MESSAGES)
    await harness.drain()
    seconds = time.perf_counter() - started
    job = await harness.job(job["id"])
    counts = harness.fake.counts
    result = {
        "job": label,
        "status": job["status"],
        "sync_mode": job["sync_mode"],
        "messages": job["total"],
        "fetched": job["fetched"],
        "cached": job["cached"],
        "seconds": round(seconds, 3),
        "http_requests": counts["http"],
        "token_requests": counts["token"],
        "batch_requests": counts["batch"],
        "message_gets": counts["messages.get"],
    }
    print(json.dumps(result), flush=True)
    return result


async def main() -> None:
    schema = f"bench_gmail_{uuid.uuid4().hex[:8]}"
    keys = Keys(f"bench:{uuid.uuid4().hex[:8]}:")
    with GmailServer() as gmail:
        gmail.fake.latency = LATENCY_MS / 1000
        settings = make_settings(gmail, REDIS_URL, DATABASE_URL, schema, keys)
        harness = await open_harness(settings, gmail)
        try:
            harness.add_user(MESSAGES)
            first = await timed_job(harness, "first")
            second = await timed_job(harness, "second")
        finally:
            await close_harness(harness)
            engine = sa.create_engine(DATABASE_URL)
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            engine.dispose()
            delete_prefix(REDIS_URL, keys.prefix)
    summary = {
        "messages": first["messages"],
        "first_requests": first["http_requests"],
        "first_seconds": first["seconds"],
        "second_requests": second["http_requests"],
        "second_message_gets": second["message_gets"],
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
