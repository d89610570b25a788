"""One attempt of a ``fetch_messages`` job: work out which messages the job needs, fetch
the ones the cache does not have at their current historyId, in batches, with progress.

- Full sync: the mailbox's historyId (getProfile) is read first, then the newest
  ``max_results`` message ids (messages.list); every id not cached is fetched.
- Incremental sync, once a full sync covered at least ``max_results``
  messages: history.list since the stored historyId gives the messages added
  or relabelled (fetched unless cached at that history record or later) and
  those deleted (dropped). A 404 (history too old) falls back to a full sync.

Batches of ``batch_size`` go out ``batches_in_flight`` at a time; after each
one the messages, the job's progress and a progress event commit together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from gmail_fetch import cache
from gmail_fetch import repository as repo
from gmail_fetch.config import GmailFetchSettings
from gmail_fetch.errors import HistoryExpired, JobCancelled
from gmail_fetch.gmail_api import GmailClient
from gmail_fetch.metrics import GmailMetrics
from gmail_fetch.repository import Account, Job
from tributary.tasks import cancel_and_wait
from tributary.transactions import Transactions

log = logging.getLogger(__name__)


@dataclass
class SyncOutcome:
    mode: str  # "full" | "incremental"
    total: int
    fetched: int
    cached: int
    missing: int
    history_id: int
    synced_depth: int


@dataclass
class _Counts:
    progress: int
    batches: int = 0
    fetched: int = 0
    missing: int = 0


async def run_all(coros: Sequence[Awaitable[None]]) -> None:
    """Await every coroutine; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    if not tasks:
        return
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        await cancel_and_wait([task for task in tasks if not task.done()])
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


class JobSync:
    def __init__(
        self,
        job: Job,
        account: Account,
        client: GmailClient,
        store: Transactions,
        settings: GmailFetchSettings,
        metrics: GmailMetrics,
        tracer: Any = None,
    ) -> None:
        self.job = job
        self.account = account
        self.client = client
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.tracer = tracer
        self.user_id = account.user_id

    async def run(self) -> SyncOutcome:
        account = self.account
        if account.history_id is not None and (account.synced_depth or 0) >= self.job.max_results:
            try:
                return await self.incremental(account.history_id)
            except HistoryExpired as exc:
                log.info("job %s: %s; falling back to a full sync", self.job.id, exc)
                await self.step("History too old; full sync")
        return await self.full()

    async def step(self, text: str, **values: Any) -> None:
        job = await self.store(
            repo.record_progress, self.job.id, self.tracer, current_step=text, **values
        )
        if job is None:
            raise JobCancelled(self.job.id)

    async def full(self) -> SyncOutcome:
        await self.step("Listing messages", sync_mode="full")
        history_id = await self.client.profile_history_id()
        refs = await self.client.list_messages(self.job.max_results)
        ids = [r.id for r in refs]
        cached = await self.store(cache.cached_versions, self.user_id, ids)
        counts = await self.fetch([i for i in ids if i not in cached], total=len(ids))
        await self.store(cache.prune_unlisted, self.user_id, ids)
        return SyncOutcome(
            "full",
            len(ids),
            counts.fetched,
            len(cached),
            counts.missing,
            history_id,
            self.job.max_results,
        )

    async def incremental(self, start: int) -> SyncOutcome:
        await self.step("Reading mailbox history", sync_mode="incremental")
        delta = await self.client.history_since(start)
        await self.store(cache.delete_cached, self.user_id, delta.deletes)
        cached = await self.store(cache.cached_versions, self.user_id, list(delta.upserts))
        to_fetch = [i for i, rid in delta.upserts.items() if cached.get(i, -1) < rid]
        in_cache = await self.store(cache.count_cached, self.user_id)
        new = sum(1 for i in to_fetch if i not in cached)
        total = min(self.job.max_results, in_cache + new)
        counts = await self.fetch(to_fetch, total=total)
        return SyncOutcome(
            "incremental",
            total,
            counts.fetched,
            max(0, total - len(to_fetch)),
            counts.missing,
            delta.history_id,
            self.account.synced_depth or self.job.max_results,
        )

    async def fetch(self, ids: list[str], total: int) -> _Counts:
        """Fetch ``ids`` in batches; progress counts the cached part of ``total`` as done."""
        size = self.settings.batch_size
        batches = [ids[i : i + size] for i in range(0, len(ids), size)]
        counts = _Counts(progress=max(0, total - len(ids)))
        self.metrics.cache.labels("hit").inc(counts.progress)
        self.metrics.cache.labels("miss").inc(len(ids))
        await self.step(
            f"{counts.progress} cached; fetching {len(ids)} messages in {len(batches)} batches",
            progress=counts.progress,
            total=total,
            cached=counts.progress,
            fetched=0,
        )
        lock = asyncio.Lock()
        slots = asyncio.Semaphore(self.settings.batches_in_flight)

        async def one(batch: list[str]) -> None:
            async with slots:
                result = await self.client.fetch_messages(batch)
            async with lock:
                counts.batches += 1
                counts.fetched += len(result.messages)
                counts.missing += len(result.missing)
                self.metrics.vanished.inc(len(result.missing))
                counts.progress = min(total, counts.progress + len(batch))
                await self._save(list(result.messages.values()), counts, total, len(batches))

        await run_all([one(b) for b in batches])
        return counts

    async def _save(
        self, messages: list[dict[str, Any]], counts: _Counts, total: int, batches: int
    ) -> None:
        def save(session: Session) -> Job | None:
            cache.save_messages(session, self.user_id, messages)
            return repo.record_progress(
                session,
                self.job.id,
                self.tracer,
                progress=counts.progress,
                total=total,
                fetched=counts.fetched,
                current_step=f"Fetched batch {counts.batches}/{batches}",
            )

        if await self.store(save) is None:
            raise JobCancelled(self.job.id)
