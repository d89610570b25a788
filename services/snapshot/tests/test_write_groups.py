"""How finished reads are grouped into transactions (collector._Writer): pure logic,
with a write function standing in for the database transaction."""

from __future__ import annotations

import asyncio

import pytest

from snapshot.collector import Outcome, _Plan, _Read, _Writer


def _read(server: str, n: int = 0) -> _Read:
    plan = _Plan(server, "host", "pin", "token", None, None, False)
    return _Read(plan, None, f"event-{server}-{n}")


async def test_a_failing_group_is_written_again_server_by_server() -> None:
    groups: list[list[str]] = []

    def write(reads: list[_Read]) -> list[Outcome]:
        groups.append([r.plan.server_id for r in reads])
        if any(r.plan.server_id == "bad" for r in reads):
            raise ValueError("bad row")
        return [Outcome("collected", "window", snapshots=1) for _ in reads]

    writer = _Writer(write, size=64)
    running = asyncio.create_task(writer.run())
    try:
        results = await asyncio.gather(
            *(writer.submit(_read(s)) for s in ("a", "bad", "b", "c")), return_exceptions=True
        )
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["Outcome", "ValueError", "Outcome", "Outcome"]
    assert all(r.status == "collected" for r in results if isinstance(r, Outcome))
    # the first group held them all; after it failed each went alone
    assert groups[0] == ["a", "bad", "b", "c"]
    assert sorted(map(tuple, groups[1:])) == [("a",), ("b",), ("bad",), ("c",)]


async def test_two_reads_of_one_server_never_share_a_group_and_keep_their_order() -> None:
    seen: list[list[str]] = []

    def write(reads: list[_Read]) -> list[Outcome]:
        seen.append([r.event_id for r in reads])
        return [Outcome("collected", "window") for _ in reads]

    writer = _Writer(write, size=2)
    running = asyncio.create_task(writer.run())
    try:
        await asyncio.gather(*(writer.submit(r) for r in
                               (_read("a", 1), _read("a", 2), _read("b"), _read("c"))))  # fmt: skip
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    flat = [e for group in seen for e in group]
    assert flat.index("event-a-1") < flat.index("event-a-2")
    for group in seen:
        assert len(group) <= 2
        assert len({e.rsplit("-", 1)[0] for e in group}) == len(group)


@pytest.mark.parametrize("size", [1, 3])
async def test_every_read_gets_its_own_outcome(size: int) -> None:
    def write(reads: list[_Read]) -> list[Outcome]:
        return [Outcome("collected", r.plan.server_id) for r in reads]

    writer = _Writer(write, size=size)
    running = asyncio.create_task(writer.run())
    try:
        results = await asyncio.gather(*(writer.submit(_read(str(i))) for i in range(7)))
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert [r.reason for r in results] == [str(i) for i in range(7)]


async def test_a_writer_that_breaks_fails_every_waiting_read() -> None:
    def write(reads: list[_Read]) -> list[Outcome]:
        return []  # one outcome too few: zip(strict=True) breaks the writer's loop

    writer = _Writer(write, size=64)
    running = asyncio.create_task(writer.run())
    results = await asyncio.wait_for(
        asyncio.gather(*(writer.submit(_read("a", n)) for n in range(3)), return_exceptions=True),
        5,
    )
    await asyncio.gather(running, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["NotWritten"] * 3
    with pytest.raises(RuntimeError, match="writer stopped"):
        await writer.submit(_read("b"))
