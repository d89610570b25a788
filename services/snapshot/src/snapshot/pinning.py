"""Certificate pinning for Outline's self-signed management API certificates.

Outline servers present a self-signed certificate; the only way to trust it
is its SHA-256 fingerprint (``certSha256``). Verification is never turned
off for the API requests themselves:

1. The certificate is read once from the server (a TLS handshake that sends
   nothing) and its fingerprint compared with the pin; a mismatch is refused.
2. That exact certificate becomes the *only* trust anchor of a verifying
   TLS context (``CERT_REQUIRED``), so every later connection must prove
   possession of its private key. Host names are not checked: Outline's
   certificates carry the IP or host in the CN only, and the pin is stricter.
3. Every response's connection is checked against the pin again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl

from snapshot.credentials import ApiUrl
from tributary.egress import EgressPolicy, RefusedAddress, UnresolvableHost


class CollectError(Exception):
    """A collection failed; ``kind`` classifies it and the message is safe to show."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class CertificateMismatch(CollectError):
    def __init__(self, expected: str, presented: str) -> None:
        super().__init__(
            "certificate",
            f"certificate fingerprint mismatch: pinned {expected[:16]}..., "
            f"server presented {presented[:16]}...",
        )
        self.presented = presented


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest().upper()


async def _connect_checked(
    url: ApiUrl, policy: EgressPolicy, probe: ssl.SSLContext
) -> asyncio.StreamWriter:
    """A TLS connection to an address of the apiUrl's host that the egress policy allows
    (checked now, after resolution: the address connected to is the one checked)."""
    try:
        addresses = await policy.aaddresses(url.host, url.port)
    except RefusedAddress as exc:
        raise CollectError("refused-address", str(exc)) from None
    except UnresolvableHost:
        raise CollectError("connect", "cannot connect") from None
    for ip in addresses:
        try:
            _, writer = await asyncio.open_connection(
                str(ip), url.port, ssl=probe, server_hostname=url.host
            )
            return writer
        except ssl.SSLError:
            raise  # it answered: a certificate matter, not a connection one
        except OSError:
            continue
    # the same words whatever failed (refused, unreachable...): no port-scanning oracle
    raise CollectError("connect", "cannot connect")


async def peer_certificate(url: ApiUrl, timeout: float, policy: EgressPolicy) -> bytes:  # noqa: ASYNC109
    """The DER certificate the server presents (read only; nothing is sent or trusted)."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # reading the certificate to compare it with the pin
    try:
        async with asyncio.timeout(timeout):
            writer = await _connect_checked(url, policy, probe)
    except TimeoutError:
        raise CollectError("timeout", "TLS handshake timed out") from None
    except ssl.SSLError:
        raise CollectError("certificate", "TLS handshake failed") from None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(timeout):
                await writer.wait_closed()
    if not der:
        raise CollectError("certificate", "server presented no certificate")
    return bytes(der)


async def pinned_context(
    url: ApiUrl,
    pin: str,
    timeout: float,  # noqa: ASYNC109
    policy: EgressPolicy,
) -> ssl.SSLContext:
    """A verifying TLS context that trusts exactly the pinned certificate."""
    der = await peer_certificate(url, timeout, policy)
    presented = fingerprint(der)
    if presented != pin:
        raise CertificateMismatch(pin, presented)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the CN is all Outline sets; the pin is stricter
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=der)
    return context


def check_connection(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, pin: str) -> None:
    """Raise unless the connection's peer certificate is the pinned one."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise CollectError("certificate", "connection has no peer certificate")
    presented = fingerprint(der)
    if presented != pin:
        raise CertificateMismatch(pin, presented)
