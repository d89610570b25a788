"""Exception types shared by every service.

Control flow through a handler is by exception, as in dramatiq: a handler
raises ``Retry`` to be tried again later, ``Reject`` to go to the dead-letter
stream at once; anything else is retried until the delivery limit.
"""

from __future__ import annotations


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
