"""Settings from the environment, validated at start-up.

A service subclasses :class:`ServiceSettings` with its own ``env_prefix``
(``SNAPSHOT_``, ``TRAFFIC_SYNC_``...). The shared names (``REDIS_URL``,
``DATABASE_URL``, ``STREAM_PREFIX``, ``LOG_LEVEL``, ``HTTP_PORT``, ``OTEL_*``)
carry no prefix: they are declared with an explicit alias.

:func:`load_settings` turns pydantic's multi-line report into one line that
names the bad variable, raised as :class:`ConfigError`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tributary.errors import ConfigError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: largest request body read by default, in bytes: far above any body a service takes
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
#: largest response body read from a user-given URL by default, in bytes
DEFAULT_EGRESS_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def shared(name: str) -> AliasChoices:
    """Alias for a setting every service reads under the same, unprefixed name."""
    return AliasChoices(name)


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclass and set ``model_config`` with an env_prefix."""

    model_config = SettingsConfigDict(
        env_prefix="TRIBUTARY_", extra="ignore", populate_by_name=True, frozen=True
    )
    #: the service's name, used as OTel service.name, consumer group and schema
    service_name: ClassVar[str] = "tributary"

    redis_url: SecretStr = Field(
        SecretStr(DEFAULT_REDIS_URL),
        validation_alias=shared("REDIS_URL"),
        description="Redis URL (streams, leases, counters).",
    )
    database_url: SecretStr = Field(
        SecretStr(DEFAULT_DATABASE_URL),
        validation_alias=shared("DATABASE_URL"),
        description="SQLAlchemy URL of the service's database.",
    )
    stream_prefix: str = Field(
        "",
        validation_alias=shared("STREAM_PREFIX"),
        description="Prefix put in front of every stream and Redis key.",
    )
    log_level: LogLevel = Field(
        "INFO", validation_alias=shared("LOG_LEVEL"), description="Log level."
    )
    http_port: int = Field(
        8000,
        ge=0,
        le=65535,
        validation_alias=shared("HTTP_PORT"),
        description="Port of the HTTP API (/healthz, /readyz, /metrics); 0 disables it.",
    )
    http_max_body_bytes: int = Field(
        DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        validation_alias=shared("HTTP_MAX_BODY_BYTES"),
        description="Largest request body the HTTP API reads, in bytes; larger ones get a 413.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        validation_alias=shared("OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP endpoint; traces are exported only when set.",
    )
    db_schema: str | None = Field(
        None,
        validation_alias=shared("DB_SCHEMA"),
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema of the service's tables (default: the service's own).",
    )
    consumer_name: str | None = Field(
        None,
        validation_alias=shared("CONSUMER_NAME"),
        description="Stable consumer name of this replica (default: host name).",
    )
    shutdown_timeout_seconds: float = Field(
        20.0,
        gt=0,
        validation_alias=shared("SHUTDOWN_TIMEOUT_SECONDS"),
        description="Bound on graceful shutdown: in-flight handlers get this long.",
    )
    max_deliveries: int = Field(
        5,
        ge=1,
        validation_alias=shared("MAX_DELIVERIES"),
        description="Deliveries of one entry before it goes to <stream>.dlq.",
    )

    egress_allow_networks: str = Field(
        "",
        validation_alias=shared("EGRESS_ALLOW_NETWORKS"),
        description="Networks (CIDR, comma-separated) that requests to user-given URLs "
        "(webhooks, Outline apiUrls) may reach although loopback, private, link-local...",
    )
    egress_allow_hosts: str = Field(
        "",
        validation_alias=shared("EGRESS_ALLOW_HOSTS"),
        description="Host names (comma-separated) that requests to user-given URLs may "
        "reach whatever they resolve to.",
    )
    egress_max_response_bytes: int = Field(
        DEFAULT_EGRESS_MAX_RESPONSE_BYTES,
        ge=1024,
        validation_alias=shared("EGRESS_MAX_RESPONSE_BYTES"),
        description="Largest response body read from a user-given URL, in bytes.",
    )

    @field_validator("egress_allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in split_list(value):
            try:
                ipaddress.ip_network(item)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not a network in CIDR notation ({exc})") from None
        return value

    @field_validator("egress_allow_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        for item in split_list(value):
            if not _HOST_NAME.match(item.lower().rstrip(".")):
                raise ValueError(f"{item!r} is not a host name")
        return value

    @field_validator("stream_prefix")
    @classmethod
    def _prefix_has_no_spaces(cls, value: str) -> str:
        if any(ch.isspace() for ch in value):
            raise ValueError("must not contain white space")
        return value


S = TypeVar("S", bound=BaseSettings)


def split_list(value: str) -> list[str]:
    """The items of a comma- (or space-) separated setting."""
    return [item for item in re.split(r"[,\s]+", value) if item]


def _variable_name(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    """The environment variable a pydantic error location refers to."""
    if not loc:
        return "<settings>"
    field_name = str(loc[0])
    field = cls.model_fields.get(field_name)
    if field is not None and isinstance(field.validation_alias, AliasChoices):
        first = field.validation_alias.choices[0]
        if isinstance(first, str):
            return first
    if field is None:
        # loc[0] is already the alias when pydantic reports it so
        return field_name.upper()
    prefix = str(cls.model_config.get("env_prefix") or "")
    return f"{prefix}{field_name}".upper()


def describe_validation_error(cls: type[BaseSettings], exc: ValidationError) -> str:
    """One line naming every bad variable and what is wrong with it."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        parts.append(f"{_variable_name(cls, err['loc'])}: {err['msg']}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment, raising ConfigError with one clear line."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(cls, exc)) from None


def settings_table(cls: type[BaseSettings]) -> list[tuple[str, str, str]]:
    """(variable, default, description) rows for the README's configuration table."""
    rows = []
    for name, field in cls.model_fields.items():
        var = _variable_name(cls, (name,))
        if field.is_required():
            default = "(required)"
        else:
            value = field.get_default(call_default_factory=True)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            default = "" if value is None else str(value)
        rows.append((var, default, field.description or ""))
    return rows


def render_settings_table(cls: type[BaseSettings]) -> str:
    """The Markdown table of ``cls``'s variables, as the README shows it."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for var, default, description in settings_table(cls):
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{var}` | {shown} | {description} |")
    return "\n".join(lines)
