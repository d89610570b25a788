"""Queries on message_cache: one row per (user, message), at the message's historyId."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from gmail_fetch.models import message_cache
from gmail_fetch.repository import utcnow


def cached_versions(session: Session, user_id: str, ids: Sequence[str]) -> dict[str, int]:
    """message id -> cached historyId, for the ids in the cache."""
    found: dict[str, int] = {}
    for start in range(0, len(ids), 5000):
        chunk = list(ids[start : start + 5000])
        stmt = sa.select(message_cache.c.message_id, message_cache.c.history_id).where(
            message_cache.c.user_id == user_id, message_cache.c.message_id.in_(chunk)
        )
        found.update({r.message_id: int(r.history_id) for r in session.execute(stmt)})
    return found


def cache_rows(user_id: str, messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "user_id": user_id,
            "message_id": m["id"],
            "thread_id": m.get("threadId", m["id"]),
            "label_ids": list(m.get("labelIds", [])),
            "headers": {h["name"]: h["value"] for h in m.get("payload", {}).get("headers", [])},
            "internal_date": int(m.get("internalDate", 0)),
            "size_estimate": int(m.get("sizeEstimate", 0)),
            "history_id": int(m.get("historyId", 0)),
            "fetched_at": now,
        }
        for m in messages
    ]


def save_messages(session: Session, user_id: str, messages: Iterable[dict[str, Any]]) -> int:
    """Upsert fetched messages (one row per user and message, whatever the retries)."""
    rows = cache_rows(user_id, messages)
    if not rows:
        return 0
    stmt = postgresql.insert(message_cache).values(rows)
    excluded = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[message_cache.c.user_id, message_cache.c.message_id],
        set_={
            c: excluded[c]
            for c in (
                "thread_id",
                "label_ids",
                "headers",
                "internal_date",
                "size_estimate",
                "history_id",
                "fetched_at",
            )
        },
        where=message_cache.c.history_id <= excluded.history_id,
    )
    session.execute(stmt)
    return len(rows)


def delete_cached(session: Session, user_id: str, ids: Iterable[str]) -> None:
    chunk = list(ids)
    if chunk:
        session.execute(
            sa.delete(message_cache).where(
                message_cache.c.user_id == user_id, message_cache.c.message_id.in_(chunk)
            )
        )


def prune_unlisted(session: Session, user_id: str, listed: Sequence[str]) -> int:
    """After a full listing: drop cached messages newer than the oldest listed one that the
    listing no longer has (deleted, or moved to spam/trash, while history was unavailable)."""
    if not listed:
        return 0
    oldest = session.execute(
        sa.select(sa.func.min(message_cache.c.internal_date)).where(
            message_cache.c.user_id == user_id, message_cache.c.message_id.in_(list(listed))
        )
    ).scalar_one_or_none()
    if oldest is None:
        return 0
    result = session.execute(
        sa.delete(message_cache).where(
            message_cache.c.user_id == user_id,
            message_cache.c.internal_date >= oldest,
            message_cache.c.message_id.not_in(list(listed)),
        )
    )
    return int(getattr(result, "rowcount", 0))


def count_cached(session: Session, user_id: str) -> int:
    stmt = sa.select(sa.func.count()).select_from(message_cache)
    return int(session.execute(stmt.where(message_cache.c.user_id == user_id)).scalar_one())
