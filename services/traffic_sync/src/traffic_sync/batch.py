"""A flush batch: the node data one move took out of Redis, parsed into deltas.

Parsing never raises: a node whose data is bad (non-numeric or negative
counter, id that is not a node id, key of the wrong Redis type) becomes a
:class:`RejectedNode` with a reason, and the batch's other nodes flush.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from traffic_sync.counters import DOWNLOAD, MAX_BYTES, UPLOAD

#: longest raw text of a rejected node kept for the operator, in characters
MAX_RAW_CHARS = 10_000

_NODE_ID = re.compile(r"[0-9]{1,19}")
_COUNTER = re.compile(r"-?[0-9]{1,20}")
# What the move script makes of a hash a writer left with both counters: parsed
# without JSON (a flush handles every node once; this is most of its Python time).
# cjson writes an object's keys in no set order, so both orders are accepted.
_PLAIN_FIELDS = rb'"f":\["(upload|download)","([0-9]{1,19})","(upload|download)","([0-9]{1,19})"\]'
_PLAIN_HASH = (
    re.compile(rb"\{" + _PLAIN_FIELDS + rb',"t":"hash"\}'),  # Redis 7's cjson
    re.compile(rb'\{"t":"hash",' + _PLAIN_FIELDS + rb"\}"),
)

# reasons a node is rejected (a bounded set: they are metric labels)
BAD_NODE_ID = "bad_node_id"
NOT_INTEGER = "not_integer"
NEGATIVE = "negative"
OUT_OF_RANGE = "out_of_range"
NO_TRAFFIC_FIELDS = "no_traffic_fields"
WRONG_TYPE = "wrong_type"
UNREADABLE = "unreadable"


class NodeDelta(NamedTuple):
    """Bytes to add to one node's counters (a tuple: a flush makes one per node)."""

    node_id: int
    upload: int
    download: int


@dataclass(frozen=True, slots=True)
class RejectedNode:
    """A node's data that cannot be flushed; kept in ``traffic_rejects`` for the operator."""

    node_key: str
    reason: str
    detail: str
    raw: str


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    #: one per node, ordered by node id (a fixed lock order for concurrent batches)
    deltas: tuple[NodeDelta, ...]
    rejects: tuple[RejectedNode, ...]

    @property
    def upload_bytes(self) -> int:
        return sum(d.upload for d in self.deltas)

    @property
    def download_bytes(self) -> int:
        return sum(d.download for d in self.deltas)

    @property
    def empty(self) -> bool:
        return not self.deltas and not self.rejects


class BadNode(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def parse_node_id(raw: bytes) -> int:
    # bytes.isdigit(): ASCII digits only, as _NODE_ID (the common case, without decoding)
    if raw.isdigit() and len(raw) <= 19 and (node_id := int(raw)) <= MAX_BYTES:
        return node_id
    text = _text(raw)
    if not _NODE_ID.fullmatch(text) or int(text) > MAX_BYTES:
        raise BadNode(BAD_NODE_ID, f"node id {text[:80]!r} is not an integer in 0..2^63-1")
    return int(text)


def parse_counter(field: str, value: object) -> int:
    if not isinstance(value, str) or not _COUNTER.fullmatch(value):
        raise BadNode(NOT_INTEGER, f"{field} is not an integer: {str(value)[:80]!r}")
    number = int(value)
    if number < 0:
        raise BadNode(NEGATIVE, f"{field} is negative: {number}")
    if number > MAX_BYTES:
        raise BadNode(OUT_OF_RANGE, f"{field} is larger than 2^63-1: {value[:80]}")
    return number


def _fields(payload: object) -> dict[str, object]:
    """The hash fields of a moved node, or BadNode for a key of another type."""
    if not isinstance(payload, dict):
        raise BadNode(UNREADABLE, "moved data is not a JSON object")
    kind = payload.get("t")
    if kind != "hash":
        raise BadNode(WRONG_TYPE, f"key is a Redis {kind}, not a hash (set aside in quarantine)")
    flat = payload.get("f")
    if not isinstance(flat, list) or len(flat) % 2:
        raise BadNode(UNREADABLE, "moved hash fields are not a flat list of pairs")
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _plain(raw_payload: bytes) -> tuple[int, int] | None:
    """(upload, download) in the common case, fast: both counters, plain non-negative
    integers."""
    match = _PLAIN_HASH[0].fullmatch(raw_payload) or _PLAIN_HASH[1].fullmatch(raw_payload)
    if match is None or match[1] == match[3]:
        return None
    first, second = int(match[2]), int(match[4])
    if first > MAX_BYTES or second > MAX_BYTES:
        return None
    if match[1] == b"upload":
        return first, second
    return second, first


def _counters(raw_payload: bytes) -> tuple[int, int]:
    """(upload, download) of one moved node; raises :class:`BadNode` when its data is bad."""
    fast = _plain(raw_payload)
    if fast is not None:
        return fast
    try:
        payload = json.loads(raw_payload.decode("utf-8", "surrogateescape"))
    except ValueError:
        raise BadNode(UNREADABLE, "moved data is not valid JSON") from None
    fields = _fields(payload)
    if UPLOAD not in fields and DOWNLOAD not in fields:
        raise BadNode(NO_TRAFFIC_FIELDS, f"hash has neither {UPLOAD} nor {DOWNLOAD}")
    upload = parse_counter(UPLOAD, fields.get(UPLOAD, "0"))
    download = parse_counter(DOWNLOAD, fields.get(DOWNLOAD, "0"))
    return upload, download


def parse_node(raw_id: bytes, raw_payload: bytes) -> NodeDelta:
    """The delta of one moved node; raises :class:`BadNode` when its data is bad."""
    node_id = parse_node_id(raw_id)
    return NodeDelta(node_id, *_counters(raw_payload))


def parse_batch(batch_id: str, moved: Iterable[tuple[bytes, bytes]]) -> Batch:
    """Deltas (merged per node, zero ones dropped, sorted) and rejects of a moved batch."""
    merged: dict[int, list[int]] = {}
    rejects: list[RejectedNode] = []
    for raw_id, raw_payload in moved:
        try:
            node_id = parse_node_id(raw_id)
            upload, download = _counters(raw_payload)
        except BadNode as exc:
            rejects.append(
                RejectedNode(
                    _text(raw_id)[:255], exc.reason, str(exc), _text(raw_payload)[:MAX_RAW_CHARS]
                )
            )
            continue
        sums = merged.get(node_id)
        if sums is None:
            merged[node_id] = [upload, download]
        else:  # the same node under two raw ids ("7" and "07")
            sums[0] += upload
            sums[1] += download
    deltas = tuple(
        NodeDelta(node_id, up, down) for node_id, (up, down) in sorted(merged.items()) if up or down
    )
    return Batch(batch_id, deltas, tuple(rejects))
