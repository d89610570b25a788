"""Exception types shared by every service.

Control flow through a handler is by exception, as in dramatiq: a handler
raises ``Retry`` to be tried again later, ``Reject`` to go to the dead-letter
stream at once; anything else is retried until the delivery limit.
"""

from __future__ import annotations

from collections.abc import Sequence


class TributaryError(Exception):
    """Base class of the library's own errors."""


class ConfigError(TributaryError):
    """A setting is missing or invalid; the message names the variable."""


class MalformedEvent(TributaryError):
    """A stream entry is not a valid event envelope or its payload fails validation."""


class Retry(TributaryError):
    """Raised by a handler to be redelivered later (after ``delay_s`` seconds if given)."""

    def __init__(self, reason: str = "retry requested", delay_s: float | None = None) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


class Reject(TributaryError):
    """Raised by a handler for an event that can never succeed: dead-lettered at once."""


class LeaseLost(TributaryError):
    """The leader lease was lost while work that needs it was running."""


class ServiceCrashed(TributaryError):
    """A task of a running service failed: the service stopped cleanly and exits non-zero."""


class StoppedBeforeStart(TributaryError):
    """SIGTERM/SIGINT arrived while the service was still starting (waiting for a store)."""


class CycleFailed(TributaryError):
    """The work of a one-shot verb (``once``, ``collect``, ...) failed, wholly or in part.

    The message says what, in one line; :func:`tributary.cli.main` prints it on stderr
    and the process exits 1. ``once`` raises it after finishing what it could (the
    outbox is still published), so a cron job or CronJob sees the failure.
    """


#: failures a summary names at most; the rest are counted
SUMMARY_SHOWN = 5


def failure_summary(what: str, failed: Sequence[str], total: int | None = None) -> str:
    """The line of a :class:`CycleFailed`: ``2 of 3 servers not collected: a (why); b
    (why)``, naming at most :data:`SUMMARY_SHOWN` (``and N more``); "" when none failed."""
    if not failed:
        return ""
    shown = "; ".join(failed[:SUMMARY_SHOWN])
    more = f"; and {len(failed) - SUMMARY_SHOWN} more" if len(failed) > SUMMARY_SHOWN else ""
    counted = f"{len(failed)} of {total}" if total is not None else str(len(failed))
    return f"{counted} {what}: {shown}{more}"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of its message``, secrets masked: a failure told in one line.

    A DBAPI error wrapped by SQLAlchemy says its driver's message, without the statement
    and parameters SQLAlchemy appends."""
    from tributary.logs import redact  # imported when a failure is told, not at start-up

    detail = getattr(exc, "orig", None) or exc
    lines = str(detail).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__
    return redact(text)
