"""What gmail_fetch's own verbs do; declared, with their arguments, in :mod:`gmail_fetch.cli`."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys

from sqlalchemy.engine import Engine

from gmail_fetch import repository as repo
from gmail_fetch.cli import REFRESH_TOKEN_ENV
from gmail_fetch.config import GmailFetchSettings
from gmail_fetch.crypto import TokenCipher
from gmail_fetch.repository import Job
from gmail_fetch.service import GmailFetch
from tributary import redis_client
from tributary.cli import Invocation
from tributary.db import DEFAULT_DB_WAIT_SECONDS, make_sessionmaker
from tributary.keys import Keys
from tributary.outbox import OutboxRelay

GmailInvocation = Invocation[GmailFetchSettings, GmailFetch]


def _read_refresh_token() -> str:
    token = os.environ.get(REFRESH_TOKEN_ENV, "")
    if not token:
        token = getpass.getpass("refresh token: ") if sys.stdin.isatty() else sys.stdin.readline()
    return token.strip()


def _job_json(job: Job) -> str:
    return json.dumps(job.public(), default=str)


def accounts(inv: GmailInvocation) -> int:
    settings, args = inv.settings, inv.args
    token = _read_refresh_token()
    if not token:
        print(f"no refresh token: set {REFRESH_TOKEN_ENV} or pipe it on stdin", file=sys.stderr)
        return 2
    encrypted = TokenCipher(settings.encryption_keys()).encrypt(token)
    with (
        inv.sessions(wait_s=DEFAULT_DB_WAIT_SECONDS, migrate_first=True) as sessions,
        sessions.begin() as session,
    ):
        new = repo.upsert_account(session, args.user_id, args.email, encrypted)
    print(json.dumps({"user_id": args.user_id, "email": args.email, "added": new}))
    return 0


async def _publish(settings: GmailFetchSettings, engine: Engine) -> None:
    """Send the job's event now rather than at the running service's next relay poll."""
    redis = redis_client.connect(redis_client.RedisTarget.of(settings))
    relay = OutboxRelay(engine, redis, Keys(settings.stream_prefix))
    try:
        while await relay.relay_once():
            pass
    finally:
        relay.close()
        await redis.aclose()


def jobs(inv: GmailInvocation) -> int:
    settings, args = inv.settings, inv.args
    with inv.database(wait_s=DEFAULT_DB_WAIT_SECONDS) as engine:
        sessions = make_sessionmaker(engine)
        if args.action == "show":
            with sessions() as session:
                job = repo.get_job(session, args.job_id)
            if job is None:
                print(f"job {args.job_id} not found", file=sys.stderr)
                return 1
            print(_job_json(job))
            return 0
        max_results = args.max_results or settings.default_max_results
        if not 1 <= max_results <= settings.max_results_cap:
            print(f"--max-results must be 1..{settings.max_results_cap}", file=sys.stderr)
            return 2
        with sessions.begin() as session:
            if repo.get_account(session, args.user_id) is None:
                print(f"no Gmail account for user {args.user_id}", file=sys.stderr)
                return 1
            job = repo.create_job(session, args.user_id, "fetch_messages", max_results, None)
        asyncio.run(_publish(settings, engine))
        print(_job_json(job))
        return 0
