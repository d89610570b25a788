"""A flush batch: the node data one move took out of Redis, parsed into deltas.

A move hands over :class:`Moved`: the nodes a writer left as plain counter
hashes as one run of decimal numbers (what the move script checked), every
other node as its raw id and a JSON payload. Parsing never raises: a node
whose data is bad (non-numeric or negative counter, id that is not a node id,
key of the wrong Redis type) becomes a :class:`RejectedNode` with a reason,
and the batch's other nodes flush.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from traffic_sync.counters import DOWNLOAD, MAX_BYTES, UPLOAD

#: longest raw text of a rejected node kept for the operator, in characters
MAX_RAW_CHARS = 10_000

_NODE_ID = re.compile(r"[0-9]{1,19}")
_COUNTER = re.compile(r"-?[0-9]{1,20}")
# reasons a node is rejected (a bounded set: they are metric labels)
BAD_NODE_ID = "bad_node_id"
NOT_INTEGER = "not_integer"
NEGATIVE = "negative"
OUT_OF_RANGE = "out_of_range"
NO_TRAFFIC_FIELDS = "no_traffic_fields"
WRONG_TYPE = "wrong_type"
UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class Moved:
    """What one move took out of Redis (or a pending batch holds)."""

    #: the plain nodes: id, upload, download, id, ... each ASCII decimal digits
    plain: Sequence[bytes] = field(default_factory=list)
    #: every other node: (raw id, JSON payload)
    others: Sequence[tuple[bytes, bytes]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.plain) // 3 + len(self.others)


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
    upload_bytes: int = field(init=False)
    download_bytes: int = field(init=False)

    def __post_init__(self) -> None:  # summed once: the ledger, metrics and report use them
        object.__setattr__(self, "upload_bytes", sum(d.upload for d in self.deltas))
        object.__setattr__(self, "download_bytes", sum(d.download for d in self.deltas))

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


def _counters(raw_payload: bytes) -> tuple[int, int]:
    """(upload, download) of one moved node; raises :class:`BadNode` when its data is bad."""
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


def _reject(raw_id: bytes, exc: BadNode, raw_payload: bytes) -> RejectedNode:
    return RejectedNode(
        _text(raw_id)[:255], exc.reason, str(exc), _text(raw_payload)[:MAX_RAW_CHARS]
    )


def _plain_nodes(plain: Sequence[bytes]) -> tuple[list[NodeDelta], list[RejectedNode]]:
    """The plain nodes' deltas, in the order moved, and the rare number out of range."""
    numbers = list(map(int, plain))  # digits only: the move script checked
    triples = zip(numbers[0::3], numbers[1::3], numbers[2::3], strict=True)
    if not numbers or max(numbers) <= MAX_BYTES:
        return list(map(NodeDelta._make, triples)), []
    deltas: list[NodeDelta] = []
    rejects: list[RejectedNode] = []
    for i, (node_id, upload, download) in enumerate(triples):
        raw_id, raw_up, raw_down = plain[3 * i : 3 * i + 3]
        try:
            parse_node_id(raw_id)
            parse_counter(UPLOAD, raw_up.decode())
            parse_counter(DOWNLOAD, raw_down.decode())
        except BadNode as exc:
            payload = b"upload=%s download=%s" % (raw_up, raw_down)
            rejects.append(_reject(raw_id, exc, payload))
            continue
        deltas.append(NodeDelta(node_id, upload, download))
    return deltas, rejects


def parse_batch(batch_id: str, moved: Moved) -> Batch:
    """Deltas (merged per node, zero ones dropped, sorted) and rejects of a moved batch."""
    plain, rejects = _plain_nodes(moved.plain)
    if not moved.others and len({d.node_id for d in plain}) == len(plain):
        # the common case: plain nodes only, each once
        plain.sort()
        return Batch(batch_id, tuple(d for d in plain if d.upload or d.download), tuple(rejects))
    merged: dict[int, list[int]] = {}
    for node_id, upload, download in plain:
        _merge(merged, node_id, upload, download)
    for raw_id, raw_payload in moved.others:
        try:
            node_id = parse_node_id(raw_id)
            upload, download = _counters(raw_payload)
        except BadNode as exc:
            rejects.append(_reject(raw_id, exc, raw_payload))
            continue
        _merge(merged, node_id, upload, download)
    deltas = tuple(
        NodeDelta(node_id, up, down) for node_id, (up, down) in sorted(merged.items()) if up or down
    )
    return Batch(batch_id, deltas, tuple(rejects))


def _merge(merged: dict[int, list[int]], node_id: int, upload: int, download: int) -> None:
    sums = merged.get(node_id)
    if sums is None:
        merged[node_id] = [upload, download]
    else:  # the same node under two raw ids ("7" and "07")
        sums[0] += upload
        sums[1] += download
