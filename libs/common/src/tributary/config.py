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
import os
import re
from typing import Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
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
DocsMode = Literal["off", "protected", "public"]
DatabaseTlsMode = Literal["disable", "require", "verify-ca", "verify-full"]
#: algorithms a JWT may be signed with: asymmetric only (the JWKS is public)
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (HTTP_HOST) only listens on this machine's loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def shared(name: str) -> AliasChoices:
    """Alias for a setting every service reads under the same, unprefixed name."""
    return AliasChoices(name)


def parse_addresses(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (``REDIS_SENTINELS``) as pairs; ValueError naming a bad one."""
    found = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{entry!r} is not host:port")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def _check_tls_files(what: str, ca: str | None, cert: str | None, key: str | None) -> None:
    """Each named file is readable, and a client certificate comes with its key."""
    if bool(cert) != bool(key):
        raise ValueError(f"{what}_TLS_CERT_FILE and {what}_TLS_KEY_FILE go together")
    for name, path in (("CA", ca), ("CERT", cert), ("KEY", key)):
        if path and not os.access(path, os.R_OK):
            raise ValueError(f"{what}_TLS_{name}_FILE={path}: not a readable file")


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
    redis_sentinels: str = Field(
        "",
        validation_alias=shared("REDIS_SENTINELS"),
        description="Redis Sentinel addresses, host:port comma-separated: the client asks "
        "them for the master of REDIS_SENTINEL_MASTER and follows failovers (REDIS_URL then "
        "gives only the scheme, redis:// or rediss://, and the database number).",
    )
    redis_sentinel_master: str = Field(
        "mymaster",
        min_length=1,
        validation_alias=shared("REDIS_SENTINEL_MASTER"),
        description="Name of the master the sentinels monitor.",
    )
    redis_sentinel_password: SecretStr | None = Field(
        None,
        validation_alias=shared("REDIS_SENTINEL_PASSWORD"),
        description="Password of the sentinels themselves (their requirepass), if any.",
    )
    redis_username: str | None = Field(
        None,
        validation_alias=shared("REDIS_USERNAME"),
        description="Redis ACL user (default: the URL's, else `default`); docs/security.md "
        "gives each service's ACL.",
    )
    redis_password: SecretStr | None = Field(
        None,
        validation_alias=shared("REDIS_PASSWORD"),
        description="Password of the Redis user (default: the URL's); keeps it out of the URL.",
    )
    redis_tls_ca_file: str | None = Field(
        None,
        validation_alias=shared("REDIS_TLS_CA_FILE"),
        description="PEM file of the CA(s) that sign the Redis server's certificate "
        "(rediss:// only; default: the system's trust store).",
    )
    redis_tls_cert_file: str | None = Field(
        None,
        validation_alias=shared("REDIS_TLS_CERT_FILE"),
        description="Client certificate (PEM) for a Redis that requires one (tls-auth-clients).",
    )
    redis_tls_key_file: str | None = Field(
        None,
        validation_alias=shared("REDIS_TLS_KEY_FILE"),
        description="Private key (PEM) of REDIS_TLS_CERT_FILE.",
    )
    redis_tls_check_hostname: bool = Field(
        True,
        validation_alias=shared("REDIS_TLS_CHECK_HOSTNAME"),
        description="Check that the Redis server's certificate names the host of REDIS_URL.",
    )
    database_tls_mode: DatabaseTlsMode | None = Field(
        None,
        validation_alias=shared("DATABASE_TLS_MODE"),
        description="TLS to the database: disable, require (encrypted, unverified), verify-ca "
        "or verify-full (CA and host name checked); default: the driver's.",
    )
    database_tls_ca_file: str | None = Field(
        None,
        validation_alias=shared("DATABASE_TLS_CA_FILE"),
        description="PEM file of the CA(s) that sign the database server's certificate.",
    )
    database_tls_cert_file: str | None = Field(
        None,
        validation_alias=shared("DATABASE_TLS_CERT_FILE"),
        description="Client certificate (PEM) for databases that authenticate clients by one.",
    )
    database_tls_key_file: str | None = Field(
        None,
        validation_alias=shared("DATABASE_TLS_KEY_FILE"),
        description="Private key (PEM) of DATABASE_TLS_CERT_FILE.",
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
    http_host: str = Field(
        "127.0.0.1",
        min_length=1,
        validation_alias=shared("HTTP_HOST"),
        description="Address the HTTP API listens on; 0.0.0.0 (all) in containers.",
    )
    http_allow_insecure: bool = Field(
        False,
        validation_alias=shared("HTTP_ALLOW_INSECURE"),
        description="Serve the API without authentication on a non-loopback HTTP_HOST "
        "(a warning at every start). Never in production.",
    )
    http_docs: DocsMode = Field(
        "off",
        validation_alias=shared("HTTP_DOCS"),
        description="/docs, /redoc and /openapi.json: off, protected (the read scope) or public.",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        validation_alias=shared("METRICS_PORT"),
        description="Serve /metrics without credentials on this port only (Prometheus "
        "scraping the pod); unset: on HTTP_PORT, behind the scope <service>:metrics.",
    )
    api_tokens: SecretStr = Field(
        SecretStr(""),
        validation_alias=shared("API_TOKENS"),
        description="Static API tokens, name:token:scopes entries separated by commas or new "
        "lines (e.g. ops:<token>:alert:read alert:write); several at once for rotation.",
    )
    oidc_issuer: str | None = Field(
        None,
        validation_alias=shared("OIDC_ISSUER"),
        description="Accept OAuth 2 / OIDC access tokens (JWTs) from this issuer (its exact "
        "iss); keys from its discovery document unless OIDC_JWKS_URL is set.",
    )
    oidc_audience: str | None = Field(
        None,
        validation_alias=shared("OIDC_AUDIENCE"),
        description="The aud a JWT must carry (required with OIDC_ISSUER).",
    )
    oidc_jwks_url: str | None = Field(
        None,
        validation_alias=shared("OIDC_JWKS_URL"),
        description="The issuer's JWKS URL (default: jwks_uri of its discovery document).",
    )
    oidc_algorithms: str = Field(
        "RS256,ES256",
        validation_alias=shared("OIDC_ALGORITHMS"),
        description="Comma-separated JWT signature algorithms accepted (asymmetric only).",
    )
    oidc_leeway_seconds: float = Field(
        30.0,
        ge=0,
        le=300,
        validation_alias=shared("OIDC_LEEWAY_SECONDS"),
        description="Clock skew tolerated on a JWT's exp and nbf, in seconds.",
    )
    oidc_jwks_cache_seconds: float = Field(
        3600.0,
        gt=0,
        validation_alias=shared("OIDC_JWKS_CACHE_SECONDS"),
        description="How long the issuer's key set is used before it is fetched again.",
    )
    oidc_jwks_min_refresh_seconds: float = Field(
        30.0,
        ge=0,
        validation_alias=shared("OIDC_JWKS_MIN_REFRESH_SECONDS"),
        description="Least time between two key set fetches prompted by an unknown key id.",
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

    # -- retention (tributary.retention; docs/operations.md "Retention and footprint") --
    retention_enabled: bool = Field(
        True,
        validation_alias=shared("RETENTION_ENABLED"),
        description="Run the retention pass (streams, inbox, outbox, tables) on the lease holder.",
    )
    retention_interval_seconds: float = Field(
        60.0,
        gt=0,
        validation_alias=shared("RETENTION_INTERVAL_SECONDS"),
        description="Seconds between retention passes.",
    )
    stream_retention: str = Field(
        "",
        validation_alias=shared("STREAM_RETENTION"),
        description=(
            "Overrides of the catalog's stream retention: `<stream>=<age>[/<length>],...` "
            "(age: 90s, 30m, 6h, 7d or -; `dlq` = every <stream>.dlq)."
        ),
    )
    inbox_retention_hours: float = Field(
        168.0,
        gt=0,
        validation_alias=shared("INBOX_RETENTION_HOURS"),
        description="Processed-event ids are kept this long (at least the DLQ age: replays).",
    )
    outbox_retention_hours: float = Field(
        24.0,
        gt=0,
        validation_alias=shared("OUTBOX_RETENTION_HOURS"),
        description="Published outbox rows are kept this long.",
    )
    retention_batch_rows: int = Field(
        5000,
        ge=100,
        validation_alias=shared("RETENTION_BATCH_ROWS"),
        description="Rows one retention DELETE removes at most (one short transaction each).",
    )
    retention_slice_entries: int = Field(
        10_000,
        ge=1000,
        validation_alias=shared("RETENTION_SLICE_ENTRIES"),
        description="Stream entries one XTRIM removes at most.",
    )
    retention_duty_cycle: float = Field(
        0.5,
        gt=0,
        le=1,
        validation_alias=shared("RETENTION_DUTY_CYCLE"),
        description="Share of its time a pass works; it pauses between slices for the rest.",
    )
    retention_lag_warn_entries: int = Field(
        1_000_000,
        ge=1,
        validation_alias=shared("RETENTION_LAG_WARN_ENTRIES"),
        description="A group holding back more entries than this is lagging (warning, metric).",
    )
    retention_trim_past_lagging: bool = Field(
        False,
        validation_alias=shared("RETENTION_TRIM_PAST_LAGGING"),
        description="Trim past a lagging group's unacknowledged entries (they are lost to it).",
    )

    @field_validator("stream_retention")
    @classmethod
    def _known_streams(cls, value: str) -> str:
        from tributary.catalog import STREAMS
        from tributary.retention.policy import parse_overrides

        parse_overrides(value, STREAMS)
        return value

    @model_validator(mode="after")
    def _inbox_outlives_replays(self) -> ServiceSettings:
        from tributary.catalog import DLQ_RETENTION, STREAMS
        from tributary.retention.policy import DLQ_NAME, format_age, parse_overrides

        dlq = parse_overrides(self.stream_retention, STREAMS).get(DLQ_NAME, DLQ_RETENTION)
        if dlq.max_age_s is None or self.inbox_retention_hours * 3600 < dlq.max_age_s:
            raise ValueError(
                f"INBOX_RETENTION_HOURS ({self.inbox_retention_hours:g}) must cover the DLQ "
                f"age ({format_age(dlq.max_age_s)}): a replayed dead letter whose inbox row "
                "is gone would take effect twice"
            )
        return self

    @field_validator("api_tokens")
    @classmethod
    def _tokens_parse(cls, value: SecretStr) -> SecretStr:
        from tributary.web.tokens import parse_api_tokens

        parse_api_tokens(value.get_secret_value())  # ValueError names the entry, not the token
        return value

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric(cls, value: str) -> str:
        names = [a.strip() for a in value.split(",") if a.strip()]
        refused = [a for a in names if a not in ASYMMETRIC_ALGORITHMS]
        if not names or refused:
            raise ValueError(
                f"only asymmetric algorithms ({', '.join(sorted(ASYMMETRIC_ALGORITHMS))}); "
                f"refused: {', '.join(refused) or '(none given)'}"
            )
        return ",".join(names)

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: str) -> str:
        parse_addresses(value)  # ValueError names the bad entry
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> Self:
        _check_tls_files("REDIS", self.redis_tls_ca_file, self.redis_tls_cert_file,
                         self.redis_tls_key_file)  # fmt: skip
        redis_tls = self.redis_url.get_secret_value().startswith("rediss://")
        if not redis_tls and (self.redis_tls_ca_file or self.redis_tls_cert_file):
            raise ValueError("REDIS_TLS_* files need a rediss:// REDIS_URL (TLS)")
        _check_tls_files("DATABASE", self.database_tls_ca_file, self.database_tls_cert_file,
                         self.database_tls_key_file)  # fmt: skip
        if self.database_tls_mode in ("verify-ca", "verify-full") and not (
            self.database_tls_ca_file
        ):
            raise ValueError(
                f"DATABASE_TLS_MODE={self.database_tls_mode} needs DATABASE_TLS_CA_FILE"
            )
        if self.database_tls_mode == "disable" and (
            self.database_tls_ca_file or self.database_tls_cert_file
        ):
            raise ValueError("DATABASE_TLS_* files are given but DATABASE_TLS_MODE=disable")
        return self

    @model_validator(mode="after")
    def _safe_exposure(self) -> Self:
        if self.oidc_issuer and not self.oidc_audience:
            raise ValueError("OIDC_AUDIENCE is required with OIDC_ISSUER")
        if self.http_port and self.http_exposed_without_auth and not self.http_allow_insecure:
            raise ValueError(
                f"HTTP_HOST={self.http_host} is not a loopback address and no API "
                "authentication is configured: set API_TOKENS or OIDC_ISSUER (or "
                "HTTP_ALLOW_INSECURE=true to serve an open API anyway, never in production)"
            )
        return self

    @property
    def api_auth_configured(self) -> bool:
        return bool(self.api_tokens.get_secret_value().strip()) or bool(self.oidc_issuer)

    @property
    def http_exposed_without_auth(self) -> bool:
        return not self.api_auth_configured and not is_loopback(self.http_host)

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
        if not err["loc"]:  # a rule across settings: its message names the variables
            parts.append(err["msg"].removeprefix("Value error, "))
            continue
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
