"""Outbound requests to user-given URLs (webhooks, Outline apiUrls): checked when saved,
checked again at connect time, bounded, and recorded as a fixed failure class.

- :mod:`~tributary.egress.addresses`: which addresses are refused, and numeric forms read.
- :mod:`~tributary.egress.policy`: :class:`EgressPolicy`, the allow-lists; URL checks.
- :mod:`~tributary.egress.transport`: the httpx transport that connects to checked IPs.
- :mod:`~tributary.egress.failures`: failure classes, bounded reads.
"""

from tributary.egress.addresses import (
    IPAddress,
    IPNetwork,
    Resolver,
    UnresolvableHost,
    refusal,
    system_resolver,
)
from tributary.egress.failures import (
    CONNECT_FAILED,
    FAILURES,
    HTTP_STATUS,
    REDIRECT,
    REFUSED_ADDRESS,
    TIMEOUT,
    TOO_LARGE,
    ResponseTooLarge,
    classify,
    read_bounded,
    status_failure,
)
from tributary.egress.policy import (
    DEFAULT_MAX_RESPONSE_BYTES,
    HTTPS_ONLY,
    WEB_SCHEMES,
    EgressPolicy,
    RefusedAddress,
    RefusedUrl,
    Target,
)
from tributary.egress.transport import (
    AddressRefusedAtConnect,
    EgressBackend,
    egress_client,
    egress_transport,
)

__all__ = [
    "CONNECT_FAILED",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "FAILURES",
    "HTTPS_ONLY",
    "HTTP_STATUS",
    "REDIRECT",
    "REFUSED_ADDRESS",
    "TIMEOUT",
    "TOO_LARGE",
    "WEB_SCHEMES",
    "AddressRefusedAtConnect",
    "EgressBackend",
    "EgressPolicy",
    "IPAddress",
    "IPNetwork",
    "RefusedAddress",
    "RefusedUrl",
    "Resolver",
    "ResponseTooLarge",
    "Target",
    "UnresolvableHost",
    "classify",
    "egress_client",
    "egress_transport",
    "read_bounded",
    "refusal",
    "status_failure",
    "system_resolver",
]
