"""SQLAlchemy 2 engines and sessions, one schema per service, bounded wait for the database.

PostgreSQL services keep their tables in their own schema: the engine puts
that schema first on each connection's ``search_path`` so table definitions
stay schema-free (tests use a throwaway schema the same way). On MySQL the
database named in the URL plays that role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from tributary.backoff import compute_backoff

if TYPE_CHECKING:
    from tributary.config import ServiceSettings

log = logging.getLogger(__name__)

#: how long start-up waits for the database before giving up, in seconds
DEFAULT_DB_WAIT_SECONDS = 60.0
#: backoff between attempts to reach the database at start-up: first and longest, seconds
DB_WAIT_BASE_SECONDS = 0.4
DB_WAIT_MAX_SECONDS = 5.0


def _url(url: str | SecretStr | URL) -> URL:
    if isinstance(url, SecretStr):
        url = url.get_secret_value()
    return make_url(url)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@dataclass(frozen=True, slots=True)
class DatabaseTls:
    """TLS to the database (``DATABASE_TLS_*``), in libpq's terms for both drivers:
    ``require`` encrypts, ``verify-ca`` checks the certificate against the CA,
    ``verify-full`` checks the host name too."""

    mode: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def of(cls, settings: ServiceSettings) -> DatabaseTls:
        return cls(
            settings.database_tls_mode,
            settings.database_tls_ca_file,
            settings.database_tls_cert_file,
            settings.database_tls_key_file,
        )

    def connect_args(self, backend: str) -> dict[str, object]:
        """The driver's connection arguments (psycopg: libpq's ``ssl*``; PyMySQL: ``ssl``)."""
        if self.mode is None:
            return {}
        if backend == "postgresql":
            args: dict[str, object] = {"sslmode": self.mode}
            files = {"sslrootcert": self.ca_file, "sslcert": self.cert_file}
            files["sslkey"] = self.key_file
            return args | {k: v for k, v in files.items() if v}
        if backend == "mysql" and self.mode == "disable":
            return {"ssl_disabled": True}
        if backend == "mysql":
            ssl: dict[str, object] = {
                "verify_mode": self.mode in ("verify-ca", "verify-full"),
                "check_hostname": self.mode == "verify-full",
            }
            for name, path in (("ca", self.ca_file), ("cert", self.cert_file)):
                if path:
                    ssl[name] = path
            if self.key_file:
                ssl["key"] = self.key_file
            return {"ssl": ssl}
        return {}


def make_engine(
    url: str | SecretStr | URL,
    schema: str | None = None,
    pool_size: int = 10,
    tls: DatabaseTls | None = None,
    **kwargs: object,
) -> Engine:
    """An engine for ``url``; on PostgreSQL, ``schema`` leads the search path.

    Statement parameters are kept out of error messages (``hide_parameters``): an
    error's text reaches logs, DLQ entries and job records, and a parameter can be a
    secret (an encrypted apiUrl, a webhook key, a token)."""
    parsed = _url(url)
    backend = parsed.get_backend_name()
    connect_args: dict[str, object] = dict(tls.connect_args(backend)) if tls else {}
    if backend == "postgresql" and schema:
        connect_args["options"] = f"-csearch_path={schema},public"
    if backend == "mysql":
        connect_args["charset"] = "utf8mb4"
    return sa.create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args=connect_args,
        **kwargs,
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def create_schema(conn: sa.Connection, schema: str) -> None:
    """Create a PostgreSQL schema unless it exists.

    Looked up first: a least-privilege role owns its schema but may not create
    schemas in the database, and PostgreSQL checks that right even for
    ``CREATE SCHEMA IF NOT EXISTS`` of one that exists (docs/security.md)."""
    known = sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :schema")
    if conn.execute(known, {"schema": schema}).first() is None:
        quoted = conn.dialect.identifier_preparer.quote_identifier(schema)
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))


def ensure_schema(engine: Engine, schema: str) -> None:
    """Create the service's schema (PostgreSQL) if it does not exist yet."""
    if is_postgres(engine):
        with engine.begin() as conn:
            create_schema(conn, schema)


def _select_one(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def _retry_delay(
    attempt: int, deadline: float, timeout: float, exc: sa.exc.OperationalError
) -> float:
    """The wait before the next attempt to reach the database; TimeoutError past the deadline."""
    delay = compute_backoff(attempt, base=DB_WAIT_BASE_SECONDS, cap=DB_WAIT_MAX_SECONDS)
    if time.monotonic() + delay > deadline:
        raise TimeoutError(f"database not reachable after {timeout:.0f}s: {exc.orig!s}") from None
    log.warning("database not reachable yet, retrying in %.1fs", delay)
    return delay


def wait_for_db(engine: Engine, timeout: float = DEFAULT_DB_WAIT_SECONDS) -> None:
    """Block until ``SELECT 1`` succeeds, retrying with backoff; raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            _select_one(engine)
            return
        except sa.exc.OperationalError as exc:
            attempt += 1
            time.sleep(_retry_delay(attempt, deadline, timeout, exc))


async def await_db(
    engine: Engine, stop: asyncio.Event, wait_s: float = DEFAULT_DB_WAIT_SECONDS
) -> bool:
    """:func:`wait_for_db` for a process that must still obey SIGTERM while it waits:
    True once the database answers, False as soon as ``stop`` is set."""
    deadline = time.monotonic() + wait_s
    attempt = 0
    while not stop.is_set():
        try:
            await asyncio.to_thread(_select_one, engine)
            return True
        except sa.exc.OperationalError as exc:
            attempt += 1
            delay = _retry_delay(attempt, deadline, wait_s, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return False


#: PostgreSQL SQLSTATEs of a transaction that lost a race: serialization failure, deadlock
_PG_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
#: MySQL/MariaDB error codes of the same: deadlock (1213), and MariaDB's "record has
#: changed since last read" (1020) raised under ``innodb_snapshot_isolation``
_MYSQL_RETRYABLE_ERRNOS = frozenset({1213, 1020})


def is_retryable_conflict(exc: BaseException) -> bool:
    """True when ``exc`` means "the database rolled this transaction back, run it again".

    Only conflicts between concurrent transactions count (deadlock victim,
    serialization failure): the whole transaction was undone, so running it
    again from the start is safe and usually succeeds. Lock wait timeouts are
    deliberately excluded: they point at something stuck, not at a race.
    """
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in _PG_RETRYABLE_SQLSTATES
    args: tuple[object, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _MYSQL_RETRYABLE_ERRNOS
