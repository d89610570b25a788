"""How a runner consumes (:class:`RunnerOptions`) and what one handler may ask for itself
(:class:`HandlerOptions`, as dramatiq's ``actor(max_retries=, throws=)`` and arq's
``func(timeout=, max_tries=)``)."""

from __future__ import annotations

from dataclasses import dataclass

#: an entry whose names and values add up to more characters than this is not decoded:
#: it goes to the DLQ (events are small facts; a megabyte is a producer's bug or an attack)
DEFAULT_MAX_ENTRY_CHARS = 256 * 1024


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    """How a runner consumes. Durations carry their unit in their name: ``_ms``
    (milliseconds, as Redis takes them) or ``_s`` (seconds)."""

    batch_size: int = 500  # entries per XREADGROUP
    concurrency: int = 16  # handler calls in flight at once
    block_ms: int = 1000  # XREADGROUP BLOCK
    handler_timeout_s: float | None = 30.0  # each handler call's deadline
    claim_idle_ms: int = 60_000  # XAUTOCLAIM min idle (running entries are kept fresh)
    housekeeping_interval_s: float = 15.0  # between claim/cleanup/metrics rounds
    consumer_idle_ms: int = 3_600_000  # idle consumers without pending entries are removed
    max_deliveries: int = 5
    retry_base_s: float = 1.0  # first retry's delay ceiling, doubled per delivery
    retry_max_s: float = 300.0  # longest retry delay
    outage_retry_max_s: float = 15.0  # longest delay between retries while Redis/a database is down
    start_id: str = "0"  # where a new group starts: "0" = everything still in the stream
    max_entry_chars: int = DEFAULT_MAX_ENTRY_CHARS  # longer entries are dead-lettered unparsed


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    """What one handler declares for itself; None: the runner's option applies."""

    #: deadline of each call, in seconds
    timeout_s: float | None = None
    #: deliveries of one entry before it is dead-lettered
    max_deliveries: int | None = None
    #: exception types that dead-letter the entry at once, without a retry
    dead_letter_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("a handler's timeout_s must be positive")
        if self.max_deliveries is not None and self.max_deliveries < 1:
            raise ValueError("a handler's max_deliveries must be at least 1")


#: the options of a handler that declares none
NO_HANDLER_OPTIONS = HandlerOptions()
