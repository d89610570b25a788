"""The Outline management API client: pinned HTTPS, bounded concurrency, parsed readings.

One ``httpx.AsyncClient`` per server (its TLS context trusts only that
server's pinned certificate), kept between cycles. A replica-wide semaphore
bounds the requests in flight. Errors become :class:`CollectError` with a
message that never contains the apiUrl.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import math
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import httpx
from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from snapshot.credentials import ApiUrl
from snapshot.interval import IntervalAnswer, entry_id
from snapshot.pinning import CertificateMismatch, CollectError, check_connection, pinned_context
from tributary import egress
from tributary.egress import EgressPolicy, ResponseTooLarge, egress_client, read_bounded

log = logging.getLogger(__name__)

# httpx logs every request URL at INFO (and httpcore details at DEBUG): the URL holds the
# secret, so those loggers only ever speak up for warnings
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# httpcore tries ``import sniffio`` several times per request and falls back to asyncio when
# it is missing (it is not installed here); a failed import searches sys.path every time,
# which cost more than the requests themselves at 500 servers. None in sys.modules makes
# the import fail at once, with the same outcome.
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

#: interval endpoint: whole seconds, at most the 30-day window
MAX_INTERVAL_SECONDS = 30 * 86400
#: idle connections are dropped before servers (5 s is common) close them under us
KEEPALIVE_SECONDS = 2.0


class AccessKey(NamedTuple):  # one per key and cycle: cheaper to build than a dataclass
    id: str
    name: str | None
    data_limit: int | None


@dataclass(frozen=True, slots=True)
class ServerInfo:
    name: str | None
    server_id: str | None
    data_limit: int | None


@dataclass(frozen=True)
class Reading:
    """What one collection read from a server."""

    #: None when /server was not asked this time (it changes rarely)
    server: ServerInfo | None
    keys: list[AccessKey]
    #: bytes per key id over the rolling 30-day window (absent: zero)
    transfer: dict[str, int]
    #: bytes per key over the last ``since`` seconds; None when not used
    interval: IntervalAnswer | None
    #: False when the server answered 404 on the interval endpoint
    interval_supported: bool | None
    fetched_at: datetime
    #: negative byte counts in /metrics/transfer, read as 0
    clamped: int = 0


@dataclass
class _Pinned:
    pin: str
    client: httpx.AsyncClient


# What each endpoint's body is read for: decoding checks the shape and builds Python objects
# for these fields only (an /access-keys entry also carries its access URL, password, port...;
# an interval entry its tunnel time and devices), which halves the cost of the JSON. Values
# stay Any: the parse_* functions below check them.


class _KeyEntry(TypedDict, total=False):
    id: Any
    name: Any
    dataLimit: Any


class _AccessKeysBody(TypedDict, total=False):
    accessKeys: list[_KeyEntry]


class _TransferBody(TypedDict, total=False):
    bytesTransferredByUserId: dict[str, Any]


class _IntervalEntry(TypedDict, total=False):
    accessKeyId: Any
    dataTransferred: Any


class _IntervalBody(TypedDict, total=False):
    accessKeys: list[_IntervalEntry]


class _ServerBody(TypedDict, total=False):
    name: Any
    serverId: Any
    accessKeyDataLimit: Any


_BODIES: dict[str, TypeAdapter[Any]] = {
    "/access-keys": TypeAdapter(_AccessKeysBody),
    "/metrics/transfer": TypeAdapter(_TransferBody),
    "/experimental/server/metrics": TypeAdapter(_IntervalBody),
    "/server": TypeAdapter(_ServerBody),
}


def decode(path: str, content: bytes) -> Any:
    """The JSON body of ``GET path``, only the fields the service reads."""
    try:
        return _BODIES[path].validate_json(content)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        if error["type"] == "json_invalid":
            try:  # the json module is more lenient (a lone surrogate escape, say)
                return json.loads(content)
            except ValueError:
                raise CollectError("protocol", f"GET {path}: response is not JSON") from None
        where = ".".join(str(part) for part in error["loc"]) or "body"
        raise CollectError("protocol", f"GET {path}: unexpected JSON at {where}") from None


def _bytes(value: Any, what: str) -> int:
    """A byte count as the server means it: fractions rounded as JavaScript's Math.round
    does (Prometheus' increase() extrapolates), negative ones (float sums can end a hair
    below zero) as 0; anything not a finite number is a protocol error."""
    if type(value) is int and value >= 0:  # the usual case, first and cheaply
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CollectError("protocol", f"{what}: not a number of bytes")
    return max(0, math.floor(value + 0.5))


def _clamped(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value < 0


def _limit(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CollectError("protocol", f"{what}: malformed data limit")
    return _bytes(value.get("bytes"), what)


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise CollectError("protocol", f"{what}: expected a JSON object")
    return body


def parse_server(body: Any) -> ServerInfo:
    body = _object(body, "/server")
    name, server_id = body.get("name"), body.get("serverId")
    return ServerInfo(
        str(name) if name is not None else None,
        str(server_id) if server_id is not None else None,
        _limit(body.get("accessKeyDataLimit"), "/server accessKeyDataLimit"),
    )


def parse_access_keys(body: Any) -> list[AccessKey]:
    items = _object(body, "/access-keys").get("accessKeys")
    if not isinstance(items, list):
        raise CollectError("protocol", "/access-keys: accessKeys is not a list")
    keys = []
    for item in items:
        if not isinstance(item, dict) or item.get("id") in (None, ""):
            raise CollectError("protocol", "/access-keys: key without an id")
        key_id, name, limit = item["id"], item.get("name"), item.get("dataLimit")
        keys.append(
            AccessKey(
                key_id if type(key_id) is str else str(key_id),
                str(name) if name is not None else None,
                None if limit is None else _limit(limit, "/access-keys dataLimit"),
            )
        )
    return keys


def parse_transfer(body: Any) -> tuple[dict[str, int], int]:
    """Bytes per key id over the 30-day window, and how many counts were negative."""
    usage = _object(body, "/metrics/transfer").get("bytesTransferredByUserId")
    if not isinstance(usage, dict):
        raise CollectError("protocol", "/metrics/transfer: bytesTransferredByUserId missing")
    parsed: dict[str, int] = {}
    clamped = 0
    for k, v in usage.items():  # JSON object keys are strings already
        if type(v) is int and v >= 0:
            parsed[k] = v
        else:
            parsed[k] = _bytes(v, "/metrics/transfer")
            clamped += _clamped(v)
    return parsed, clamped


def parse_interval(body: Any) -> IntervalAnswer:
    """The per-key bytes of an interval answer, matched to key ids (:mod:`snapshot.interval`)."""
    items = _object(body, "/experimental/server/metrics").get("accessKeys")
    if not isinstance(items, list):
        raise CollectError("protocol", "/experimental/server/metrics: accessKeys missing")
    usage: dict[str, int] = {}
    ambiguous: set[str] = set()
    unmatched = clamped = 0
    for item in items:
        if not isinstance(item, dict):
            raise CollectError("protocol", "/experimental/server/metrics: entry is not an object")
        transferred = item.get("dataTransferred") or {}
        if not isinstance(transferred, dict):
            raise CollectError("protocol", "/experimental/server/metrics: bad dataTransferred")
        raw = transferred.get("bytes", 0)
        nbytes = _bytes(raw, "dataTransferred")
        clamped += _clamped(raw)
        key = entry_id(item.get("accessKeyId"))
        if key is None:
            unmatched += 1
        elif key in usage:
            ambiguous.add(key)
        else:
            usage[key] = nbytes
    return IntervalAnswer(usage, frozenset(ambiguous), unmatched, clamped)


class OutlineClients:
    """Pinned clients per server, with a replica-wide bound on requests in flight."""

    def __init__(
        self,
        timeout: float,
        concurrency: int,
        connections_per_server: int = 1,
        clock: Callable[[], datetime] | None = None,
        *,
        egress: EgressPolicy,
    ) -> None:
        self.timeout = timeout
        #: apiUrls are user-given: every connection goes to an address this allows
        self.egress = egress
        self.connections = connections_per_server
        self._limit = asyncio.Semaphore(concurrency)
        self._clients: dict[str, _Pinned] = {}
        self._building: dict[str, asyncio.Lock] = {}
        #: connections whose certificate was checked against the pin (gone when closed)
        self._checked: weakref.WeakSet[Any] = weakref.WeakSet()
        self._clock = clock

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for pinned in clients.values():
            await pinned.client.aclose()

    async def forget(self, server_id: str) -> None:
        pinned = self._clients.pop(server_id, None)
        if pinned is not None:
            await pinned.client.aclose()

    async def _client(self, server_id: str, url: ApiUrl, pin: str) -> httpx.AsyncClient:
        lock = self._building.setdefault(server_id, asyncio.Lock())
        async with lock:
            pinned = self._clients.get(server_id)
            if pinned is not None and pinned.pin == pin:
                return pinned.client
            await self.forget(server_id)
            async with self._limit:
                context = await pinned_context(url, pin, self.timeout, self.egress)
            limits = httpx.Limits(
                max_connections=self.connections,
                max_keepalive_connections=self.connections,
                keepalive_expiry=KEEPALIVE_SECONDS,
            )
            client = egress_client(self.egress, timeout=self.timeout, verify=context, limits=limits)
            self._clients[server_id] = _Pinned(pin, client)
            return client

    async def fetch(
        self,
        server_id: str,
        url: ApiUrl,
        pin: str,
        since: int | None,
        now: datetime,
        *,
        with_info: bool = True,
    ) -> Reading:
        """Read /access-keys, /metrics/transfer, the interval endpoint (``since``) and, with
        ``with_info``, /server."""
        try:
            return await self._fetch(server_id, url, pin, since, now, with_info)
        except CollectError as exc:
            if exc.kind == "certificate":
                await self.forget(server_id)
            raise

    async def _fetch(
        self,
        server_id: str,
        url: ApiUrl,
        pin: str,
        since: int | None,
        now: datetime,
        with_info: bool,
    ) -> Reading:
        client = await self._client(server_id, url, pin)
        # (path, query, optional: 404 means "not there", parser); each body is parsed as soon
        # as it arrives, so the raw JSON does not outlive its turn
        asks: list[tuple[str, dict[str, str] | None, bool, Callable[[Any], Any]]] = [
            ("/access-keys", None, False, parse_access_keys),
            ("/metrics/transfer", None, False, parse_transfer),
        ]
        if since is not None:
            params = {"since": f"{max(1, min(since, MAX_INTERVAL_SECONDS))}s"}
            asks.append(("/experimental/server/metrics", params, True, parse_interval))
        if with_info:
            asks.append(("/server", None, False, parse_server))

        async def ask(
            path: str, params: dict[str, str] | None, optional: bool, parse: Callable[[Any], Any]
        ) -> Any:
            content = await self._get(client, url, pin, path, params, optional=optional)
            return None if content is None else parse(decode(path, content))

        if self.connections > 1:
            parsed = await asyncio.gather(*(ask(*a) for a in asks))
        else:
            # one connection serves them one after another anyway: asking in turn spares a
            # task per request and the pool's queueing, and holds one slot of the limit
            parsed = [await ask(*a) for a in asks]
        interval = parsed[2] if since is not None else None
        transfer, clamped = parsed[1]
        return Reading(
            parsed[-1] if with_info else None,
            parsed[0],
            transfer,
            interval,
            None if since is None else interval is not None,
            now,
            clamped,
        )

    async def _get(
        self,
        client: httpx.AsyncClient,
        url: ApiUrl,
        pin: str,
        path: str,
        params: dict[str, str] | None = None,
        *,
        optional: bool = False,
    ) -> bytes | None:
        """The body of a 200 answer (None: 404 on an ``optional`` endpoint), read up to the
        egress policy's ``max_response_bytes``."""
        async with self._limit:
            response = await self._send(client, url, path, params)
            try:
                self._check_pin(response, pin)
                if optional and response.status_code == 404:
                    return None
                if response.status_code != 200:
                    raise CollectError("http", f"GET {path}: HTTP {response.status_code}")
                return await self._read(response, path)
            finally:
                await response.aclose()

    async def _read(self, response: httpx.Response, path: str) -> bytes:
        try:
            return await read_bounded(response, self.egress.max_response_bytes)
        except ResponseTooLarge as exc:
            raise CollectError("too-large", f"GET {path}: {exc}") from None
        except httpx.TimeoutException:
            raise CollectError("timeout", f"GET {path}: timed out") from None
        except httpx.HTTPError as exc:
            raise CollectError("connect", f"GET {path}: {type(exc).__name__}") from None

    def _check_pin(self, response: httpx.Response, pin: str) -> None:
        """Check each connection's certificate once (asking for it is not cheap)."""
        stream = response.extensions.get("network_stream")
        if stream is not None and stream in self._checked:
            return
        check_connection(stream.get_extra_info("ssl_object") if stream else None, pin)
        self._checked.add(stream)

    async def _send(
        self, client: httpx.AsyncClient, url: ApiUrl, path: str, params: dict[str, str] | None
    ) -> httpx.Response:
        request = client.build_request("GET", url.url(path), params=params)
        try:
            try:
                return await client.send(request, stream=True)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                # a kept-alive connection the server had just closed: GETs are safe to repeat
                return await client.send(request, stream=True)
        except httpx.TimeoutException:
            raise CollectError("timeout", f"GET {path}: timed out") from None
        except httpx.ConnectError as exc:
            if egress.classify(exc) == egress.REFUSED_ADDRESS:
                raise CollectError("refused-address", f"GET {path}: {exc}") from None
            text = str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
                # the certificate changed since it was pinned: let the probe say how
                await self._explain_certificate_failure(url, client)
                raise CollectError("certificate", f"GET {path}: TLS verification failed") from None
            raise CollectError("connect", f"GET {path}: cannot connect") from None
        except httpx.HTTPError as exc:
            raise CollectError("connect", f"GET {path}: {type(exc).__name__}") from None

    async def _explain_certificate_failure(self, url: ApiUrl, client: httpx.AsyncClient) -> None:
        pinned = next((p for p in self._clients.values() if p.client is client), None)
        if pinned is None:
            return
        try:
            await pinned_context(url, pinned.pin, self.timeout, self.egress)
        except CertificateMismatch:
            raise
        except CollectError:
            return
