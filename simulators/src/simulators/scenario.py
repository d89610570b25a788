"""A believable day for the whole system, from a seed: what ``make demo`` shows and what
the end-to-end tests check.

- Outline servers whose keys grow; one key (``spiky``) with a quiet imported history
  that suddenly moves a lot (an anomaly), one (``almost-full``) near its data limit
  (a forecast).
- Proxy nodes writing traffic counters (node 1 has a limit it soon passes).
- Merchants tracking usage (one busy merchant passes 5,000 requests a day).
- Aquarium tanks sending readings; the reef tank warms past 28 °C and cools again.
- A Gmail user whose analytics job is created through the API.

Everything written is added to an :class:`Oracle` only once the write succeeded, so
the final tables can be compared with it.
"""

from __future__ import annotations

import json
import random
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import redis.asyncio as aioredis

from aggregation.tracking import track_usage
from simulators.outline import FakeOutlineServer, OutlineSimulator
from traffic_sync.counters import TrafficKeys, record_traffic
from tributary.keys import Keys

MB = 1_000_000
GB = 1_000_000_000
WEBHOOK = "ops-webhook"
#: the node with a traffic limit, and the limit (passed within the first flushes)
LIMITED_NODE = 1
NODE_LIMIT = 2 * GB
BUSY_MERCHANT = "merchant-busy"
WARM_TANK = "tank-reef"


def rules() -> list[dict[str, Any]]:
    """One rule per kind of fact, all notifying the webhook."""
    common = {"receivers": [WEBHOOK]}
    return [
        {
            "name": "tank too warm",
            "source": "device.readings",
            "metric": "temp",
            "operator": ">",
            "threshold": 28,
            "recovery_threshold": 27.5,
            "for_seconds": 2,
            "severity": "critical",
            "annotations": {"summary": "{{ subject }} at {{ value }} °C"},
            **common,
        },
        {
            "name": "node over 80% of its traffic limit",
            "source": "traffic.flushed",
            "metric": "traffic_used_ratio",
            "operator": ">",
            "threshold": 0.8,
            "severity": "warning",
            **common,
        },
        {
            "name": "merchant above 5000 requests a day",
            "source": "usage.aggregated",
            "metric": "requests",
            "operator": ">",
            "threshold": 5000,
            "severity": "info",
            **common,
        },
        {
            "name": "access key usage anomaly",
            "source": "usage.anomalies",
            "metric": "ratio",
            "operator": ">=",
            "threshold": 2,
            "severity": "warning",
            **common,
        },
        {
            "name": "access key near its data limit",
            "source": "usage.forecasts",
            "metric": "hours_to_limit",
            "operator": "<",
            "threshold": 72,
            "severity": "warning",
            **common,
        },
    ]


def receivers(
    webhook_url: str, credentials: WebhookCredentials | None = None
) -> list[dict[str, Any]]:
    receiver: dict[str, Any] = {"name": WEBHOOK, "kind": "webhook", "url": f"{webhook_url}/alerts"}
    if credentials is not None:
        receiver["hmac_secret"] = credentials.hmac_secret
        receiver["headers"] = {credentials.header: credentials.header_value}
    return [receiver]


@dataclass(frozen=True)
class WebhookCredentials:
    """What the demo's webhook receiver is configured with: an HMAC key its deliveries
    are signed with, and a header value (a token a real receiver might want)."""

    hmac_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    header: str = "X-Receiver-Token"
    header_value: str = field(default_factory=lambda: "rcv-" + secrets.token_hex(16))


@dataclass
class Oracle:
    """What the generators wrote successfully."""

    traffic: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    usage: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    readings: int = 0

    def to_json(self) -> dict[str, Any]:
        """As JSON (usage keyed ``merchant|date|metric``), for a test in another process."""
        return {
            "traffic": {node: list(totals) for node, totals in self.traffic.items()},
            "usage": {"|".join(key): value for key, value in self.usage.items()},
            "readings": self.readings,
        }


@dataclass
class OutlineWorld:
    servers: list[FakeOutlineServer]
    spiky: tuple[FakeOutlineServer, str]
    almost_full: tuple[FakeOutlineServer, str]


