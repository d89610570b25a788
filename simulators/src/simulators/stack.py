"""The whole system on one machine: the simulators (Outline servers, Gmail + OAuth, a
webhook receiver), the five services as processes (:mod:`simulators.system`), the
scenario's set-up and its generators. ``make demo`` shows it; the e2e tests drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from simulators.gmail import GmailServer
from simulators.gmail_fake import GmailFake
from simulators.outline import OutlineSimulator
from simulators.outline_quirks import Quirks
from simulators.scenario import (
    LIMITED_NODE,
    NODE_LIMIT,
    OutlineWorld,
    Scenario,
    WebhookCredentials,
    set_up,
)
from simulators.system import LocalSystem, SystemConfig
from simulators.webhook import WebhookSink

log = logging.getLogger("simulators.stack")

GMAIL_USER = "alice"
GMAIL_EMAIL = "alice@example.com"
OAUTH_CLIENT = ("demo-client.apps.example.com", "demo-client-secret")

#: short intervals so that every service shows work within a minute or two
FAST: dict[str, str] = {
    "SNAPSHOT_COLLECT_INTERVAL_SECONDS": "10",
    "SNAPSHOT_ANALYSIS_INTERVAL_SECONDS": "10",
    "SNAPSHOT_MAINTENANCE_INTERVAL_SECONDS": "10",
    "SNAPSHOT_ANOMALY_WINDOW_SECONDS": "300",
    "TRAFFIC_SYNC_INTERVAL_SECONDS": "5",
    "AGGREGATION_INTERVAL_SECONDS": "10",
    "ALERT_TICK_INTERVAL_SECONDS": "1",
    "ALERT_NOTIFY_POLL_SECONDS": "0.5",
}


def secrets_env() -> dict[str, str]:
    """Fresh throwaway keys for a demo or test run (never for real data)."""
    return {
        "SNAPSHOT_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "GMAIL_FETCH_TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        # one token with every scope of every service (name "demo" in the audit log)
        "API_TOKENS": "demo:demo-api-token-" + secrets.token_hex(16) + ":*",
        "GMAIL_FETCH_OAUTH_CLIENT_ID": OAUTH_CLIENT[0],
        "GMAIL_FETCH_OAUTH_CLIENT_SECRET": OAUTH_CLIENT[1],
    }


async def poll(
    what: str, check: Callable[[], Awaitable[bool]], seconds: float, every: float = 0.25
) -> None:
    """Await ``check()`` until true; TimeoutError naming ``what`` at the deadline."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {seconds:.0f}s")
        await asyncio.sleep(every)


