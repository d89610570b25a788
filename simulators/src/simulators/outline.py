"""Many fake Outline servers in one process, each on its own HTTPS port.

Each :class:`FakeOutlineServer` has its own self-signed certificate (pinned by
``certSha256``) and its own secret path, and speaks the parts of the real
management API the snapshot service uses, in the real wire format:

- ``GET /<secret>/server``: name, serverId, accessKeyDataLimit
- ``GET /<secret>/access-keys`` (and ``POST``; ``PUT``, ``GET``, ``DELETE
  /access-keys/<id>`` with ids of any length)
- ``GET /<secret>/metrics/transfer``: ``bytesTransferredByUserId`` over a
  ROLLING 30-day window (traffic ages out; zero-usage keys are absent; ids are
  strings; usage stays recorded under a key id after the key is deleted, as
  Prometheus keeps the series)
- ``GET /<secret>/experimental/server/metrics?since=<n>[shdw]``: per-key
  ``dataTransferred.bytes`` over that interval (only on servers that have it)

Errors carry restify's body, ``{"code": "NotFound", "message": ...}``; anything
else, or a wrong secret, is a 404 ``ResourceNotFound``. The real server's quirks
(parseInt key ids, the query cache, scrapes, the ``""`` key...) are switches:
:mod:`simulators.outline_quirks`. Latency, error rate, automatic
traffic, key churn and metric resets are configurable, and time comes from
an injectable clock so tests can move 30 days ahead in a blink.

Run standalone (demo, benchmark)::

    python -m simulators.outline --servers 500 --keys 200 --latency-ms 50 \
        --registrations /tmp/outline.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.server import ServerState

from simulators.outline_model import (
    WINDOW_SECONDS,
    Clock,
    FakeKey,
    FakeOutlineServer,
    ManualClock,
    Usage,
    error,
)
from simulators.outline_quirks import Quirks
from simulators.outline_tls import server_context

if TYPE_CHECKING:
    from simulators.scenario import OutlineWorld

__all__ = [
    "WINDOW_SECONDS",
    "Clock",
    "FakeKey",
    "FakeOutlineServer",
    "ManualClock",
    "OutlineSimulator",
    "Usage",
    "main",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class OutlineSimulator:
    """Serves many :class:`FakeOutlineServer` s from one process, one HTTPS port each."""

    def __init__(
        self,
        servers: int = 1,
        keys_per_server: int = 0,
        *,
        host: str = "127.0.0.1",
        clock: Clock | None = None,
        seed: int | None = None,
        latency: float = 0.0,
        error_rate: float = 0.0,
        interval_share: float = 1.0,
        key_rate: float = 0.0,
        keep_alive: int = 5,
    ) -> None:
        self.host = host
        self.clock: Clock = clock or time.time
        self.rng = random.Random(seed)
        self._initial = (servers, keys_per_server, latency, error_rate, interval_share, key_rate)
        self.servers: list[FakeOutlineServer] = []
        self._by_port: dict[int, FakeOutlineServer] = {}
        self._listeners: dict[int, asyncio.Server] = {}
        self._state = ServerState()
        self._config = uvicorn.Config(
            self.app,
            http="h11",
            interface="asgi3",
            proxy_headers=False,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_keep_alive=keep_alive,
            server_header=False,
            date_header=False,
        )

    async def __aenter__(self) -> OutlineSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._config.load()
        count, keys, latency, error_rate, interval_share, key_rate = self._initial
        for i in range(count):
            server = await self.add_server(
                interval_metrics=self.rng.random() < interval_share,
                latency=latency,
                error_rate=error_rate,
            )
            for _ in range(keys):
                rate = self.rng.expovariate(1 / key_rate) if key_rate else 0.0
                server.create_key(rate=rate)
            if i and i % 100 == 0:
                await asyncio.sleep(0)  # certificate generation is CPU work; stay responsive

    async def add_server(self, **options: Any) -> FakeOutlineServer:
        """Another fake server, listening on a fresh port."""
        server = FakeOutlineServer(
            len(self.servers), self.clock, self.rng, host=self.host, **options
        )
        with tempfile.TemporaryDirectory() as folder:
            server.context = server_context(server.certificate, Path(folder))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        server.port = sock.getsockname()[1]
        listener = await asyncio.get_running_loop().create_server(
            self._protocol, sock=sock, ssl=server.context, backlog=1024
        )
        self._listeners[server.port] = listener
        self._by_port[server.port] = server
        self.servers.append(server)
        server.drop_connections = lambda: self._drop_connections(server.port)
        return server

    def _drop_connections(self, port: int) -> None:
        for connection in list(self._state.connections):
            local = getattr(connection, "server", None)
            if local and local[1] == port:
                connection.shutdown()

    def _protocol(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = self._config.http_protocol_class(  # type: ignore[call-arg]
            config=self._config, server_state=self._state, app_state={}
        )
        protocol.access_log = False  # type: ignore[attr-defined]  # like a real server: quiet
        made = protocol.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            # headers and body go out as two writes: without NODELAY the second waits
            # for the client's delayed ACK (40 ms)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            made(transport)

        protocol.connection_made = connection_made  # type: ignore[method-assign]
        return protocol

    async def shut_down(self, server: FakeOutlineServer) -> None:
        """Stop listening on ``server``'s port: clients get connection refused."""
        listener = self._listeners.pop(server.port, None)
        if listener is not None:
            listener.close()
            self._drop_connections(server.port)
            await listener.wait_closed()

    async def stop(self) -> None:
        for listener in self._listeners.values():
            listener.close()
        for connection in list(self._state.connections):
            connection.shutdown()
        for listener in self._listeners.values():
            await listener.wait_closed()
        self._listeners.clear()
        if self._state.tasks:
            await asyncio.wait(self._state.tasks, timeout=5)

    def registrations(self) -> list[dict[str, str]]:
        return [s.registration() for s in self.servers]

    def by_port(self, port: int) -> FakeOutlineServer:
        return self._by_port[port]

    # -- ASGI -----------------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        server = self._by_port.get(scope["server"][1])
        status, body = await self._respond(server, scope, receive)
        payload = b"" if body is None else json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _respond(
        self, server: FakeOutlineServer | None, scope: Scope, receive: Receive
    ) -> tuple[int, Any]:
        path: str = scope["path"]
        if server is None or not path.startswith(f"/{server.secret}/"):
            return error(404, "ResourceNotFound", f"{path} does not exist")
        server.requests += 1
        if server.latency:
            await asyncio.sleep(server.latency)
        if server.down or (server.error_rate and server.rng.random() < server.error_rate):
            return error(500, "InternalServer")
        endpoint = path[len(server.secret) + 1 :]
        query = scope.get("query_string", b"").decode()
        body = await _json_body(receive) if scope["method"] in ("POST", "PUT") else None
        return server.handle(scope["method"], endpoint, query, body)