class Scenario:
    def __init__(
        self,
        seed: int = 7,
        *,
        prefix: str = "",
        nodes: int = 12,
        merchants: int = 6,
        tanks: tuple[str, ...] = ("tank-reef", "tank-lagoon", "tank-quarantine"),
        warm_every: int = 40,
        warm_for: int = 8,
    ) -> None:
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.nodes = list(range(1, nodes + 1))
        self.merchants = [BUSY_MERCHANT, *(f"merchant-{i}" for i in range(1, merchants))]
        self.tanks = tanks
        self.warm_every, self.warm_for = warm_every, warm_for
        self.oracle = Oracle()
        self.step_no = 0
        self.traffic_keys = TrafficKeys(keys=Keys(prefix=prefix))

    # -- Outline --------------------------------------------------------------------------

    async def outline(self, sim: OutlineSimulator, servers: int = 3, keys: int = 6) -> OutlineWorld:
        made = []
        for i in range(servers):
            server = await sim.add_server(interval_metrics=i % 2 == 0)
            for k in range(keys):
                server.create_key(name=f"user-{i}-{k}", rate=self.rng.uniform(5_000, 40_000))
            made.append(server)
        return self.special_keys(made, sim.clock())

    @staticmethod
    def special_keys(servers: list[FakeOutlineServer], now: float) -> OutlineWorld:
        """The keys the analytics are shown with: ``spiky`` on the first server (quiet
        until :meth:`spike`), ``almost-full`` on the last (900 MB of its 1 GB limit used
        two days ago, within the rolling 30-day window)."""
        spiky = servers[0].create_key(name="spiky", rate=2_000)
        full = servers[-1].create_key(name="almost-full", data_limit=1 * GB, rate=60_000)
        servers[-1].add_traffic(full.id, 900 * MB, at=now - 2 * 86_400)
        return OutlineWorld(servers, (servers[0], spiky.id), (servers[-1], full.id))

    def history(self, server_id: str, key_id: str, hours: int = 48) -> str:
        """JSON lines of a quiet hourly history (about 5 MB an hour) for ``history import``."""
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        lines = []
        for h in range(hours, 1, -1):
            nbytes = int(5 * MB * self.rng.uniform(0.7, 1.3))
            hour = (now - timedelta(hours=h)).isoformat().replace("+00:00", "Z")
            lines.append(json.dumps({"server": server_id, "key_id": key_id, "hour": hour,
                                     "bytes": nbytes}))  # fmt: skip
        return "\n".join(lines) + "\n"

    @staticmethod
    def spike(world: OutlineWorld, nbytes: int = 600 * MB) -> None:
        server, key_id = world.spiky
        server.add_traffic(key_id, nbytes)

    # -- generators -----------------------------------------------------------------------

    def temperature(self, tank: str, step: int) -> float:
        warm = tank == WARM_TANK and step % self.warm_every < self.warm_for
        return round((29.5 if warm else 26.0) + self.rng.random(), 2)

    async def traffic(self, redis: aioredis.Redis) -> None:
        for node in self.nodes:
            up = self.rng.randint(0, 40 * MB)
            down = self.rng.randint(0, 160 * MB)
            if node == LIMITED_NODE:
                up, down = up + 100 * MB, down + 200 * MB
            await record_traffic(redis, node, up, down, keys=self.traffic_keys)
            totals = self.oracle.traffic[str(node)]
            totals[0] += up
            totals[1] += down

    async def usage(self, redis: aioredis.Redis, day: date | None = None) -> None:
        day = day or datetime.now(UTC).date()
        for merchant in self.merchants:
            amount = self.rng.randint(300, 600) if merchant == BUSY_MERCHANT else \
                self.rng.randint(1, 40)  # fmt: skip
            await track_usage(redis, merchant, "requests", amount, day, prefix=self.prefix)
            self.oracle.usage[(merchant, day.isoformat(), "requests")] += amount

    async def readings(self, http: httpx.AsyncClient, alert_url: str, step: int) -> None:
        body = [
            {"device_id": tank, "metric": "temp", "value": self.temperature(tank, step)}
            for tank in self.tanks
        ]
        response = await http.post(f"{alert_url}/readings", json=body, timeout=5)
        response.raise_for_status()
        self.oracle.readings += len(body)

    async def step(self, redis: aioredis.Redis, http: httpx.AsyncClient, alert_url: str) -> None:
        """One tick of every generator. A failed part raises; what succeeded is counted."""
        step = self.step_no
        self.step_no += 1
        await self.traffic(redis)
        await self.usage(redis)
        await self.readings(http, alert_url, step)


async def set_up(
    http: httpx.AsyncClient,
    alert_url: str,
    webhook_url: str,
    credentials: WebhookCredentials | None = None,
) -> None:
    """Receivers and rules in the alert service, once: a receiver's 409 for an existing
    name is fine, and a rule whose name exists is not posted again (a second run of the
    demo's set-up over the same database must not double every alert)."""
    for receiver in receivers(webhook_url, credentials):
        r = await http.post(f"{alert_url}/receivers", json=receiver)
        if r.status_code not in (201, 409):
            r.raise_for_status()
    existing = {rule["name"] for rule in (await http.get(f"{alert_url}/rules")).json()}
    for rule in rules():
        if rule["name"] not in existing:
            (await http.post(f"{alert_url}/rules", json=rule)).raise_for_status()
