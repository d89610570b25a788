"""Is a failure the unavailability of Redis or a database, rather than the event's fault?

A handler that fails because PostgreSQL is restarting would fail the same way for
every event; spending the event's delivery attempts on it would dead-letter good
events during any outage longer than the retries. The runner retries such failures
without counting them (see :class:`tributary.streams.middleware.Retries`).

Only connection-level failures count: a lost or refused connection, a pool that
cannot hand one out, Redis loading its data set after a restart. Server errors with
a SQLSTATE (deadlocks, statement timeouts, constraint violations) do not: an event
that always times out must still reach the dead-letter stream.
"""

from __future__ import annotations

import sys

import redis.exceptions as redis_errors

#: MySQL client errors of a connection: can't connect (2003), server has gone away
#: (2006), lost connection during query (2013), lost connection at handshake (2055)
_MYSQL_CONNECTION_ERRORS = frozenset({2003, 2006, 2013, 2055})


def _dbapi_connection_failure(orig: BaseException | None) -> bool:
    if orig is None:
        return False
    sqlstate = getattr(orig, "sqlstate", "unknown")
    if sqlstate is None:  # psycopg: no server answer, so no SQLSTATE: the connection failed
        return type(orig).__name__ in {"OperationalError", "InterfaceError"}
    args: tuple[object, ...] = getattr(orig, "args", ())
    return len(args) > 0 and args[0] in _MYSQL_CONNECTION_ERRORS


def _database_outage(exc: BaseException) -> bool:
    """A SQLAlchemy pool timeout, or a DBAPI error of a lost or refused connection."""
    # no SQLAlchemy error can exist in a process that never imported SQLAlchemy (a
    # worker without a database): do not import it (0.1 s at start-up) to find out
    if "sqlalchemy.exc" not in sys.modules:
        return False
    import sqlalchemy.exc as sa_errors

    if isinstance(exc, sa_errors.TimeoutError):  # the pool had no connection to give
        return True
    return isinstance(exc, sa_errors.DBAPIError) and (
        exc.connection_invalidated or _dbapi_connection_failure(exc.orig)
    )


def is_dependency_outage(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a Redis or database connection failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            redis_errors.ConnectionError
            | redis_errors.TimeoutError
            | redis_errors.BusyLoadingError,
        ):
            return True
        if _database_outage(current):
            return True
        current = current.__cause__ or current.__context__
    return False
