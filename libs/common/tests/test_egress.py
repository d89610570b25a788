"""Outbound requests to user-given URLs: the address rules, the check at connect time,
no redirects, bounded bodies, and failure classes that say nothing about the port.

DNS is third-party, so host names resolve through a stub; every connection is real
(a local HTTP server, the local Redis, a closed port)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from simulators.ports import free_port
from tributary.config import ServiceSettings, load_settings
from tributary.egress import (
    CONNECT_FAILED,
    HTTPS_ONLY,
    REDIRECT,
    REFUSED_ADDRESS,
    TIMEOUT,
    WEB_SCHEMES,
    EgressPolicy,
    RefusedUrl,
    ResponseTooLarge,
    classify,
    egress_client,
    read_bounded,
    status_failure,
)
from tributary.egress.addresses import UnresolvableHost, system_resolver
from tributary.errors import ConfigError
from tributary.http import HttpServer
from tributary_testing.dns import Rebinder

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
#: what the stub DNS knows (example.com's address stands for "somewhere public")
ZONE = {
    "hooks.example": ["93.184.216.34"],
    "v6.example": ["2606:4700::1111"],
    "localhost": ["127.0.0.1", "::1"],
    "inside.example": ["10.0.0.5"],
    "split.example": ["93.184.216.34", "10.0.0.5"],
    "metadata.example": ["169.254.169.254"],
}


def stub_resolver(host: str, port: int) -> list[str]:
    try:
        return ZONE[host]
    except KeyError:
        raise UnresolvableHost(host) from None


def policy(*networks: str, hosts: Sequence[str] = (), limit: int = 1 << 20) -> EgressPolicy:
    return EgressPolicy.of(
        (ipaddress.ip_network(n) for n in networks), hosts, limit, resolver=stub_resolver
    )


# -- the rules at save time -------------------------------------------------------------------

REFUSED = [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://metadata.example/latest/meta-data/", "link-local"),
    ("http://10.0.0.5:8080/", "private"),
    ("http://inside.example/", "private"),
    ("http://split.example/", "private"),  # one private answer is enough
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fd00:ec2::254]/", "private"),
    ("http://2852039166/", "link-local"),  # 169.254.169.254 as one number
    ("http://127.0.0.1:6379/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback (embedded in IPv6)"),
    ("http://[::ffff:169.254.169.254]/", "link-local (embedded in IPv6)"),
    ("http://[::127.0.0.1]/", "loopback (embedded in IPv6)"),
    ("http://[2002:7f00:1::]/", "loopback (embedded in IPv6)"),  # 6to4
    ("http://[64:ff9b::a00:5]/", "private (embedded in IPv6)"),  # NAT64
    ("http://0x7f000001/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://localhost:8000/", "loopback"),
    ("http://LOCALHOST./", "loopback"),
    ("http://100.64.0.1/", "shared (CGNAT)"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[fe80::1]/", "link-local"),
    ("http://240.0.0.1/", "private"),  # reserved, and is_private says so first
    ("http://192.0.2.10/", "private"),  # documentation range
    ("http://198.18.0.1/", "private"),  # benchmarking
    ("http://255.255.255.255/", "private"),
]


@pytest.mark.parametrize(("url", "kind"), REFUSED)
def test_refused_addresses(url: str, kind: str) -> None:
    with pytest.raises(RefusedUrl) as refused:
        policy().vet_url(url)
    assert refused.value.rule == "address"
    assert f"resolves to a {kind} address" in str(refused.value)
    assert "EGRESS_ALLOW_NETWORKS" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "rule", "schemes"),
    [
        ("ftp://hooks.example/x", "scheme", WEB_SCHEMES),
        ("file:///etc/passwd", "scheme", WEB_SCHEMES),
        ("gopher://hooks.example/", "scheme", WEB_SCHEMES),
        ("http://hooks.example/x", "scheme", HTTPS_ONLY),
        ("https://user:pw@hooks.example/x", "userinfo", WEB_SCHEMES),
        ("https://token@hooks.example/x", "userinfo", WEB_SCHEMES),
        ("https://nowhere.example/", "resolve", WEB_SCHEMES),
        ("http:///path-only", "host", WEB_SCHEMES),
        ("http://[::1/", "syntax", WEB_SCHEMES),
    ],
)
def test_other_rules(url: str, rule: str, schemes: frozenset[str]) -> None:
    with pytest.raises(RefusedUrl) as refused:
        policy().vet_url(url, schemes)
    assert refused.value.rule == rule
    assert "pw" not in str(refused.value)
    assert "token" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example/x?a=1",
        "http://hooks.example:8080/alerts",
        "https://v6.example/",
        "http://93.184.216.34/",
        "https://[2606:4700::1111]:8443/",
        "HTTPS://Hooks.Example./x",
    ],
)
def test_public_urls_pass(url: str) -> None:
    target = policy().vet_url(url)
    assert target.host in {"hooks.example", "v6.example", "93.184.216.34", "2606:4700::1111"}


def test_the_allow_lists_let_named_networks_and_hosts_through() -> None:
    allowed = policy("127.0.0.0/8", "fd00::/8", hosts=["inside.example"])
    assert allowed.vet_url("http://127.0.0.1:6379/").port == 6379
    allowed.vet_url("http://[fd00:ec2::254]/")
    allowed.vet_url("http://INSIDE.example/hook")
    # what the lists do not name stays refused
    with pytest.raises(RefusedUrl, match="link-local"):
        allowed.vet_url("http://169.254.169.254/")
    with pytest.raises(RefusedUrl, match="private"):
        allowed.vet_url("http://10.0.0.5/")


def test_the_system_resolver_reads_localhost_as_loopback() -> None:
    real = EgressPolicy()
    assert real.resolver is system_resolver
    with pytest.raises(RefusedUrl, match="loopback"):
        real.vet_url("http://localhost/")


def test_settings_build_the_policy_and_bad_values_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EGRESS_ALLOW_NETWORKS", "127.0.0.0/8, fd00::/8")
    monkeypatch.setenv("EGRESS_ALLOW_HOSTS", "webhook-sink,outline-sim")
    monkeypatch.setenv("EGRESS_MAX_RESPONSE_BYTES", "65536")
    built = EgressPolicy.from_settings(load_settings(ServiceSettings))
    assert built.allow_networks == (LOOPBACK, ipaddress.ip_network("fd00::/8"))
    assert built.allow_hosts == {"webhook-sink", "outline-sim"}
    assert built.max_response_bytes == 65536
    for variable, value, message in [
        ("EGRESS_ALLOW_NETWORKS", "10.0.0.300/8", "'10.0.0.300/8' is not a network"),
        ("EGRESS_ALLOW_NETWORKS", "10.0.0.5/8", "has host bits set"),
        ("EGRESS_ALLOW_HOSTS", "http://sink/", "'http://sink/' is not a host name"),
        ("EGRESS_MAX_RESPONSE_BYTES", "12", "greater than or equal to 1024"),
    ]:
        with monkeypatch.context() as env:
            env.setenv(variable, value)
            with pytest.raises(ConfigError, match=f"{variable}: .*{message}"):
                load_settings(ServiceSettings)


# -- at connect time ----------------------------------------------------------------------------


@dataclass
class Sink:
    """A local HTTP server: what it received."""

    port: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    state = Sink()
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        state.requests.append({"host": request.headers["host"], "path": "/hook"})
        return Response(status_code=204)

    @app.post("/moved")
    async def moved() -> Response:
        state.requests.append({"path": "/moved"})
        return Response(status_code=302, headers={"location": state.url("/hook")})

    @app.get("/big")
    async def big() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(1024):  # 64 MiB, if anyone read it all
                yield b"x" * 65536

        return StreamingResponse(chunks())

    @app.get("/small")
    async def small() -> Response:
        return Response(b"y" * 1000)

    server = HttpServer(app, "127.0.0.1", 0)
    state.port = await server.start()
    yield state
    await server.stop()


async def test_dns_rebinding_is_refused_at_connect_and_nothing_is_sent(sink: Sink) -> None:
    dns = Rebinder()
    rebinding = EgressPolicy(resolver=dns)
    url = sink.url(host="rebind.example")
    rebinding.vet_url(url)  # public when saved...
    async with egress_client(rebinding, timeout=5) as client:
        with pytest.raises(httpx.ConnectError) as failed:
            await client.post(url, content=b"{}")
    assert dns.answers == 2  # ...loopback when connecting
    assert classify(failed.value) == REFUSED_ADDRESS
    assert sink.requests == []


async def test_an_allow_listed_name_is_reached_at_the_checked_address_with_its_host_header(
    sink: Sink,
) -> None:
    allowed = EgressPolicy.of([LOOPBACK], resolver=lambda host, port: ["127.0.0.1"])
    async with egress_client(allowed, timeout=5) as client:
        response = await client.post(sink.url(host="rebind.example"), content=b"{}")
    assert response.status_code == 204
    assert sink.requests == [{"host": f"rebind.example:{sink.port}", "path": "/hook"}]


async def test_a_loopback_sink_is_reached_only_when_allow_listed(sink: Sink) -> None:
    async with egress_client(policy(), timeout=5) as client:
        with pytest.raises(httpx.ConnectError) as failed:
            await client.post(sink.url(), content=b"{}")
    assert classify(failed.value) == REFUSED_ADDRESS
    async with egress_client(policy("127.0.0.1/32"), timeout=5) as client:
        assert (await client.post(sink.url(), content=b"{}")).status_code == 204
    assert len(sink.requests) == 1


async def test_redirects_are_reported_not_followed(sink: Sink) -> None:
    async with egress_client(policy("127.0.0.1/32"), timeout=5) as client:
        response = await client.post(sink.url("/moved"), content=b"{}")
    assert response.status_code == 302
    assert status_failure(response.status_code) == REDIRECT
    assert sink.requests == [{"path": "/moved"}]  # the Location was never asked


async def test_a_large_body_is_cut_at_the_limit(sink: Sink) -> None:
    limit = 256 * 1024
    async with egress_client(policy("127.0.0.1/32", limit=limit), timeout=5) as client:
        async with client.stream("GET", sink.url("/small")) as response:
            assert await read_bounded(response, limit) == b"y" * 1000
        async with client.stream("GET", sink.url("/big")) as response:
            with pytest.raises(ResponseTooLarge) as cut:
                await read_bounded(response, limit)
            # stopped within a chunk of the limit, not after 64 MiB
            assert response.num_bytes_downloaded < limit + 2 * 65536
    assert classify(cut.value) == "too-large"


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def _failure(client: httpx.AsyncClient, url: str) -> tuple[str, str]:
    try:
        await client.post(url, content=b"{}")
    except httpx.HTTPError as exc:
        return classify(exc), type(exc).__name__
    raise AssertionError(f"{url} answered")


@pytest.fixture
def filtered_port() -> Iterator[int]:
    """A port whose SYNs go unanswered, as behind a filtering firewall: a listening socket
    that never accepts, its queue already full (Linux then drops further SYNs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in [*fillers, listener]:
        sock.close()


async def test_connection_failures_read_the_same_whatever_the_port(
    redis_url: str, filtered_port: int
) -> None:
    """A closed port, a port where Redis listens, a filtered port: one word, so
    deliveries cannot be used to scan ports."""
    async with egress_client(policy("127.0.0.0/8"), timeout=0.5) as client:
        closed = await _failure(client, f"http://127.0.0.1:{free_port()}/")
        redis = await _failure(client, f"http://127.0.0.1:{_port(redis_url)}/")
        filtered = await _failure(client, f"http://127.0.0.1:{filtered_port}/")
    # what went wrong differs (refused; Redis reset or hung up on an HTTP request; SYN
    # unanswered), what is recorded does not
    assert closed == (CONNECT_FAILED, "ConnectError")
    assert redis[0] == CONNECT_FAILED
    assert redis[1] in {"RemoteProtocolError", "ReadError"}
    assert filtered == (CONNECT_FAILED, "ConnectTimeout")


def test_failure_classes_of_timeouts() -> None:
    assert classify(httpx.ConnectTimeout("t")) == CONNECT_FAILED  # a filtered port
    assert classify(httpx.ReadTimeout("t")) == TIMEOUT
    assert classify(TimeoutError()) == TIMEOUT
    assert status_failure(200) is None
    assert status_failure(422) == "http-status"
    assert status_failure(500) == "http-status"


async def test_a_slow_answer_is_a_timeout() -> None:
    """A peer that accepts and never answers: bounded by the read timeout."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with egress_client(policy("127.0.0.1/32"), timeout=0.2) as client:
            word, _ = await _failure(client, f"http://127.0.0.1:{port}/")
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert word == TIMEOUT
