"""Malformed stream entries of every kind a buggy or hostile producer can XADD.

Each :class:`Poison` is made from a valid entry of the stream under test (so
only the one thing that is wrong differs) and says what the dead letter's
reason must contain. Tests XADD them with a bytes client, then a good event,
and check that the consumer dead-letters each one, byte for byte, and goes on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from tributary.events import ENVELOPE_FIELDS

#: a byte that never occurs in UTF-8
BAD_BYTE = b"\xff"
#: the data of the oversized entry (over the runner's default entry limit)
HUGE_DATA_BYTES = 1024 * 1024
#: a valid W3C traceparent, so the invalid-UTF-8 traceparent variant has one to spoil
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass(frozen=True, slots=True)
class Poison:
    kind: str
    fields: dict[bytes, bytes]
    #: what the dead letter's reason (``dlq.error``) contains
    reason: str


def _encoded(fields: Mapping[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in fields.items()}


def poisons(good: Mapping[str, str]) -> list[Poison]:
    """Every malformed variant of ``good`` (a valid encoded event of the stream)."""
    base = {"traceparent": TRACEPARENT, "tracestate": "vendor=1", **good}
    made: list[Poison] = []

    def variant(kind: str, reason: str, **changes: bytes | None) -> None:
        fields = _encoded(base)
        for name, value in changes.items():
            if value is None:
                fields.pop(name.encode(), None)
            else:
                fields[name.encode()] = value
        made.append(Poison(kind, fields, reason))

    for name in ENVELOPE_FIELDS:  # invalid UTF-8 in each envelope field's value
        variant(f"utf8-{name}", "not valid UTF-8", **{name: base[name].encode() + BAD_BYTE})
    variant("utf8-traceparent-only", "not valid UTF-8", traceparent=b"00-" + BAD_BYTE)
    extra = _encoded(base) | {b"note" + BAD_BYTE: b"1"}
    made.append(Poison("utf8-extra-field-name", extra, "not valid UTF-8"))
    renamed = _encoded(base)
    renamed[b"da" + BAD_BYTE + b"ta"] = renamed.pop(b"data")
    made.append(Poison("utf8-data-field-name", renamed, "not valid UTF-8"))
    variant("missing-data", "missing envelope field(s): data", data=None)
    variant("missing-id-and-type", "missing envelope field(s): id, type", id=None, type=None)
    variant("invalid-json", "JSON", data=b'{"not json')
    variant("data-not-an-object", "MalformedEvent", data=b"[1, 2, 3]")
    wrong = {key: {"nested": [1, 2]} for key in json.loads(base["data"])}
    variant("wrong-types", "payload", data=json.dumps(wrong).encode())
    variant("unknown-type", "unknown event type", type=b"no.such.type")
    variant("unsupported-specversion", "unsupported specversion", specversion=b"2.0")
    huge = json.dumps({"padding": "x" * HUGE_DATA_BYTES}).encode()
    variant("one-megabyte-data", "over the limit", data=huge)
    return made


def with_garbage_traceparent(good: Mapping[str, str]) -> dict[str, str]:
    """``good`` with a traceparent that is text but no trace context: not poison (W3C
    says to ignore it and start a new trace), so the event is processed."""
    return {**good, "traceparent": "garbage-\u00e9-not-a-trace", "tracestate": ",,=="}
