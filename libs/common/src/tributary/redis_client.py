"""The one way the library and the services open a Redis client.

Replies are decoded as UTF-8 text (``decode_responses``), but with
``surrogateescape``: bytes that are not UTF-8 become lone surrogates
(U+DC80..U+DCFF) instead of raising ``UnicodeDecodeError`` inside the read
command. Stream entries are written by other systems; one entry with a stray
``0xff`` byte must not make every read of its stream fail. Such text is found
by :func:`tributary.wire.undecodable` and turned back into the exact original
bytes by :func:`tributary.wire.to_bytes` (a dead-letter copy, a replay).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

if TYPE_CHECKING:
    from tributary.config import ServiceSettings

#: what invalid UTF-8 in a reply decodes to (and encodes back from)
ENCODING_ERRORS = "surrogateescape"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is and how to reach it: the URL plus the ACL user and the TLS files
    that the settings may give apart from it (a password from a Secret, not in the URL)."""

    url: str
    username: str | None = None
    password: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_check_hostname: bool = True

    @classmethod
    def of(cls, settings: ServiceSettings) -> RedisTarget:
        password = settings.redis_password
        return cls(
            url=settings.redis_url.get_secret_value(),
            username=settings.redis_username,
            password=password.get_secret_value() if password is not None else None,
            tls_ca_file=settings.redis_tls_ca_file,
            tls_cert_file=settings.redis_tls_cert_file,
            tls_key_file=settings.redis_tls_key_file,
            tls_check_hostname=settings.redis_tls_check_hostname,
        )

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss://")

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``from_url`` beyond the URL's own."""
        options: dict[str, Any] = {}
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password
        if self.tls:
            # verified by default: the server's certificate against the CA (or the
            # system's trust store) and, unless turned off, its host name
            options["ssl_cert_reqs"] = "required"
            options["ssl_check_hostname"] = self.tls_check_hostname
            if self.tls_ca_file:
                options["ssl_ca_certs"] = self.tls_ca_file
            if self.tls_cert_file:
                options["ssl_certfile"] = self.tls_cert_file
                options["ssl_keyfile"] = self.tls_key_file
        return options


def connect(target: RedisTarget | str, **options: Any) -> aioredis.Redis:
    """An asyncio client of the Redis at ``target`` that decodes replies binary-safely."""
    if isinstance(target, str):
        target = RedisTarget(target)
    return aioredis.Redis.from_url(
        target.url,
        decode_responses=True,
        encoding_errors=ENCODING_ERRORS,
        **target.options(),
        **options,
    )
