"""Deltas from Outline readings: pure functions, no I/O.

``/metrics/transfer`` reports each key's bytes over a ROLLING 30-day window,
so consecutive readings R0 (at t0) and R1 (at t1) satisfy

    R1 = R0 + new traffic in (t0, t1] - traffic of (t0 - 30d, t1 - 30d] ageing out

The traffic ageing out is known from our own deltas of 30 days ago (only
from ``window_epoch`` on: what we tracked), so

    delta = R1 - R0 + aged_out, clamped at 0.

A result below zero means more disappeared than we had tracked: a metrics
reset, a recreated key, or untracked traffic from before we watched. It is
never traffic: the delta is 0 and the drop is recorded. A drop is charged
first to the key's untracked usage (what the window held when we first saw
it). A reading below half of what should have remained means the server
lost its metrics: everything it reports now is traffic since the previous
reading (the delta, when the interval endpoint is not there), and the key's
window epoch moves to the previous reading so that nothing from before it is
expected to age out again. When the server has the interval endpoint, its
per-key bytes since the previous collection are the delta instead.

A key seen for the first time is a baseline (delta 0) on a server's first
collection or when its id comes back after being deleted (a recreated key
whose old traffic is still in the window); a key that appears between two
collections of a known server is new, and its whole reading is new traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from snapshot.interval import IntervalAnswer
from snapshot.outline import Reading

#: a drop this small (bytes, or share of the previous reading) is estimation noise
DROP_TOLERANCE_BYTES = 1_000_000
DROP_TOLERANCE_RATIO = 0.01
#: a reading below this share of what should remain means the server lost its metrics
RESET_SHARE = 0.5
#: an interval answer may differ from the window's delta by this share (and 1 MB, and
#: the estimated ageing) before it is taken for a cached or empty one
INTERVAL_TOLERANCE_RATIO = 0.05


# KeyState and KeyDelta are named tuples: a cycle makes one of each per key (100,000 at 500
# servers), and a frozen dataclass takes three times as long to build.


class KeyState(NamedTuple):
    """What we know of a key from earlier collections."""

    ref: int
    key_id: str
    deleted: bool
    last_reading: int | None
    #: where the tracked traffic that left the 30-day window since the last reading starts
    #: (None: none did): the later of (last reading - 30 days) and the window epoch, when
    #: that is before (now - 30 days)
    ageing_from: datetime | None = None
    untracked: int = 0


class KeyDelta(NamedTuple):
    key_id: str
    ref: int | None  # None: a key never seen before
    reading: int
    delta: int
    dropped: int
    source: str  # interval | window | new | baseline
    epoch_reset: bool = False
    recreated: bool = False
    #: usage in the window our deltas never saw, after this reading
    untracked: int = 0
    #: why the interval answer was not used for this key ("" : it was, or none was asked):
    #: ``unmatched`` (it cannot name the key) or ``inconsistent`` (it disagrees with the
    #: window: a cached or empty answer)
    fallback: str = ""


@dataclass(frozen=True)
class Deltas:
    keys: list[KeyDelta]
    deleted_refs: list[int]


def _tolerance(previous: int) -> int:
    return max(DROP_TOLERANCE_BYTES, int(previous * DROP_TOLERANCE_RATIO))


#: fallbacks from the interval answer to the window (KeyDelta.fallback)
UNMATCHED = "unmatched"
INCONSISTENT = "inconsistent"


def _unseen(key_id: str, reading: int, interval: IntervalAnswer | None, first: bool) -> KeyDelta:
    if first:
        return KeyDelta(key_id, None, reading, 0, 0, "baseline", untracked=reading)
    said = interval.bytes_for(key_id) if interval is not None else None
    delta = reading if said is None else min(said, reading)
    fallback = UNMATCHED if interval is not None and said is None else ""
    return KeyDelta(
        key_id,
        None,
        reading,
        delta,
        0,
        "new",
        untracked=max(0, reading - delta),
        fallback=fallback,
    )


def _recreated(state: KeyState, reading: int, interval: IntervalAnswer | None) -> KeyDelta:
    said = interval.bytes_for(state.key_id) if interval is not None else None
    if said is not None:
        delta = min(said, reading)
        return KeyDelta(
            state.key_id,
            state.ref,
            reading,
            delta,
            0,
            "interval",
            recreated=True,
            untracked=max(0, reading - delta),
        )
    fallback = UNMATCHED if interval is not None else ""
    return KeyDelta(
        state.key_id,
        state.ref,
        reading,
        0,
        0,
        "baseline",
        recreated=True,
        untracked=reading,
        fallback=fallback,
    )


def _interval_delta(
    state: KeyState, interval: IntervalAnswer | None, derived: int, aged_out: int, reset: bool
) -> tuple[int | None, str]:
    """The interval answer's bytes for a known key, or (None, why not).

    The window bounds the traffic: new = R1 - R0 + what aged out, where what aged out is
    at least 0 and about our tracked estimate (``aged_out``, in ``derived``; hour
    resolution), plus at most the untracked usage. An answer outside those bounds, give
    or take :func:`_interval_slack`, is a cached answer to an earlier question or an
    empty one (a ``since`` shorter than a Prometheus scrape): the window's delta is used
    instead, so nothing is counted twice or lost.
    """
    if interval is None:
        return None, ""
    said = interval.bytes_for(state.key_id)
    if said is None:
        return None, UNMATCHED
    if reset:  # the server lost its metrics: the window cannot vouch for anything
        return said, ""
    slack = _interval_slack(said, derived) + aged_out
    if derived - slack <= said <= max(0, derived) + state.untracked + slack:
        return said, ""
    return None, INCONSISTENT


def _interval_slack(said: int, derived: int) -> int:
    """What an honest answer may differ from the window by: Prometheus extrapolates
    increase(), and the two requests are a moment apart."""
    return DROP_TOLERANCE_BYTES + int(INTERVAL_TOLERANCE_RATIO * max(said, derived, 0))


def _known(
    state: KeyState, reading: int, aged_out: int, interval: IntervalAnswer | None
) -> KeyDelta:
    previous = state.last_reading
    if previous is None:
        return KeyDelta(state.key_id, state.ref, reading, 0, 0, "baseline", untracked=reading)
    derived = reading - previous + aged_out
    dropped = max(0, -derived)
    # a drop is first the untracked usage ageing out; a reading far below what we expect
    # to remain is a reset (metrics lost); anything else is estimation noise
    absorbed = min(dropped, state.untracked)
    reset = (
        dropped > absorbed  # the usual case, nothing dropped, skips the rest
        and dropped - absorbed > _tolerance(previous)
        and reading < RESET_SHARE * max(0, previous - aged_out)  # below what should remain
    )
    said, fallback = _interval_delta(state, interval, derived, aged_out, reset)
    if said is not None:
        delta, source = said, "interval"
    elif reset:
        # the server lost its metrics since the last reading: all it counts now is new
        delta, source = reading, "window"
    else:
        delta, source = max(0, derived), "window"
    untracked = max(0, reading - delta) if reset else state.untracked - absorbed
    return KeyDelta(
        state.key_id,
        state.ref,
        reading,
        delta,
        dropped,
        source,
        epoch_reset=reset,
        untracked=untracked,
        fallback=fallback,
    )


def compute_deltas(
    reading: Reading,
    states: dict[str, KeyState],
    aged_out: dict[int, int],
    *,
    first_collection: bool,
) -> Deltas:
    """The delta of every key listed by /access-keys, and the keys that disappeared."""
    listed: dict[str, None] = dict.fromkeys(k.id for k in reading.keys)
    results = []
    for key_id in listed:
        value = reading.transfer.get(key_id, 0)
        state = states.get(key_id)
        if state is None:
            results.append(_unseen(key_id, value, reading.interval, first_collection))
        elif state.deleted:
            results.append(_recreated(state, value, reading.interval))
        else:
            results.append(_known(state, value, aged_out.get(state.ref, 0), reading.interval))
    deleted = [s.ref for k, s in states.items() if k not in listed and not s.deleted]
    return Deltas(results, deleted)


def overlap_seconds(start: datetime, end: datetime, lo: datetime, hi: datetime) -> float:
    """Length of (start, end] within (lo, hi]."""
    return max(0.0, (min(end, hi) - max(start, lo)).total_seconds())


def aged_out_estimate(hourly: list[tuple[datetime, int]], lo: datetime, hi: datetime) -> int:
    """Bytes of (lo, hi] from hourly buckets (bucket ``h`` is (h, h+1h]), spread evenly."""
    total = 0.0
    for hour, nbytes in hourly:
        share = overlap_seconds(hour, hour + timedelta(hours=1), lo, hi) / 3600
        total += nbytes * share
    return round(total)
