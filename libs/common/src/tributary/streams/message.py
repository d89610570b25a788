"""One delivery of a stream entry to a handler, and what should happen to it afterwards."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from tributary.events import Event
from tributary.streams.options import NO_HANDLER_OPTIONS, HandlerOptions


class Outcome(enum.Enum):
    ACK = "ack"  # processed: XACK
    RETRY = "retry"  # leave pending; redeliver after ``delay``
    DEAD = "dead"  # copy to <stream>.dlq and XACK


@dataclass(slots=True)
class Message:
    """A stream entry as delivered to this consumer."""

    entry_id: str
    fields: dict[str, str]
    event: Event | None = None  # None when the entry is malformed
    deliveries: int = 1
    error: str | None = None  # why it failed (decode error or handler exception)
    decode_error: Exception | None = None  # set when the entry is not a valid event


@dataclass(slots=True)
class HandlerCall:
    """The context middleware sees around one handler invocation (one event, or a batch)."""

    stream: str
    group: str
    consumer: str
    messages: list[Message]
    outcome: Outcome = Outcome.ACK
    delay: float = 0.0  # seconds before redelivery when outcome is RETRY
    started: float = field(default_factory=time.perf_counter)
    finished: float = 0.0  # perf_counter when the handler returned; 0.0: it did not (yet)
    state: dict[str, Any] = field(default_factory=dict)  # scratch space for middleware
    #: what the handler declared for itself (deadline, delivery limit, dead-letter types)
    options: HandlerOptions = NO_HANDLER_OPTIONS

    @property
    def deliveries(self) -> int:
        return max(m.deliveries for m in self.messages)

    @property
    def events(self) -> list[Event]:
        return [m.event for m in self.messages if m.event is not None]
