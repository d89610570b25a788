"""One fake Outline server: keys, rolling-window traffic, certificate, secret path, and the
management API's answers in the real wire format (served by :mod:`simulators.outline`)."""

from __future__ import annotations

import random
import re
import secrets
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from simulators.outline_tls import ServerCertificate, make_certificate

Clock = Callable[[], float]

#: the rolling window of /metrics/transfer and of data limits, in seconds
WINDOW_SECONDS = 30 * 86400
_SINCE = re.compile(r"^(\d+)([shdw])$")
_UNIT_SECONDS = {"s": 1, "h": 3600, "d": 86400, "w": 7 * 86400}


class ManualClock:
    """A clock tests move by hand (seconds since the epoch)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Usage:
    """Traffic recorded under one key id: (time, bytes), oldest first, with its sum."""

    events: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def add(self, at: float, nbytes: int) -> None:
        self.events.append((at, nbytes))
        self.total += nbytes

    def window(self, now: float) -> int:
        while self.events and self.events[0][0] <= now - WINDOW_SECONDS:
            self.total -= self.events.popleft()[1]
        return self.total

    def since(self, now: float, seconds: float) -> int:
        total = 0
        for at, nbytes in reversed(self.events):
            if at <= now - seconds:
                break
            total += nbytes
        return total


@dataclass
class FakeKey:
    id: str
    name: str
    data_limit: int | None = None
    #: mean bytes per second of automatic traffic (0: only what tests add)
    rate: float = 0.0
    generated_until: float = 0.0

    def as_json(self, host: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "password": "x" * 22,
            "port": 443,
            "method": "chacha20-ietf-poly1305",
            "accessUrl": f"ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTp4eHh4@{host}:443/?outline=1",
        }
        if self.data_limit is not None:
            body["dataLimit"] = {"bytes": self.data_limit}
        return body


class FakeOutlineServer:
    """One fake Outline server: keys, traffic, certificate, secret path, failure knobs."""

    def __init__(
        self,
        index: int,
        clock: Clock,
        rng: random.Random,
        *,
        host: str = "127.0.0.1",
        interval_metrics: bool = True,
        latency: float = 0.0,
        error_rate: float = 0.0,
    ) -> None:
        self.index, self.clock, self.rng, self.host = index, clock, rng, host
        self.name = f"Outline Server {index}"
        self.server_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.secret = secrets.token_urlsafe(16)
        self.certificate: ServerCertificate = make_certificate(host)
        self.interval_metrics = interval_metrics
        self.latency, self.error_rate = latency, error_rate
        #: probability, per /access-keys request, that one key is deleted and one created
        self.churn_rate = 0.0
        #: probability, per /metrics/transfer request, that all metrics are lost
        self.reset_rate = 0.0
        self.down = False
        self.access_key_data_limit: int | None = None
        self.keys: dict[str, FakeKey] = {}
        self.usage: dict[str, Usage] = {}
        self.next_key_id = 0
        self.port = 0
        self.requests = 0
        self.context: Any = None  # ssl.SSLContext once listening
        #: closes this server's open connections (set by the simulator)
        self.drop_connections: Callable[[], None] = lambda: None

    # -- what tests and the demo change --------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"https://{self.host}:{self.port}/{self.secret}"

    def registration(self) -> dict[str, str]:
        """What the Outline Manager shows: ``{"apiUrl": ..., "certSha256": ...}``."""
        return {"name": self.name, "apiUrl": self.api_url, "certSha256": self.certificate.sha256}

    def create_key(
        self,
        name: str | None = None,
        data_limit: int | None = None,
        rate: float = 0.0,
        key_id: str | None = None,
    ) -> FakeKey:
        if key_id is None:
            key_id = str(self.next_key_id)
            self.next_key_id += 1
        key = FakeKey(key_id, name or f"key-{key_id}", data_limit, rate, self.clock())
        self.keys[key_id] = key
        return key

    def delete_key(self, key_id: str) -> None:
        self.keys.pop(key_id, None)

    def add_traffic(self, key_id: str, nbytes: int, at: float | None = None) -> None:
        self.usage.setdefault(key_id, Usage()).add(self.clock() if at is None else at, nbytes)

    def reset_metrics(self) -> None:
        """All recorded traffic is lost (a restart without persistent metrics)."""
        self.usage.clear()

    def rotate_certificate(self) -> None:
        """A new key pair and certificate (and a restart that drops every connection):
        pinned clients must refuse the server now."""
        self.certificate = make_certificate(self.host)
        if self.context is not None:
            self._load_certificate(self.context)
        self.drop_connections()

    def _load_certificate(self, context: Any) -> None:
        # a context already bound to the listener serves the new chain to new handshakes
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "cert.pem"
            path.write_bytes(self.certificate.cert_pem + self.certificate.key_pem)
            context.load_cert_chain(path)

    # -- views --------------------------------------------------------------------------

    def _generate(self, now: float) -> None:
        for key in self.keys.values():
            if key.rate > 0 and now > key.generated_until:
                spent = now - key.generated_until
                nbytes = int(key.rate * spent * self.rng.uniform(0.5, 1.5))
                if nbytes:
                    self.add_traffic(key.id, nbytes, now)
            key.generated_until = max(key.generated_until, now)

    def transfer(self) -> dict[str, int]:
        now = self.clock()
        self._generate(now)
        return {k: total for k, u in self.usage.items() if (total := u.window(now)) > 0}

    def interval(self, seconds: float) -> dict[str, int]:
        now = self.clock()
        self._generate(now)
        return {k: total for k, u in self.usage.items() if (total := u.since(now, seconds)) > 0}

    # -- the API ------------------------------------------------------------------------

    def handle(self, method: str, endpoint: str, query: str) -> tuple[int, Any]:
        """(status, JSON body) of one request to ``/<secret><endpoint>``."""
        route = (method, endpoint)
        if route == ("GET", "/server"):
            return 200, self._server_json()
        if route == ("GET", "/access-keys"):
            self._maybe_churn()
            return 200, {"accessKeys": [k.as_json(self.host) for k in self.keys.values()]}
        if route == ("POST", "/access-keys"):
            return 201, self.create_key().as_json(self.host)
        if method == "DELETE" and endpoint.startswith("/access-keys/"):
            key_id = endpoint.removeprefix("/access-keys/")
            if key_id not in self.keys:
                return 404, {"code": "NotFoundError", "message": f"No access key {key_id}"}
            self.delete_key(key_id)
            return 204, None
        if route == ("GET", "/metrics/transfer"):
            if self.reset_rate and self.rng.random() < self.reset_rate:
                self.reset_metrics()
            return 200, {"bytesTransferredByUserId": self.transfer()}
        if route == ("GET", "/experimental/server/metrics") and self.interval_metrics:
            return self._experimental(query)
        return 404, {"code": "NotFoundError", "message": "not found"}

    def _server_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "serverId": self.server_id,
            "metricsEnabled": True,
            "createdTimestampMs": 1_700_000_000_000,
            "version": "1.9.2",
            "portForNewAccessKeys": 443,
            "hostnameForAccessKeys": self.host,
        }
        if self.access_key_data_limit is not None:
            body["accessKeyDataLimit"] = {"bytes": self.access_key_data_limit}
        return body

    def _experimental(self, query: str) -> tuple[int, Any]:
        since = parse_qs(query).get("since", [""])[0]
        match = _SINCE.match(since)
        if not match:
            message = "since must be a duration like 30s, 2h, 1d or 1w"
            return 400, {"code": "InvalidArgument", "message": message}
        seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
        usage = self.interval(seconds)
        now = self.clock()
        keys = [
            {
                "accessKeyId": int(k) if k.isdigit() else k,
                "tunnelTime": {"seconds": 0},
                "dataTransferred": {"bytes": b},
                "connection": {"lastTrafficSeen": int(now), "peakDeviceCount": {"data": 1}},
            }
            for k, b in usage.items()
        ]
        server = {
            "tunnelTime": {"seconds": 0},
            "dataTransferred": {"bytes": sum(usage.values())},
            "bandwidth": {"current": {"data": {"bytes": 0}, "timestamp": int(now)}},
            "locations": [],
        }
        return 200, {"server": server, "accessKeys": keys}

    def _maybe_churn(self) -> None:
        if self.churn_rate and self.keys and self.rng.random() < self.churn_rate:
            victim = self.rng.choice(sorted(self.keys))
            rate = self.keys[victim].rate
            self.delete_key(victim)
            self.create_key(rate=rate)
