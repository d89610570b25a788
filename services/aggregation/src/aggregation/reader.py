"""Reading one date's counters from Redis: discovery (SSCAN / SCAN), then MGET in pipelines.

Discovery walks the per-date index set (cheap: only that date's keys) and,
for counters written without the index, SCANs the keyspace with a MATCH
pattern, both at once and ahead of the reads; a key one of them finds that
the other already gave is dropped, so each is read once. Values are read as
absolute numbers with MGET, several MGETs per pipeline round trip. Keys
that cannot be parsed, and values that are not 64-bit integers, are
reported in the batch, not raised.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import date
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.utils import HIREDIS_AVAILABLE

from aggregation.config import Discovery
from aggregation.keys import MAX_NAME_LENGTH, KeyFormat, name_problem, parse_value
from tributary import redis_client
from tributary.tasks import cancel_and_wait

#: longest value stored with a malformed-key report, in characters
MAX_REPORTED_VALUE = 200
#: lists of names found and not yet read, at most
_READ_AHEAD = 2
#: digit strings this long always fit a BIGINT (19 digits may not)
_SAFE_DIGITS = 18
#: a batch's values (one a line) that are all plain digit strings that fit a BIGINT
_COMMON_VALUES = re.compile(f"[0-9]{{1,{_SAFE_DIGITS}}}(?:\n[0-9]{{1,{_SAFE_DIGITS}}})*")


@dataclass(frozen=True, slots=True)
class Malformed:
    key: str
    reason: str
    value: str | None = None


@dataclass(slots=True)
class Batch:
    """Counters of one date read in one round trip, merged per (merchant, metric)."""

    keys_read: int = 0
    #: keys that vanished (expired, deleted) or are not strings between discovery and MGET
    missing: int = 0
    rows: dict[tuple[str, str], int] = field(default_factory=dict)
    malformed: list[Malformed] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ReadOptions:
    discovery: Discovery = "index+scan"
    batch_size: int = 10_000
    mget_chunk: int = 1_000
    scan_count: int = 5_000


class CounterReader:
    """Yields :class:`Batch` es of one date's counters (of one merchant if asked)."""

    def __init__(
        self,
        redis: aioredis.Redis | Callable[[], aioredis.Redis],
        keys: KeyFormat,
        options: ReadOptions | None = None,
        #: called after each batch is read (tests make increments "arrive during a run")
        after_read: Callable[[Batch], Awaitable[None]] | None = None,
    ) -> None:
        # a client, or a function returning one (opened on first use)
        self._get_client = redis if not isinstance(redis, aioredis.Redis) else lambda: redis
        self._keys = keys
        self._options = options or ReadOptions()
        self._after_read = after_read

    @property
    def _redis(self) -> aioredis.Redis:
        return self._get_client()

    async def batches(self, day: date, merchant_id: str | None = None) -> AsyncIterator[Batch]:
        parser = _Parser(self._keys, day, merchant_id)
        # closed here, not whenever it is collected: it stops its walkers' tasks
        async with aclosing(self._discover(day, merchant_id)) as discovered:
            async for found in discovered:
                # in key order, the batch's rows reach the database in (nearly) primary
                # key order: its index lookups and inserts then walk the index instead of
                # jumping about it, about a sixth less work there
                names = sorted(found)
                batch = parser.batch(names, await self._mget(names))
                if self._after_read is not None:
                    await self._after_read(batch)
                yield batch

    # -- discovery ----------------------------------------------------------

    async def _discover(
        self, day: date, merchant_id: str | None
    ) -> AsyncGenerator[list[str], None]:
        """Lists of up to ``batch_size`` names, found while the caller reads the last ones:
        the index and the keyspace are walked at the same time, each by its own task."""
        sources = self._sources(day, merchant_id)
        # with both: hashes of the names either gave, so that the other skips them: a set
        # of ints costs less than one of the names (and than asking Redis with
        # SMISMEMBER); a collision would hide one key for one run (hash() is seeded per
        # process)
        seen: set[int] | None = set() if len(sources) > 1 else None
        async for names in _merged([self._regroup(_unseen(pages, seen)) for pages in sources]):
            yield names

    def _sources(self, day: date, merchant_id: str | None) -> list[AsyncIterator[list[str]]]:
        discovery = self._options.discovery
        pattern = self._keys.pattern(day, merchant_id)
        sources: list[AsyncIterator[list[str]]] = []
        if discovery in ("index+scan", "index"):
            # a merchant's keys are a small part of the index: let Redis filter them
            match = pattern if merchant_id is not None else None
            sources.append(self._sscan(self._keys.index(day), match))
        if discovery in ("index+scan", "scan"):
            sources.append(self._scan(pattern))
        return sources

    async def _sscan(self, index: str, match: str | None) -> AsyncIterator[list[str]]:
        cursor: Any = 0
        while True:
            reply: Any = await self._redis.sscan(
                index, cursor, match=match, count=self._options.scan_count
            )
            cursor, members = reply
            yield list(members)
            if int(cursor) == 0:
                return

    async def _scan(self, pattern: str) -> AsyncIterator[list[str]]:
        cursor: Any = 0
        while True:
            reply: Any = await self._redis.scan(
                cursor, match=pattern, count=self._options.scan_count
            )
            cursor, names = reply
            yield list(names)
            if int(cursor) == 0:
                return

    async def _regroup(self, pages: AsyncIterator[list[str]]) -> AsyncIterator[list[str]]:
        """SCAN pages of any size -> lists of ``batch_size`` names (the last may be shorter)."""
        size = self._options.batch_size
        pending: list[str] = []
        async for page in pages:
            pending.extend(page)
            while len(pending) >= size:
                yield pending[:size]
                del pending[:size]
        if pending:
            yield pending

    # -- values ---------------------------------------------------------------

    async def _mget(self, names: Sequence[str]) -> list[str | None]:
        chunk = self._options.mget_chunk
        async with self._redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(names), chunk):
                pipe.mget(names[start : start + chunk])
            replies: list[list[str | None]] = await pipe.execute()
        return [value for reply in replies for value in reply]


