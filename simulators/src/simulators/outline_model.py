"""One fake Outline server: keys, rolling-window traffic, certificate, secret path, and the
management API's answers in the real wire format (served by :mod:`simulators.outline`)."""

from __future__ import annotations

import math
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

from simulators.outline_quirks import QueryCache, Quirks, parse_int
from simulators.outline_tls import ServerCertificate, make_certificate

Clock = Callable[[], float]

#: the rolling window of /metrics/transfer and of data limits, in seconds
WINDOW_SECONDS = 30 * 86400
_UNIT_SECONDS = {"s": 1, "h": 3600, "d": 86400, "w": 7 * 86400}
_JS_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


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
        return self.between(now - seconds, now)

    def between(self, lo: float, hi: float) -> int:
        """Bytes of (lo, hi]."""
        total = 0
        for at, nbytes in reversed(self.events):
            if at <= lo:
                break
            if at <= hi:
                total += nbytes
        return total


def error(status: int, code: str, message: str = "") -> tuple[int, dict[str, str]]:
    """A restify error as the real server sends it: ``{"code", "message"}``, the code
    being the error class without ``Error`` (``NotFound``, ``InvalidArgument``...)."""
    return status, {"code": code, "message": message}


def js_number(text: str) -> float | None:
    """JavaScript's ``Number(text)`` for the decimal forms (None: NaN); "" is 0."""
    if not text.strip():
        return 0.0
    return float(text) if _JS_NUMBER.fullmatch(text) else None


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
        #: the real server's quirks this fake reproduces (see simulators.outline_quirks)
        self.quirks = Quirks()
        self._cache = QueryCache()
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
        """/metrics/transfer: 0-byte keys left out, unlabelled traffic under ``""``."""
        now = self.clock()
        self._generate(now)
        usage = {k: total for k, u in self.usage.items() if (total := u.window(now)) > 0}
        if self.quirks.unlabelled_bytes:
            usage[""] = self.quirks.unlabelled_bytes
        return usage

    def interval(self, seconds: float) -> dict[str, int]:
        """Bytes per key id over the last ``seconds``, as Prometheus sees them: with
        ``scrape_seconds``, only between the first and last scrape inside the range."""
        now = self.clock()
        self._generate(now)
        lo, hi = now - seconds, now
        scrape = self.quirks.scrape_seconds
        if scrape:
            lo, hi = math.ceil(lo / scrape) * scrape, math.floor(now / scrape) * scrape
            if hi <= lo:  # fewer than two samples: increase() has nothing to say
                return {}
        return {k: total for k, u in self.usage.items() if (total := u.between(lo, hi)) > 0}

    # -- the API ------------------------------------------------------------------------

    def handle(self, method: str, endpoint: str, query: str, body: Any = None) -> tuple[int, Any]:
        """(status, JSON body) of one request to ``/<secret><endpoint>``."""
        route = (method, endpoint)
        if route == ("GET", "/server"):
            return 200, self._server_json()
        if route == ("GET", "/access-keys"):
            self._maybe_churn()
            return 200, {"accessKeys": [k.as_json(self.host) for k in self.keys.values()]}
        if route == ("POST", "/access-keys"):
            if isinstance(body, dict) and "id" in body:
                return error(400, "InvalidArgument", "Parameter `id` is not allowed")
            return 201, self.create_key(**_key_options(body)).as_json(self.host)
        if endpoint.startswith("/access-keys/") and endpoint.count("/") == 2:
            return self._one_key(method, endpoint.removeprefix("/access-keys/"), body)
        if route == ("GET", "/metrics/transfer"):
            if self.reset_rate and self.rng.random() < self.reset_rate:
                self.reset_metrics()
            return 200, {"bytesTransferredByUserId": self.transfer()}
        if route == ("GET", "/experimental/server/metrics") and self.interval_metrics:
            return self._experimental(query)
        return error(404, "ResourceNotFound", f"{endpoint} does not exist")

    def _one_key(self, method: str, key_id: str, body: Any) -> tuple[int, Any]:
        """``/access-keys/{id}``: any id an admin chooses, of any length."""
        if not key_id:
            return error(400, "MissingParameter", "Parameter `id` is missing")
        if method == "PUT":
            if key_id in self.keys:
                return error(409, "Conflict", f'Access key "{key_id}" already exists')
            key = self.create_key(key_id=key_id, **_key_options(body))
            return 201, key.as_json(self.host)
        if key_id not in self.keys:
            return error(404, "NotFound", f'Access key "{key_id}" not found')
        if method == "GET":
            return 200, self.keys[key_id].as_json(self.host)
        if method == "DELETE":
            self.delete_key(key_id)
            return 204, None
        return error(405, "MethodNotAllowed", f"{method} is not allowed")

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
        if not since:
            return error(400, "MissingParameter", "Parameter `since` is missing")
        value, unit = js_number(since[:-1]), since[-1:]
        if value is None or unit not in _UNIT_SECONDS:
            return error(400, "InvalidArgument", f"Invalid time range: {since}")
        seconds = value * _UNIT_SECONDS[unit]
        if seconds <= 0 or not seconds.is_integer():  # Prometheus refuses the range
            return error(500, "InternalServer")
        now = self.clock()
        query_text = f"increase[{int(seconds)}s]"
        if self.quirks.query_cache:
            cached = self._cache.get(query_text, now)
            if cached is not None:
                return 200, cached
        answer = self._metrics_answer(int(seconds), now)
        if self.quirks.query_cache:
            self._cache.put(query_text, now, answer)
        return 200, answer

    def _metrics_answer(self, seconds: int, now: float) -> dict[str, Any]:
        quirks = self.quirks
        usage: dict[str, float] = dict(self.interval(seconds))
        if quirks.zero_entries or quirks.negative_bytes:
            for key_id in self.keys:
                usage.setdefault(key_id, -1.4e-11 if quirks.negative_bytes else 0)
        if quirks.unlabelled_bytes and usage:
            usage[""] = quirks.unlabelled_bytes
        if quirks.fractional_bytes:
            usage = {k: b + 0.37 if b > 0 else b for k, b in usage.items()}
        keys = [
            {
                "accessKeyId": parse_int(k) if quirks.parse_int_ids else k,
                "tunnelTime": {"seconds": 0},
                "dataTransferred": {"bytes": b},
                "connection": {
                    "lastTrafficSeen": int(now) if b > 0 else None,
                    "peakDeviceCount": {"data": 1, "timestamp": int(now)},
                },
            }
            for k, b in usage.items()
        ]
        server = {
            "tunnelTime": {"seconds": 0},
            "dataTransferred": {"bytes": sum(usage.values())},
            "bandwidth": {
                "current": {"data": {"bytes": 0}, "timestamp": int(now)},
                "peak": {"data": {"bytes": 0}, "timestamp": None},
            },
            "locations": [],
        }
        return {"server": server, "accessKeys": keys}

    def _maybe_churn(self) -> None:
        if self.churn_rate and self.keys and self.rng.random() < self.churn_rate:
            victim = self.rng.choice(sorted(self.keys))
            rate = self.keys[victim].rate
            self.delete_key(victim)
            self.create_key(rate=rate)


def _key_options(body: Any) -> dict[str, Any]:
    """``name`` and ``limit`` of a POST or PUT /access-keys body."""
    if not isinstance(body, dict):
        return {}
    limit = body.get("limit")
    return {
        "name": body.get("name"),
        "data_limit": limit.get("bytes") if isinstance(limit, dict) else None,
    }
