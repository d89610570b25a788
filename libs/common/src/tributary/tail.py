"""``python -m tributary tail <stream>...``: print entries as they arrive, decoded and coloured,
with each consumer group's lag and pending count every few seconds.

The plain redis-cli equivalents are in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from rich.console import Console
from rich.text import Text

from tributary import redis_client
from tributary.errors import MalformedEvent
from tributary.events import decode
from tributary.keys import Keys
from tributary.wire import printable_json

#: seconds between consumer-group lag lines
DEFAULT_LAG_EVERY_SECONDS = 5.0
_TYPE_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")


def _colour(event_type: str) -> str:
    return _TYPE_COLOURS[sum(map(ord, event_type)) % len(_TYPE_COLOURS)]


def render_entry(stream: str, entry_id: str, fields: dict[str, str]) -> Text:
    """One line per entry: stream, entry id, type, source, trace id, payload."""
    line = Text()
    line.append(f"{stream} ", style="bold")
    line.append(f"{entry_id} ", style="dim")
    try:
        event = decode(fields)
    except MalformedEvent as exc:
        line.append(f"MALFORMED ({exc}) ", style="bold red")
        line.append(json.dumps(printable_json(fields), sort_keys=True, ensure_ascii=False))
        return line
    line.append(f"{event.type} ", style=f"bold {_colour(event.type)}")
    line.append(f"from {event.source} ")
    if event.traceparent:
        line.append(f"trace {event.traceparent[3:35]} ", style="dim")
    line.append(json.dumps(event.data, sort_keys=True, default=str))
    return line


async def _group_lines(redis: aioredis.Redis, keys: Keys, streams: Sequence[str]) -> list[Text]:
    lines = []
    for stream in streams:
        try:
            groups: list[dict[str, Any]] = await redis.xinfo_groups(keys.stream(stream))
        except aioredis.ResponseError:
            continue  # the stream does not exist yet
        for g in groups:
            lines.append(
                Text(
                    f"  {stream} group {g['name']}: lag {g.get('lag')}, pending {g['pending']}",
                    style="dim italic",
                )
            )
    return lines


async def tail(
    redis: aioredis.Redis,
    keys: Keys,
    streams: Sequence[str],
    console: Console,
    *,
    from_start: bool = False,
    count: int | None = None,
    lag_every_s: float = DEFAULT_LAG_EVERY_SECONDS,
) -> int:
    """Print entries until ``count`` were printed (None: forever); returns how many."""
    last = {keys.stream(s): "0" if from_start else "$" for s in streams}
    printed, next_lag = 0, time.monotonic()
    while count is None or printed < count:
        if time.monotonic() >= next_lag:
            for line in await _group_lines(redis, keys, streams):
                console.print(line)
            next_lag = time.monotonic() + lag_every_s
        reply: Any = await redis.xread(cast(Any, last), count=100, block=1000)
        for key, entries in reply or []:
            for entry_id, fields in entries:
                last[key] = entry_id
                console.print(render_entry(keys.logical(key), entry_id, fields))
                printed += 1
                if count is not None and printed >= count:
                    return printed
    return printed


def run_tail(
    target: redis_client.RedisTarget | str,
    prefix: str,
    streams: Sequence[str],
    *,
    from_start: bool,
    count: int | None,
) -> int:
    async def go() -> int:
        redis = redis_client.connect(target)
        try:
            return await tail(
                redis, Keys(prefix), streams, Console(), from_start=from_start, count=count
            )
        finally:
            await redis.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())
    return 0
