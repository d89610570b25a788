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
from redis.asyncio.sentinel import Sentinel

from tributary.config import parse_addresses

if TYPE_CHECKING:
    from tributary.config import ServiceSettings

#: what invalid UTF-8 in a reply decodes to (and encodes back from)
ENCODING_ERRORS = "surrogateescape"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is and how to reach it: the URL plus the ACL user and the TLS files
    that the settings may give apart from it (a password from a Secret, not in the URL),
    or the sentinels that say which server is the master now."""

    url: str
    username: str | None = None
    password: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_check_hostname: bool = True
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    sentinel_password: str | None = None

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
            sentinels=parse_addresses(settings.redis_sentinels),
            sentinel_master=settings.redis_sentinel_master,
            sentinel_password=(
                settings.redis_sentinel_password.get_secret_value()
                if settings.redis_sentinel_password is not None
                else None
            ),
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
    if target.sentinels:
        return _master_of(target, **options)
    return aioredis.Redis.from_url(
        target.url,
        decode_responses=True,
        encoding_errors=ENCODING_ERRORS,
        **target.options(),
        **options,
    )


def _master_of(target: RedisTarget, **options: Any) -> aioredis.Redis:
    """A client of the master the sentinels name: it asks them again whenever a
    connection fails, so it follows a failover (writes in flight then fail once). The
    URL gives the database number (and a user and password, if it names them)."""
    from redis.connection import parse_url

    from_url: dict[str, Any] = parse_url(target.url)  # type: ignore[no-untyped-call]
    kwargs: dict[str, Any] = {
        "db": from_url.get("db", 0),
        "decode_responses": True,
        "encoding_errors": ENCODING_ERRORS,
        **{k: v for k, v in from_url.items() if k in ("username", "password")},
        **target.options(),
        **options,
    }
    if target.tls:
        kwargs["ssl"] = True
    sentinel_kwargs: dict[str, Any] = {"decode_responses": True}
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.tls:
        sentinel_kwargs |= {k: v for k, v in target.options().items() if k.startswith("ssl")}
        sentinel_kwargs["ssl"] = True
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client: _SentinelManaged = sentinel.master_for(
        target.sentinel_master, redis_class=_SentinelManaged, **kwargs
    )
    client.sentinel_client = sentinel
    return client


class _SentinelManaged(aioredis.Redis):
    """A master's client that also closes its connections to the sentinels."""

    sentinel_client: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_client is not None:
            for each in self.sentinel_client.sentinels:
                await each.aclose()
