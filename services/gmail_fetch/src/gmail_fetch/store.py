"""The database from async code: each unit of work is one transaction in a worker thread.

After a transaction that wrote outbox rows commits, the relay is woken so the
events go out at once instead of at its next poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from tributary.outbox import OutboxRelay

T = TypeVar("T")


class Store:
    def __init__(self, sessions: sessionmaker[Session], relay: OutboxRelay | None = None) -> None:
        self.sessions = sessions
        self.relay = relay

    def _in_transaction(self, fn: Callable[[Session], T]) -> T:
        with self.sessions.begin() as session:
            return fn(session)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(session, *args, **kwargs)`` in one transaction, in a thread; then wakes the
        outbox relay."""
        result = await asyncio.to_thread(
            self._in_transaction, lambda session: fn(session, *args, **kwargs)
        )
        if self.relay is not None:
            self.relay.wake()
        return result
