"""The event envelope (DESIGN.md section 2) and the payload registry.

A stream entry is a flat hash readable as-is with ``redis-cli XRANGE``:
``id type source time specversion v data traceparent tracestate``. The names
are CloudEvents attribute names; ``data`` is the JSON payload, validated by
the pydantic model registered for ``type`` on both sides.

Decoding anything malformed raises :class:`MalformedEvent` and nothing else.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tributary.errors import MalformedEvent
from tributary.wire import entry_problem

SPEC_VERSION = "1.0"
#: fields every envelope carries; the rest (traceparent, tracestate) are optional
REQUIRED_FIELDS = ("id", "type", "source", "time", "specversion", "data")
ENVELOPE_FIELDS = (*REQUIRED_FIELDS, "v", "traceparent", "tracestate")

P = TypeVar("P", bound=BaseModel)


def new_event_id() -> str:
    """A UUIDv7: 48-bit Unix milliseconds, then random bits; sortable by creation time."""
    return new_event_ids(1)[0]


#: the low 48 bits of a UUIDv7's random part: the last group of its text
_LOW_BITS = 48


def new_event_ids(count: int) -> list[str]:
    """``count`` new UUIDv7s (:func:`new_event_id_block`, as a list)."""
    return new_event_id_block(count).ids() if count >= 1 else []


#: the text of a UUIDv7 up to its last group: 8-4-4-4 lower-case hex digits and dashes
_ID_PREFIX = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-")


@dataclass(frozen=True, slots=True)
class EventIdBlock:
    """``count`` UUIDv7s that share their text up to the last group (``prefix``) and
    count up by one from ``start`` in the last 48 bits: a batch's event ids, kept as
    three values (an outbox page stores them so, and its relay makes the ids)."""

    prefix: str
    start: int
    count: int

    def __post_init__(self) -> None:
        if not _ID_PREFIX.fullmatch(self.prefix):
            raise ValueError(f"not the prefix of a UUIDv7: {self.prefix!r}")
        if not (self.start >= 0 and self.count >= 0 and self.start + self.count <= 1 << _LOW_BITS):
            raise ValueError(f"ids {self.start}..+{self.count} overflow the last 48 bits")

    def ids(self) -> list[str]:
        prefix = self.prefix
        return [f"{prefix}{low:012x}" for low in range(self.start, self.start + self.count)]

    def id_at(self, index: int) -> str:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return f"{self.prefix}{self.start + index:012x}"

    def part(self, offset: int, count: int) -> EventIdBlock:
        """The ids ``offset`` .. ``offset + count - 1`` of this block."""
        if not (offset >= 0 and count >= 0 and offset + count <= self.count):
            raise ValueError(f"ids {offset}..+{count} are not in a block of {self.count}")
        return EventIdBlock(self.prefix, self.start + offset, count)


def new_event_id_block(count: int) -> EventIdBlock:
    """``count`` (at least 1) new UUIDv7s: 48-bit Unix milliseconds, version 7, 74 random
    bits (RFC 9562, with the RFC 4122 variant).

    For producers that make an event per row of a large batch, where a random read and
    a ``uuid.UUID`` per id cost more than rendering the event: the batch takes its 74
    bits from one read of the random source and its ids count up from them, in the
    last 48 bits (RFC 9562 §6.2, method 2: the random part of ids made in the same
    millisecond incremented by one), so only the last group of the text is formatted
    per id. Two batches in the same millisecond share ids only if the first 26 of their
    random bits are equal and their counters overlap (odds under 2^-50 per pair for
    batches under 16M ids).
    """
    if count < 1:
        raise ValueError("a block holds at least one id")
    ms = (time.time_ns() // 1_000_000) & ((1 << 48) - 1)
    random = int.from_bytes(os.urandom(10), "big")  # 80 bits; 74 used
    rand_a, rand_b = random >> 68, random & ((1 << 62) - 1)
    high = rand_b >> _LOW_BITS
    # counting up must not carry into the fixed part: start low enough
    start = (rand_b & ((1 << _LOW_BITS) - 1)) % ((1 << _LOW_BITS) - count + 1)
    h = f"{ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | high << _LOW_BITS:032x}"
    return EventIdBlock(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-", start, count)


def utc_now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Registry:
    """Maps an event ``type`` to the pydantic model of its payload (and schema version)."""

    def __init__(self) -> None:
        #: type -> (model, schema version, the model's own JSON validator: what
        #: model_validate_json calls, minus a Python frame per event)
        self._models: dict[str, tuple[type[BaseModel], str, Callable[[str], BaseModel]]] = {}

    def register(self, event_type: str, model: type[BaseModel], version: str = "1") -> None:
        known = self._models.get(event_type)
        if known is not None and known[0] is not model:
            raise ValueError(f"event type {event_type!r} is already registered to {known[0]}")
        self._models[event_type] = (model, version, model.__pydantic_validator__.validate_json)

    def model_for(self, event_type: str) -> type[BaseModel] | None:
        entry = self._models.get(event_type)
        return entry[0] if entry else None

    def parser_for(self, event_type: str) -> Callable[[str], BaseModel] | None:
        """``model.model_validate_json`` of the type's model, or None when unregistered."""
        entry = self._models.get(event_type)
        return entry[2] if entry else None

    def version_for(self, event_type: str) -> str:
        entry = self._models.get(event_type)
        return entry[1] if entry else "1"

    def types(self) -> list[str]:
        return sorted(self._models)


