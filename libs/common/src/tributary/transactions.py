"""The one way async code runs blocking database work: in a worker thread, in one transaction.

The services' engines are synchronous (SQLAlchemy with psycopg / PyMySQL): route
handlers and event handlers are async. ``await tx(fn, *args)`` calls
``fn(session, *args)`` inside ``sessions.begin()`` on a thread, commits when it
returns and rolls back when it raises; ``tx.read(fn, *args)`` does the same without
a transaction to commit (plain reads). A lost or refused connection raises
SQLAlchemy's ``OperationalError`` as it is: the HTTP layer answers it with a 503
(:mod:`tributary.web.errors`) and the stream runner retries the event without
spending a delivery (:mod:`tributary.outage`), so no caller maps it by hand.

Why not SQLAlchemy's asyncio extension: every service's repository code and the
library's inbox/outbox are synchronous and shared with CLI verbs and schedulers
that run without an event loop; one thread hop per transaction costs ~50 µs,
small beside the transaction itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")


class Transactions:
    """Runs ``fn(session, ...)`` in a thread; ``after_commit`` is called after each commit
    (e.g. the outbox relay's ``wake``, so events written in the transaction go out now)."""

    def __init__(
        self, sessions: sessionmaker[Session], *, after_commit: Callable[[], None] | None = None
    ) -> None:
        self.sessions = sessions
        self.after_commit = after_commit

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(session, *args, **kwargs)`` in one transaction (committed on return)."""
        result: T = await asyncio.to_thread(self._in_transaction, fn, *args, **kwargs)
        if self.after_commit is not None:
            self.after_commit()
        return result

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(session, *args, **kwargs)`` with a session that commits nothing."""
        result: T = await asyncio.to_thread(self._reading, fn, *args, **kwargs)
        return result

    def _in_transaction(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.sessions.begin() as session:
            return fn(session, *args, **kwargs)

    def _reading(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.sessions() as session:
            return fn(session, *args, **kwargs)
