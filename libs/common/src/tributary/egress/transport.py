"""An httpx transport that checks every address at connect time and connects to it.

httpcore hands the host name of each new connection to its *network backend*
(a public extension point: ``AsyncConnectionPool(network_backend=...)``).
:class:`EgressBackend` resolves the name once, checks every address against
the policy, and opens the TCP connection to the checked address itself, so a
name that resolves elsewhere a second time (DNS rebinding) gains nothing. TLS
is then started by httpcore on that stream with the URL's host name (SNI and
certificate verification unchanged), and the ``Host`` header is the URL's.

httpx 0.28 does not let a caller give its transport a network backend, so
:func:`egress_transport` replaces the pool of an ``httpx.AsyncHTTPTransport``
(``_pool``, private) with one built the same way plus the backend. That one
line is the only private part; ``test_egress`` fails if httpx stops using it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable

import httpcore
import httpx

from tributary.egress.addresses import IPAddress, UnresolvableHost
from tributary.egress.policy import EgressPolicy, RefusedAddress

#: connections kept per client by default (one per receiver host is typical)
DEFAULT_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10)

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class AddressRefusedAtConnect(httpcore.ConnectError):
    """The connection was not opened: the host resolved to a refused address.

    A ConnectError, so code that handles connection failures handles it; httpx raises
    it as the ``__cause__`` of its own ``ConnectError`` (see ``failures.classify``)."""

    def __init__(self, refused: RefusedAddress) -> None:
        super().__init__(str(refused))
        self.kind = refused.kind


class EgressBackend(httpcore.AsyncNetworkBackend):
    """Resolve once, check every address, connect to a checked one."""

    def __init__(
        self, policy: EgressPolicy, delegate: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self.policy = policy
        self.delegate = delegate or httpcore.AnyIOBackend()

    async def _addresses(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                return await self.policy.aaddresses(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout("name resolution timed out") from None
        except UnresolvableHost:
            raise httpcore.ConnectError("name does not resolve") from None
        except RefusedAddress as exc:
            raise AddressRefusedAtConnect(exc) from None

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._addresses(host, port, timeout)
        options = list(socket_options or ())
        failure: Exception | None = None
        for ip in addresses:
            try:
                return await self.delegate.connect_tcp(
                    str(ip), port, timeout, local_address, options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # addresses is never empty
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not user-given URLs")

    async def sleep(self, seconds: float) -> None:
        await self.delegate.sleep(seconds)


def egress_transport(
    policy: EgressPolicy,
    verify: ssl.SSLContext | bool = True,
    limits: httpx.Limits = DEFAULT_LIMITS,
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every connection goes through :class:`EgressBackend`."""
    ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, trust_env=False)
    # private: the pool httpx built, rebuilt with the same settings plus the backend
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=EgressBackend(policy),
    )
    return transport


def egress_client(
    policy: EgressPolicy,
    *,
    timeout: float,
    verify: ssl.SSLContext | bool = True,
    limits: httpx.Limits = DEFAULT_LIMITS,
) -> httpx.AsyncClient:
    """The client for user-given URLs: checked connections, no redirects followed, no
    proxy from the environment (it would connect in our place, unchecked)."""
    return httpx.AsyncClient(
        transport=egress_transport(policy, verify, limits),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    )
