"""What the tests read back from traffic_sync's tables."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from traffic_sync.models import node_traffic


def all_traffic(session: Session) -> dict[int, tuple[int, int, int]]:
    """node id -> (upload, download, used)."""
    rows = session.execute(
        sa.select(
            node_traffic.c.node_id,
            node_traffic.c.upload_bytes,
            node_traffic.c.download_bytes,
            node_traffic.c.traffic_used_bytes,
        )
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}
