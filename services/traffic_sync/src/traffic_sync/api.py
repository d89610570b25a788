"""HTTP routes: a node's traffic and its limit."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, TypeVar

import redis.asyncio as aioredis
from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from sqlalchemy.orm import Session, sessionmaker

from traffic_sync import repository
from traffic_sync.batch import BadNode, parse_counter
from traffic_sync.counters import DOWNLOAD, MAX_BYTES, UPLOAD, TrafficKeys
from tributary.transactions import Transactions
from tributary.web.errors import error_responses

log = logging.getLogger(__name__)

T = TypeVar("T")

NodeId = Annotated[int, Path(ge=0, le=MAX_BYTES, description="Node id (an integer).")]


class NodeTrafficOut(BaseModel):
    node_id: int
    upload_bytes: int = Field(description="Flushed upload bytes.")
    download_bytes: int = Field(description="Flushed download bytes.")
    traffic_used_bytes: int = Field(description="Flushed upload + download bytes.")
    traffic_limit_bytes: int | None = Field(description="The node's limit, if any.")
    updated_at: datetime | None = Field(description="Last change of the row.")
    unflushed_upload_bytes: int | None = Field(
        description="Upload bytes in Redis not yet flushed (null if unreadable)."
    )
    unflushed_download_bytes: int | None = Field(
        description="Download bytes in Redis not yet flushed (null if unreadable)."
    )


class LimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit_bytes: int | None = Field(
        ge=0, le=MAX_BYTES, description="Traffic limit in bytes; null removes the limit."
    )


def _unflushed(value: str | bytes | None) -> int | None:
    if value is None:
        return 0
    try:
        return parse_counter("counter", value if isinstance(value, str) else value.decode())
    except (BadNode, UnicodeDecodeError):
        return None


def make_router(
    sessions: sessionmaker[Session], redis: aioredis.Redis, keys: TrafficKeys
) -> APIRouter:
    router = APIRouter(tags=["traffic"])
    db = Transactions(sessions)

    def write_limit(
        session: Session, node_id: int, limit: int | None
    ) -> repository.NodeTraffic | None:
        repository.set_limit(session, node_id, limit, repository.utcnow())
        return repository.get_node(session, node_id)

    async def unflushed(node_id: int) -> tuple[int | None, int | None]:
        """What the node's Redis hash holds (0 without one, None when unreadable)."""
        try:
            up, down = await redis.hmget(keys.node(node_id), [UPLOAD, DOWNLOAD])
        except RedisError as exc:  # a key of the wrong type, or Redis unreachable
            log.warning("unflushed counters of node %d unreadable: %s", node_id, exc)
            return None, None
        return _unflushed(up), _unflushed(down)

    async def describe(node_id: int, row: repository.NodeTraffic | None) -> NodeTrafficOut:
        pending = await unflushed(node_id)
        if row is None and pending == (0, 0):
            raise HTTPException(404, detail=f"node {node_id} has no traffic recorded")
        return NodeTrafficOut(
            node_id=node_id,
            upload_bytes=row.upload_bytes if row else 0,
            download_bytes=row.download_bytes if row else 0,
            traffic_used_bytes=row.traffic_used_bytes if row else 0,
            traffic_limit_bytes=row.traffic_limit_bytes if row else None,
            updated_at=row.updated_at if row else None,
            unflushed_upload_bytes=pending[0],
            unflushed_download_bytes=pending[1],
        )

    @router.get(
        "/nodes/{node_id}/traffic", response_model=NodeTrafficOut, responses=error_responses(404)
    )
    async def node_traffic(node_id: NodeId) -> NodeTrafficOut:
        """A node's flushed counters and limit, plus what Redis holds not yet flushed."""
        row = await db.read(repository.get_node, node_id)
        return await describe(node_id, row)

    @router.put("/nodes/{node_id}/limit", response_model=NodeTrafficOut)
    async def node_limit(node_id: NodeId, body: LimitIn) -> NodeTrafficOut:
        """Set or clear a node's traffic limit (carried by its next traffic.flushed events)."""
        row = await db(write_limit, node_id, body.limit_bytes)
        return await describe(node_id, row)

    return router
