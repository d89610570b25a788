"""Test support for gmail_fetch: the service built in-process on the real Redis and
PostgreSQL against the fake Gmail (``simulators.gmail``) over real HTTP. Used by the
service's tests and by ``bench/gmail_fetch.py`` (as ``services.gmail_fetch.tests.harness``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from cryptography.fernet import Fernet

from gmail_fetch import repository as repo
from gmail_fetch.config import GmailFetchSettings
from gmail_fetch.crypto import TokenCipher
from gmail_fetch.models import message_cache
from gmail_fetch.service import SERVICE, GmailFetch
from simulators.gmail import GmailFake, GmailServer
from tributary import catalog
from tributary.config import load_settings
from tributary.http import create_app
from tributary.keys import Keys
from tributary.service import Components, Resources, close_resources, migrate, open_resources
from tributary.web.access import ApiAccess
from tributary_testing.auth import API_TOKENS, TOKEN

#: the bearer token the harness's API accepts
API_TOKEN = TOKEN
USER = "user-1"
EMAIL = "alice@example.com"


def make_settings(
    gmail: GmailServer, redis_url: str, postgres_url: str, schema: str, keys: Keys, **extra: Any
) -> GmailFetchSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": postgres_url,
        "stream_prefix": keys.prefix,
        "http_port": 0,
        "db_schema": schema,
        "api_endpoint": gmail.url + "/",
        "token_uri": gmail.token_uri,
        "oauth_client_id": "test-client",
        "oauth_client_secret": "test-secret",
        "token_encryption_keys": Fernet.generate_key().decode(),
        "api_tokens": API_TOKENS,
        "backoff_base_seconds": 0.005,
        "backoff_max_seconds": 0.05,
        "job_retry_base_seconds": 0.05,
        "claim_idle_seconds": 5,
    }
    values.update(extra)
    return load_settings(GmailFetchSettings, **values)


@dataclass
class Harness:
    res: Resources[GmailFetchSettings]
    parts: Components[GmailFetch]
    settings: GmailFetchSettings
    gmail: GmailServer
    http: httpx.AsyncClient

    @property
    def fake(self) -> GmailFake:
        return self.gmail.fake

    async def drain(self) -> None:
        """Run every queued job to its end, then publish the outbox."""
        await self.res.relay.relay_once()
        for runner in self.parts.runners:
            await runner.drain(timeout=60)
        while await self.res.relay.relay_once():
            pass

    def add_account(self, user_id: str = USER, email: str = EMAIL, token: str = "") -> None:
        cipher = TokenCipher(self.settings.encryption_keys())
        with self.res.sessions.begin() as session:
            repo.upsert_account(session, user_id, email, cipher.encrypt(token))

    def add_user(self, messages: int, user_id: str = USER, email: str = EMAIL, **kw: Any) -> str:
        token: str = self.fake.add_user(email, messages, **kw)
        self.add_account(user_id, email, token)
        return token

    async def create_job(self, user_id: str = USER, **body: Any) -> dict[str, Any]:
        reply = await self.http.post(
            "/api/analytics/jobs",
            json={"user_id": user_id, **body},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        assert reply.status_code == 202, reply.text
        job: dict[str, Any] = reply.json()
        return job

    async def job(self, job_id: str) -> dict[str, Any]:
        reply = await self.http.get(
            f"/api/analytics/jobs/{job_id}", headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        assert reply.status_code == 200, reply.text
        job: dict[str, Any] = reply.json()
        return job

    async def run_job(self, **body: Any) -> dict[str, Any]:
        job = await self.create_job(**body)
        await self.drain()
        return await self.job(job["id"])

    async def events(self, job_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(type, payload) of every gmail.job-events entry, oldest first."""
        key = self.res.keys.stream(catalog.GMAIL_JOB_EVENTS)
        entries: list[tuple[str, dict[str, str]]] = await self.res.redis.xrange(key)  # type: ignore[assignment]
        found = [(f["type"], json.loads(f["data"])) for _, f in entries]
        return [e for e in found if job_id is None or e[1]["job_id"] == job_id]

    def cached(self, user_id: str = USER) -> dict[str, dict[str, Any]]:
        with self.res.engine.connect() as conn:
            rows = conn.execute(sa.select(message_cache).where(message_cache.c.user_id == user_id))
            return {r.message_id: dict(r._mapping) for r in rows}


async def open_harness(settings: GmailFetchSettings, gmail: GmailServer) -> Harness:
    service = SERVICE.configured(settings)
    res = await open_resources(service, settings)
    await asyncio.to_thread(migrate, service, res.engine)
    parts = service.build(res)
    for runner in parts.runners:
        # drain() ends after a read that blocked in vain: keep that short in tests
        runner.options = dataclasses.replace(runner.options, block_ms=50)
    app = create_app(
        service.name, res.metrics, (), parts.routers, access=ApiAccess.from_settings(settings)
    )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gmail-fetch")
    return Harness(res, parts, settings, gmail, http)


async def close_harness(harness: Harness) -> None:
    await harness.http.aclose()
    for hook in harness.parts.release:
        await hook()
    await close_resources(harness.res)