async def _merged(sources: list[AsyncIterator[list[str]]]) -> AsyncIterator[list[str]]:
    """The items of ``sources`` as they come, each source walked by a task of its own
    (a few items ahead of the caller: the queue holds ``_READ_AHEAD``); a source's error
    is raised."""
    found: asyncio.Queue[list[str] | Exception | None] = asyncio.Queue(_READ_AHEAD)

    async def walk(source: AsyncIterator[list[str]]) -> None:
        try:
            async for item in source:
                await found.put(item)
        except Exception as exc:  # raised by the caller's task
            await found.put(exc)
        else:
            await found.put(None)

    walkers = [asyncio.create_task(walk(source)) for source in sources]
    try:
        running = len(walkers)
        while running:
            item = await found.get()
            if item is None:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        await cancel_and_wait(walkers)


async def _unseen(
    pages: AsyncIterator[list[str]], seen: set[int] | None
) -> AsyncIterator[list[str]]:
    """``pages`` without the names whose hash is in ``seen`` (which takes the others')."""
    async for names in pages:
        if seen is not None:
            names = [name for name in names if hash(name) not in seen]
            seen.update(map(hash, names))
        if names:
            yield names


class _HiredisPackedConnection(aioredis.Connection):
    """Packs commands in C (hiredis), as redis-py's sync client does; its asyncio client
    packs in Python, which costs about a second per million MGET keys. (Straight to
    hiredis: redis-py's own wrapper looks at every argument in Python first.)"""

    def pack_command(self, *args: Any) -> list[bytes]:
        command = args[0]
        if isinstance(command, str) and " " in command:  # "CLIENT SETNAME" and the like
            args = (*command.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except UnicodeEncodeError:  # a foreign key's undecodable bytes (surrogateescape)
            return super().pack_command(*args)
        except TypeError:  # an argument hiredis does not take (bytearray, memoryview)
            return super().pack_command(*args)


def counter_client(target: redis_client.RedisTarget | str) -> aioredis.Redis:
    """A client for counter keys and values written by others.

    Bytes that are not UTF-8 must not fail a whole run: they are decoded with
    ``surrogateescape`` (and reported as malformed keys or values).
    """
    client = redis_client.connect(target)
    pool = client.connection_pool
    if HIREDIS_AVAILABLE and pool.connection_class is aioredis.Connection:  # plain TCP only
        pool.connection_class = _HiredisPackedConnection
    return client


class _Parser:
    """Turns (key, value) pairs of one date into rows and malformed-key reports."""

    def __init__(self, keys: KeyFormat, day: date, merchant_id: str | None) -> None:
        self._keys = keys
        self._day = day
        self._day_text = day.isoformat()
        self._merchant_id = merchant_id
        self._start = keys.counter_prefix
        name = f"([^:\\n]{{1,{MAX_NAME_LENGTH}}})"
        #: a key of the common case, as one line of a batch's keys
        self._common_key = re.compile(
            f"^{re.escape(self._start)}{name}:{re.escape(self._day_text)}:{name}$", re.MULTILINE
        )

    def batch(self, names: Sequence[str], values: Sequence[str | None]) -> Batch:
        rows = self._common_rows(names, values)
        if rows is not None:
            return Batch(keys_read=len(names), rows=rows)
        return self._each_key(names, values)

    def _common_rows(
        self, names: Sequence[str], values: Sequence[str | None]
    ) -> dict[tuple[str, str], int] | None:
        """The rows of a batch whose every key and value is of the common case (that
        :meth:`_each_key` takes its first branch for), checked and split for the whole
        batch at once; None if one is not.

        This runs for every counter, in the loop that also reads Redis: a few calls on
        the batch's joined text cost about a quarter less than the shortest loop.
        """
        if self._merchant_id is not None or None in values:
            return None
        # printable: no newline (nor anything unusual) inside a key, so one key a line
        if not "".join(names).isprintable():
            return None
        pairs = self._common_key.findall("\n".join(names))
        if len(pairs) != len(names):  # each line matches at most once
            return None
        raws = cast(Sequence[str], values)
        text = "\n".join(raws)
        if text.count("\n") != len(raws) - 1 or not _COMMON_VALUES.fullmatch(text):
            return None
        # duplicates (SSCAN may repeat a member) merge here: last read wins
        return dict(zip(pairs, map(int, raws), strict=True))

    def _each_key(self, names: Sequence[str], values: Sequence[str | None]) -> Batch:
        batch = Batch(keys_read=len(names))
        rows, day_text, start, only = batch.rows, self._day_text, self._start, self._merchant_id
        skip = len(start)
        for key, raw in zip(names, values, strict=True):
            if raw is None:
                batch.missing += 1
                continue
            parts = key[skip:].split(":")
            # the common case in one expression (this loop runs for every counter); anything
            # unusual (a negative value, a long name...) takes the full path below
            if (
                len(parts) == 3
                and parts[1] == day_text
                and 0 < len(parts[0]) <= MAX_NAME_LENGTH
                and 0 < len(parts[2]) <= MAX_NAME_LENGTH
                and raw.isdigit()
                and raw.isascii()
                and len(raw) <= _SAFE_DIGITS
                and key.isprintable()
                and key.startswith(start)
                and (only is None or parts[0] == only)
            ):
                # duplicates inside a batch (SSCAN may repeat a member) merge here
                rows[(parts[0], parts[2])] = int(raw)
            elif len(parts) == 3 and parts[1] == day_text and key.startswith(start):
                self._add(batch, key, parts[0], parts[2], raw)
            else:
                batch.malformed.append(
                    Malformed(printable(key), self._key_problem(key), _shown(raw))
                )
        return batch

    def _add(self, batch: Batch, key: str, merchant_id: str, metric: str, raw: str) -> None:
        problem = name_problem(merchant_id) or name_problem(metric)
        if problem is not None:
            which = "merchant id" if name_problem(merchant_id) else "metric"
            batch.malformed.append(Malformed(printable(key), f"{which} {problem}", _shown(raw)))
            return
        if self._merchant_id is not None and merchant_id != self._merchant_id:
            return  # a pattern look-alike of another merchant: not this run's business
        try:
            value = parse_value(raw)
        except ValueError as exc:
            batch.malformed.append(Malformed(printable(key), str(exc), _shown(raw)))
            return
        # duplicates inside a batch (SSCAN may repeat members) merge here: last read wins
        batch.rows[(merchant_id, metric)] = value

    def _key_problem(self, key: str) -> str:
        try:
            counter = self._keys.parse(key)
        except ValueError as exc:
            return f"key: {exc}"
        return f"key belongs to {counter.date.isoformat()}, not {self._day_text}"


def _shown(raw: str) -> str:
    shown = raw if len(raw) <= MAX_REPORTED_VALUE else raw[:MAX_REPORTED_VALUE] + "..."
    return printable(shown)


def printable(text: str) -> str:
    """``text`` storable in PostgreSQL: undecodable bytes and NUL written as escapes."""
    if text.isprintable():
        return text
    raw = text.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
