"""traffic_sync's tables. Schema-free: on MySQL/MariaDB they live in the URL's
database, on PostgreSQL in the schema the engine's search path names."""

from __future__ import annotations

import sqlalchemy as sa

from tributary.outbox import outbox_table

BATCH_ID_LENGTH = 36  # a UUIDv7 in text form
NODE_KEY_LENGTH = 255
REASON_LENGTH = 32
DETAIL_LENGTH = 255

metadata = sa.MetaData()

node_traffic = sa.Table(
    "node_traffic",
    metadata,
    sa.Column("node_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("upload_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("download_bytes", sa.BigInteger, nullable=False, server_default="0"),
    # upload + download, what the Go worker's ``traffic_used`` counted
    sa.Column("traffic_used_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("traffic_limit_bytes", sa.BigInteger, nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

#: one row per applied batch: the transaction that applies a batch inserts its row,
#: so applying the same batch again (after a crash before the Redis clean-up) is a no-op
flush_ledger = sa.Table(
    "traffic_flush_ledger",
    metadata,
    sa.Column("batch_id", sa.String(BATCH_ID_LENGTH), primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("nodes", sa.Integer, nullable=False),
    sa.Column("upload_bytes", sa.BigInteger, nullable=False),
    sa.Column("download_bytes", sa.BigInteger, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
    sa.Index("ix_traffic_flush_ledger_applied_at", "applied_at"),
)

#: node data that could not be flushed (bad counters, bad id, wrong key type)
rejects = sa.Table(
    "traffic_rejects",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("batch_id", sa.String(BATCH_ID_LENGTH), nullable=False),
    sa.Column("node_key", sa.String(NODE_KEY_LENGTH), nullable=False),
    sa.Column("reason", sa.String(REASON_LENGTH), nullable=False),
    sa.Column("detail", sa.String(DETAIL_LENGTH), nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_traffic_rejects_created_at", "created_at"),
)

outbox = outbox_table(metadata)