async def _json_body(receive: Receive) -> Any:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    try:
        return json.loads(b"".join(chunks) or b"null")
    except ValueError:
        return None


# -- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulators.outline", description=__doc__)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--keys", type=int, default=10, help="access keys per server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--interval-share", type=float, default=1.0,
                        help="share of servers with /experimental/server/metrics")  # fmt: skip
    parser.add_argument("--key-rate", type=float, default=20_000.0,
                        help="mean automatic traffic per key, bytes/s")  # fmt: skip
    parser.add_argument("--churn-rate", type=float, default=0.0)
    parser.add_argument("--reset-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--scenario",
        type=Path,
        default=None,
        help="add the scenario's spiky and almost-full keys and write where "
        "they are to this file (the compose demo's history import reads it)",
    )
    parser.add_argument(
        "--spike-every",
        type=float,
        default=0.0,
        help="with --scenario: seconds between 600 MB bursts of the spiky key",
    )
    parser.add_argument("--quirks", type=Quirks.parse, default=Quirks(),
                        help="real-server quirks: all, or names (query_cache,...)")  # fmt: skip
    parser.add_argument("--registrations", type=Path, required=True,
                        help="where to write [{name, apiUrl, certSha256}] (secret)")  # fmt: skip
    return parser


async def _serve(args: argparse.Namespace) -> None:
    simulator = OutlineSimulator(
        args.servers,
        args.keys,
        host=args.host,
        seed=args.seed,
        latency=args.latency_ms / 1000,
        error_rate=args.error_rate,
        interval_share=args.interval_share,
        key_rate=args.key_rate,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with simulator:
        for server in simulator.servers:
            server.churn_rate, server.reset_rate = args.churn_rate, args.reset_rate
            server.quirks = dataclasses.replace(args.quirks)
        spikes = None
        if args.scenario is not None:
            from simulators.scenario import Scenario  # it builds on this module

            world = Scenario.special_keys(simulator.servers, simulator.clock())
            server, key_id = world.spiky
            args.scenario.write_text(json.dumps({"spiky": {"name": server.name, "key_id": key_id}}))
            if args.spike_every > 0:
                spikes = asyncio.create_task(_spike_every(world, args.spike_every, stop))
        args.registrations.write_text(json.dumps(simulator.registrations()))
        args.registrations.chmod(0o600)
        print(json.dumps({"ready": True, "servers": len(simulator.servers)}), flush=True)
        await stop.wait()
        if spikes is not None:
            await spikes


async def _spike_every(world: OutlineWorld, seconds: float, stop: asyncio.Event) -> None:
    from simulators.scenario import Scenario

    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if not stop.is_set():
            Scenario.spike(world)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(_serve(_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
