"""Which IP addresses an outbound request to a user-given URL may reach.

Every address is judged after normalisation by :mod:`ipaddress`: a host
written as a number (``2852039166``), in octal or hex (``017700000001``,
``0x7f.1``) or short (``127.1``) is read the way the C resolver reads it
(``inet_aton``) before it is judged, and an IPv6 address that carries an
IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``,
6to4, Teredo, NAT64 ``64:ff9b::/96``) is judged by that IPv4 address too.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: A host name to the addresses it resolves to (strings, as getaddrinfo gives them).
#: Blocking; async callers run it on a thread. Tests pass a stub (DNS is third-party).
Resolver = Callable[[str, int], Sequence[str]]

#: RFC 6598 shared address space (carrier-grade NAT): not private, not global either
CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
#: RFC 6052 well-known NAT64 prefix: the last 32 bits are an IPv4 address
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: what inet_aton accepts: one to four parts, each decimal, octal (0...) or hex (0x...)
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)


class UnresolvableHost(OSError):
    """The host name has no address (or its resolution failed)."""


def numeric_host(host: str) -> IPAddress | None:
    """The address ``host`` spells as an IP literal in any form a resolver accepts, or None."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver, in its order, without repeats."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(host) from exc
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


def resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    """Every address ``host`` stands for: itself when it is numeric, else what DNS says."""
    literal = numeric_host(host)
    if literal is not None:
        return [literal]
    answers = resolver(host, port)
    addresses = []
    for answer in answers:
        # a link-local IPv6 answer may carry a zone ("fe80::1%eth0"): judged without it
        parsed = numeric_host(answer.split("%", 1)[0])
        if parsed is None:
            raise UnresolvableHost(host)
        addresses.append(parsed)
    if not addresses:
        raise UnresolvableHost(host)
    return addresses


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries, if any form of it does."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(ip.packed[-4:])
    packed = ip.packed
    if packed[:12] == bytes(12) and int(ip) > 1:  # IPv4-compatible ::a.b.c.d (not :: or ::1)
        return ipaddress.IPv4Address(packed[-4:])
    return None


def _rule(ip: IPAddress) -> str | None:
    checks: tuple[tuple[bool, str], ...] = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT, "shared (CGNAT)"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "site-local"),
    )
    for broken, name in checks:
        if broken:
            return name
    return None if ip.is_global else "not globally routable"


def refusal(ip: IPAddress) -> str | None:
    """The kind of address ``ip`` is when outbound requests may not reach it, else None."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            rule = _rule(inner)
            if rule is not None:
                return f"{rule} (embedded in IPv6)"
    return _rule(ip)
