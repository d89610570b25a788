"""Waiting for something to happen in a test: poll with a deadline, never a bare sleep.

``wait_until`` (plain code, e.g. a service subprocess) and ``await_until`` (inside
a test's event loop) poll a condition until it holds and return the seconds it
took. They fail at the deadline, or at once when what should make the condition
true is gone (a ``proc`` that exited, a ``task`` that finished). Deadlines are
there so that a broken test ends; they are generous on purpose, not a bound
the test proves: a loaded machine may be slow, it must not make a test fail.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tributary_testing.process import failure_text

#: how often a condition is checked again, in seconds
DEFAULT_POLL_SECONDS = 0.02
#: how long a condition may take before the test fails, in seconds
DEFAULT_WAIT_SECONDS = 60.0

#: what the condition is, for the failure message (a callable: evaluated at the failure)
What = str | Callable[[], str]
#: the process (or processes) that must stay alive while the condition is awaited
Procs = subprocess.Popen[bytes] | Sequence[subprocess.Popen[bytes]] | None


def _timed_out(what: What, seconds: float) -> AssertionError:
    text = what() if callable(what) else what
    return AssertionError(f"{text}: not met within {seconds}s")


def _check_alive(proc: Procs) -> None:
    for one in [proc] if isinstance(proc, subprocess.Popen) else proc or ():
        if one.poll() is not None:
            raise AssertionError(failure_text(one))


def wait_until(
    condition: Callable[[], bool],
    proc: Procs = None,
    seconds: float = DEFAULT_WAIT_SECONDS,
    what: What = "condition",
    poll: float = DEFAULT_POLL_SECONDS,
) -> float:
    """Poll ``condition`` until it holds; raise early if ``proc`` died, or at the deadline."""
    started = time.monotonic()
    while not condition():
        _check_alive(proc)
        if time.monotonic() - started > seconds:
            raise _timed_out(what, seconds)
        time.sleep(poll)
    return time.monotonic() - started


async def await_until(
    condition: Callable[[], bool | Awaitable[bool]],
    task: asyncio.Future[Any] | None = None,
    *,
    proc: Procs = None,
    seconds: float = DEFAULT_WAIT_SECONDS,
    what: What = "condition",
    poll: float = DEFAULT_POLL_SECONDS,
) -> float:
    """Poll ``condition`` (plain or async) until it holds, letting the loop run between
    checks; raise early if ``task`` finished (with its own error, if it has one) or
    ``proc`` died, or at the deadline."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        holds = condition()
        if inspect.isawaitable(holds):
            holds = await holds
        if holds:
            return loop.time() - started
        if task is not None and task.done():
            task.result()  # raises what the task raised
            raise AssertionError(f"{task!r} ended before the condition held")
        _check_alive(proc)
        if loop.time() - started > seconds:
            raise _timed_out(what, seconds)
        await asyncio.sleep(poll)