@dataclass(slots=True)
class Event:
    """One event. ``data`` is the validated payload model, or a dict for unregistered types."""

    type: str
    data: BaseModel | dict[str, Any]
    source: str
    id: str = field(default_factory=new_event_id)
    time: str = field(default_factory=utc_now_rfc3339)
    specversion: str = SPEC_VERSION
    v: str = "1"
    traceparent: str | None = None
    tracestate: str | None = None

    def payload(self, model: builtins.type[P]) -> P:
        """The payload as ``model``; validates a raw dict on demand."""
        if isinstance(self.data, model):
            return self.data
        try:
            raw = self.data.model_dump() if isinstance(self.data, BaseModel) else self.data
            return model.model_validate(raw)
        except ValidationError as exc:
            raise MalformedEvent(f"{self.type} payload: {_first_error(exc)}") from None

    def data_json(self) -> str:
        if isinstance(self.data, BaseModel):
            return self.data.model_dump_json()
        return json.dumps(self.data, separators=(",", ":"), default=str)


def make_event(
    event_type: str,
    data: BaseModel | dict[str, Any],
    source: str,
    registry: Registry | None = None,
    **attributes: Any,
) -> Event:
    """Build an event, validating a dict payload against the registered model."""
    if registry is not None:
        model = registry.model_for(event_type)
        if model is not None and not isinstance(data, model):
            try:
                raw = data.model_dump() if isinstance(data, BaseModel) else data
                data = model.model_validate(raw)
            except ValidationError as exc:
                raise MalformedEvent(f"{event_type} payload: {_first_error(exc)}") from None
        attributes.setdefault("v", registry.version_for(event_type))
    return Event(type=event_type, data=data, source=source, **attributes)


def encode(event: Event) -> dict[str, str]:
    """The flat hash written with XADD."""
    fields = {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "time": event.time,
        "specversion": event.specversion,
        "v": event.v,
        "data": event.data_json(),
    }
    if event.traceparent:
        fields["traceparent"] = event.traceparent
    if event.tracestate:
        fields["tracestate"] = event.tracestate
    return fields


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "<root>"
    return f"{loc}: {err['msg']}"


def decode(
    fields: Mapping[str, str], registry: Registry | None = None, max_chars: int | None = None
) -> Event:
    """Parse a stream entry; raises MalformedEvent (only) when it is not a valid event
    (with ``max_chars``: also when its names and values are longer than that in all)."""
    try:
        get = fields.get
        problem = entry_problem(fields, max_chars)
    except AttributeError:
        raise MalformedEvent("entry is not a hash of fields") from None
    if problem is not None:
        raise MalformedEvent(problem)
    event_id, event_type, source, timestamp, specversion, raw = (
        get("id"),
        get("type"),
        get("source"),
        get("time"),
        get("specversion"),
        get("data"),
    )
    if not (event_id and event_type and source and timestamp and specversion and raw):
        missing = [name for name in REQUIRED_FIELDS if not get(name)]
        raise MalformedEvent(f"missing envelope field(s): {', '.join(missing)}")
    if specversion != SPEC_VERSION:
        raise MalformedEvent(f"unsupported specversion {specversion!r}")
    parse = registry.parser_for(event_type) if registry is not None else None
    data: BaseModel | dict[str, Any]
    try:
        if parse is not None:
            data = parse(raw)
        else:
            parsed = json.loads(raw)
            if not isinstance(parsed, dict):
                raise MalformedEvent("data is not a JSON object")
            data = parsed
    except ValidationError as exc:
        raise MalformedEvent(f"{event_type} payload: {_first_error(exc)}") from None
    except (ValueError, TypeError) as exc:
        raise MalformedEvent(f"data is not valid JSON: {exc}") from None
    return Event(
        type=event_type,
        data=data,
        source=source,
        id=event_id,
        time=timestamp,
        specversion=specversion,
        v=get("v") or "1",
        traceparent=get("traceparent") or None,
        tracestate=get("tracestate") or None,
    )
