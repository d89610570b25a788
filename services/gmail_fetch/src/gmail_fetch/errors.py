"""How a job attempt can end other than by completing.

A job attempt either completes, or raises one of these: ``PermanentJobError``
fails the job at once (missing permissions, unknown user; ``AuthorizationRevoked``
for a revoked grant, which also marks the account),
``TransientJobError`` retries it with backoff up to ``job_max_attempts``,
``JobCancelled`` stops it because a client cancelled it.
"""

from __future__ import annotations


class JobError(Exception):
    """Base of the ways a job attempt fails; the message is shown to clients."""


class PermanentJobError(JobError):
    """Retrying cannot help: the job fails at once."""


class AuthorizationRevoked(PermanentJobError):
    """The refresh token was refused (``invalid_grant``): every job of the account fails
    without calling Google until the user authorizes it again (``accounts add``)."""


class TransientJobError(JobError):
    """Network, 5xx, rate limits past their backoff budget: the job is tried again.

    ``retry_after``: seconds Gmail asked us to wait ("Retry after <time>"); the next
    attempt waits at least that long (up to the job's longest backoff).
    """

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobCancelled(Exception):
    """The job was cancelled (DELETE) while it ran."""


class HistoryExpired(Exception):
    """history.list answered 404: the stored startHistoryId is too old; do a full sync."""