@dataclass
class Stack:
    config: SystemConfig
    scenario: Scenario = field(default_factory=Scenario)
    gmail_messages: int = 300
    secrets: dict[str, str] = field(default_factory=secrets_env)
    webhook_credentials: WebhookCredentials = field(default_factory=WebhookCredentials)
    #: the real Outline server's quirks the fake servers reproduce (demo: --outline-quirks)
    outline_quirks: Quirks = field(default_factory=Quirks)
    outline_sim: OutlineSimulator = field(init=False)
    gmail: GmailServer = field(init=False)
    webhook: WebhookSink = field(init=False)
    system: LocalSystem = field(init=False)
    world: OutlineWorld = field(init=False)
    redis: aioredis.Redis = field(init=False)
    http: httpx.AsyncClient = field(init=False)
    server_ids: list[str] = field(default_factory=list)
    job_id: str | None = None
    refresh_token: str = ""
    #: held for the whole of each generator step: whoever holds it knows no write is
    #: in flight (a step cut short could have written more than the oracle counted)
    _writing: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _stop_generating: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Simulators up, services migrated, started and ready, demo data registered."""
        # every service API wants the token; this client talks to nothing else
        self.http = httpx.AsyncClient(
            timeout=10, headers={"Authorization": f"Bearer {self.api_token}"}
        )
        self.redis = aioredis.Redis.from_url(self.config.redis_url)
        self.webhook = WebhookSink().start()
        fake = GmailFake(client_id=OAUTH_CLIENT[0], client_secret=OAUTH_CLIENT[1])
        self.refresh_token = fake.add_user(GMAIL_EMAIL, self.gmail_messages)
        self.gmail = GmailServer(fake).start()
        self.outline_sim = OutlineSimulator(servers=0, seed=self.scenario.rng.randint(0, 1 << 30))
        await self.outline_sim.start()
        self.world = await self.scenario.outline(self.outline_sim)
        for server in self.outline_sim.servers:
            server.quirks = dataclasses.replace(self.outline_quirks)

        cfg = self.config
        cfg.env = {
            **FAST,
            **self.secrets,
            "GMAIL_FETCH_API_ENDPOINT": f"{self.gmail.url}/",
            "GMAIL_FETCH_TOKEN_URI": self.gmail.token_uri,
            **cfg.env,
        }
        self.system = LocalSystem(cfg)
        await asyncio.to_thread(self.system.migrate)
        self.system.start_all()
        await asyncio.to_thread(self.system.wait_ready)
        await self.register()

    async def stop(self) -> dict[str, int]:
        """Stop whatever :meth:`start` got to; the services' exit codes."""
        started = vars(self)
        codes = await asyncio.to_thread(self.system.stop_all) if "system" in started else {}
        if "outline_sim" in started:
            await self.outline_sim.stop()
        if "gmail" in started:
            self.gmail.stop()
        if "webhook" in started:
            self.webhook.stop()
        if "redis" in started:
            await self.redis.aclose()
        if "http" in started:
            await self.http.aclose()
        return codes

    # -- set-up ---------------------------------------------------------------------------

    def url(self, service: str) -> str:
        return self.system.url(service)

    @property
    def api_token(self) -> str:
        """The bearer token of API_TOKENS (entries are name:token:scopes)."""
        return self.secrets["API_TOKENS"].split(",")[0].split(":")[1]

    def secret_values(self) -> dict[str, str]:
        """Every secret this stack gave the services, by what it is: none of them may
        appear in a log line, a metric, an API response or a dead letter."""
        found = {
            "API token": self.api_token,
            "OAuth refresh token": self.refresh_token,
            "OAuth client secret": self.secrets["GMAIL_FETCH_OAUTH_CLIENT_SECRET"],
            "snapshot encryption key": self.secrets["SNAPSHOT_ENCRYPTION_KEY"],
            "gmail token encryption key": self.secrets["GMAIL_FETCH_TOKEN_ENCRYPTION_KEYS"],
            "webhook HMAC key": self.webhook_credentials.hmac_secret,
            "webhook header value": self.webhook_credentials.header_value,
        }
        for server in self.world.servers:
            found[f"Outline secret path of {server.name}"] = server.secret
        return found

    async def register(self) -> None:
        await set_up(self.http, self.url("alert"), self.webhook.url, self.webhook_credentials)
        r = await self.http.put(
            f"{self.url('traffic_sync')}/nodes/{LIMITED_NODE}/limit",
            json={"limit_bytes": NODE_LIMIT},
        )
        r.raise_for_status()
        for server in self.world.servers:
            body = {**server.registration(), "name": server.name}
            r = await self.http.post(f"{self.url('snapshot')}/servers", json=body)
            if r.status_code == 409:  # registered by an earlier run
                self.server_ids.append(r.json()["message"].rsplit(" ", 1)[-1])
                continue
            r.raise_for_status()
            self.server_ids.append(r.json()["id"])
        await asyncio.to_thread(
            self.system.cli,
            "gmail_fetch", "accounts", "add", GMAIL_USER, GMAIL_EMAIL,
            extra_env={"GMAIL_FETCH_REFRESH_TOKEN": self.refresh_token},
        )  # fmt: skip
        job = await self.http.post(
            f"{self.url('gmail_fetch')}/api/analytics/jobs",
            json={"user_id": GMAIL_USER},
            headers={"Authorization": f"Bearer {self.api_token}"},
        )
        job.raise_for_status()
        self.job_id = job.json()["id"]

    async def import_spiky_history(self, seconds: float = 120) -> None:
        """Once snapshot knows the spiky key, give it two quiet days of hourly history."""
        server_id = self.server_ids[0]

        async def collected() -> bool:
            r = await self.http.get(f"{self.url('snapshot')}/servers/{server_id}")
            return r.status_code == 200 and r.json().get("last_success_at") is not None

        await poll("first collection of the spiky key's server", collected, seconds)
        _, key_id = self.world.spiky
        await asyncio.to_thread(
            self.system.cli, "snapshot", "history", "import", "-",
            stdin=self.scenario.history(server_id, key_id),
        )  # fmt: skip

    # -- generators -----------------------------------------------------------------------

    async def generate(
        self, steps: int | None = None, every: float = 2.0, spike_at: int | None = 30
    ) -> None:
        """Run the scenario's generators until :meth:`stop_generating` (or ``steps``).

        A failed step is logged and the next tick goes on. Steps are never cut short:
        stopping and :meth:`writes_paused` wait for the step in progress, so that
        everything written is in the oracle and nothing the oracle holds is unwritten.
        """
        done = 0
        try:
            while (steps is None or done < steps) and not self._stop_generating.is_set():
                started = time.monotonic()
                async with self._writing:
                    await self._step()
                if spike_at is not None and self.scenario.step_no == spike_at:
                    Scenario.spike(self.world)
                done += 1
                pause = max(0.0, every - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_generating.wait(), pause)
        finally:
            # cleared on the way out, not on the way in: a stop asked for before the
            # first step must not be lost
            self._stop_generating.clear()

    async def _step(self) -> None:
        try:
            await self.scenario.step(self.redis, self.http, self.url("alert"))
        except (OSError, httpx.HTTPError, aioredis.RedisError) as exc:
            log.warning("generator step failed: %s", exc)
        except Exception:
            log.exception("generator step failed")
            raise

    def stop_generating(self) -> None:
        """Ask :meth:`generate` to return after the step in progress."""
        self._stop_generating.set()

    @contextlib.asynccontextmanager
    async def writes_paused(self) -> AsyncIterator[None]:
        """No generator step runs inside this block (the one in progress finishes first)."""
        async with self._writing:
            yield

    async def gmail_job(self) -> dict[str, Any]:
        r = await self.http.get(
            f"{self.url('gmail_fetch')}/api/analytics/jobs/{self.job_id}",
            headers={"Authorization": f"Bearer {self.api_token}"},
        )
        r.raise_for_status()
        result: dict[str, Any] = r.json()
        return result
