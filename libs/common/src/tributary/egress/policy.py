"""The egress policy: which user-given URLs a service may send requests to.

Checked twice: when the URL is saved (:meth:`EgressPolicy.vet_url`, so the
user hears at once which rule the URL breaks) and at connect time, after DNS
resolution, by the transport (:mod:`tributary.egress.transport`), which
connects to the very address it checked, so a name that resolves elsewhere
the second time (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import httpx

from tributary.config import ServiceSettings, split_list
from tributary.egress.addresses import (
    IPAddress,
    IPNetwork,
    Resolver,
    UnresolvableHost,
    refusal,
    resolve,
    system_resolver,
)

#: largest response body read from a user-given URL by default, in bytes
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
WEB_SCHEMES = frozenset({"http", "https"})
HTTPS_ONLY = frozenset({"https"})


class RefusedUrl(ValueError):
    """A URL breaks an egress rule. ``rule`` names it; the message never quotes the URL
    (it may hold a secret path) and says what is wrong in words a user can act on."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class RefusedAddress(RefusedUrl):
    """The host is, or resolves to, an address outbound requests may not reach."""

    def __init__(self, kind: str) -> None:
        super().__init__(
            "address",
            f"the host resolves to a {kind} address, which outbound requests may not reach "
            "unless the operator allow-lists it (EGRESS_ALLOW_NETWORKS, EGRESS_ALLOW_HOSTS)",
        )
        self.kind = kind


@dataclass(frozen=True)
class Target:
    """Where a checked URL points: its scheme, host (lower case, IDNA) and port."""

    scheme: str
    host: str
    port: int


def _normal_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class EgressPolicy:
    """Allow-lists and bounds of requests to user-given URLs (see :func:`refusal`)."""

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: frozenset[str] = frozenset()
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    resolver: Resolver = field(default=system_resolver, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        networks: Iterable[IPNetwork] = (),
        hosts: Iterable[str] = (),
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        resolver: Resolver = system_resolver,
    ) -> EgressPolicy:
        return cls(
            tuple(networks),
            frozenset(_normal_host(h) for h in hosts),
            max_response_bytes,
            resolver,
        )

    @classmethod
    def from_settings(
        cls, settings: ServiceSettings, resolver: Resolver = system_resolver
    ) -> EgressPolicy:
        """The policy the operator set (``EGRESS_*``; validated when settings load)."""
        return cls.of(
            (ipaddress.ip_network(n) for n in split_list(settings.egress_allow_networks)),
            split_list(settings.egress_allow_hosts),
            settings.egress_max_response_bytes,
            resolver,
        )

    # -- the URL itself --------------------------------------------------------------------

    def target(self, url: str, schemes: Collection[str] = WEB_SCHEMES) -> Target:
        """The URL's target after the rules that need no DNS: scheme, no user info, a host."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise RefusedUrl("syntax", "not a valid URL") from None
        if parsed.scheme not in schemes:
            wanted = " or ".join(f"{s}://" for s in sorted(schemes))
            raise RefusedUrl("scheme", f"the URL must start with {wanted}")
        if parsed.userinfo:
            raise RefusedUrl("userinfo", "the URL must not carry a user name or password")
        host = parsed.raw_host.decode("ascii")  # IDNA: the name DNS and the connection use
        if not host:
            raise RefusedUrl("host", "the URL has no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return Target(parsed.scheme, _normal_host(host), port)

    # -- addresses -------------------------------------------------------------------------

    def host_allowed(self, host: str) -> bool:
        return _normal_host(host) in self.allow_hosts

    def check_address(self, ip: IPAddress) -> None:
        """Raise :class:`RefusedAddress` unless ``ip`` may be reached."""
        kind = refusal(ip)
        if kind is not None and not any(ip in net for net in self.allow_networks):
            raise RefusedAddress(kind)

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses of ``host``, every one of them checked (blocking: DNS).

        One refused address refuses the host: a name that resolves to a public and a
        private address must not reach the private one on some later connect."""
        found = resolve(host, port, self.resolver)
        if not self.host_allowed(host):
            for ip in found:
                self.check_address(ip)
        return found

    async def aaddresses(self, host: str, port: int) -> list[IPAddress]:
        """:meth:`addresses` without blocking the event loop."""
        return await asyncio.to_thread(self.addresses, host, port)

    # -- saving a URL ----------------------------------------------------------------------

    def vet_url(self, url: str, schemes: Collection[str] = WEB_SCHEMES) -> Target:
        """Every rule, DNS included (blocking): what a URL must pass to be saved."""
        target = self.target(url, schemes)
        try:
            self.addresses(target.host, target.port)
        except UnresolvableHost:
            raise RefusedUrl("resolve", "the URL's host does not resolve") from None
        return target

    async def avet_url(self, url: str, schemes: Collection[str] = WEB_SCHEMES) -> Target:
        """:meth:`vet_url` without blocking the event loop."""
        return await asyncio.to_thread(self.vet_url, url, schemes)
