"""Tables of the snapshot service (PostgreSQL schema ``snapshot``).

- ``servers``: registered Outline servers; the apiUrl only encrypted, plus
  collection state (last success, backoff) and a snapshot counter.
- ``access_keys``: one row per (server, key id), synced from /access-keys;
  the previous reading for deltas, the maintained usage totals of the
  24h / 7d / 30d windows, and the forecast state. ``id`` is the compact
  ``key_ref`` the history tables use.
- ``snapshots``: raw readings, one per key per collection: the 30-day value
  as read and the delta derived from it (30 days kept).
- ``usage_hourly``: hourly rollups of the deltas (kept longer). Bucket
  ``hour`` holds deltas collected in ``(hour, hour + 1h]``.
- ``anomaly_episodes``: one row per anomaly episode (open while ended_at is null).
- ``cursors``: watermarks of the periodic jobs.
- ``inbox`` / ``outbox``: the library's exactly-once tables.
"""

from __future__ import annotations

import sqlalchemy as sa

from tributary.inbox import inbox_table
from tributary.outbox import outbox_table

metadata = sa.MetaData()

TS = sa.DateTime(timezone=True)

servers = sa.Table(
    "servers",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("api_url_encrypted", sa.Text, nullable=False),
    sa.Column("api_url_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("endpoint", sa.String(300), nullable=False),
    sa.Column("cert_sha256", sa.String(64), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("deactivated_at", TS),
    # as long as the Outline server says (text: nothing is cut)
    sa.Column("outline_server_id", sa.Text),
    sa.Column("outline_name", sa.Text),
    sa.Column("access_key_data_limit", sa.BigInteger),
    sa.Column("info_fetched_at", TS),
    sa.Column("interval_metrics", sa.Boolean),
    sa.Column("last_tick", TS),
    sa.Column("last_attempt_at", TS),
    sa.Column("last_success_at", TS),
    sa.Column("last_error", sa.String(500)),
    sa.Column("last_error_kind", sa.String(40)),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("backoff_until", TS),
    sa.Column("snapshot_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("key_count", sa.Integer, nullable=False, server_default="0"),
)

access_keys = sa.Table(
    "access_keys",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column(
        "server_id", sa.String(36), sa.ForeignKey("servers.id", ondelete="CASCADE"), nullable=False
    ),
    # any length: PUT /access-keys/{id} lets an admin choose the id (revision 0003)
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("data_limit", sa.BigInteger),
    sa.Column("incarnation", sa.Integer, nullable=False, server_default="1"),
    sa.Column("first_seen_at", TS, nullable=False),
    sa.Column("last_seen_at", TS, nullable=False),
    sa.Column("deleted_at", TS),
    # traffic before this instant is not tracked by our deltas (first sight, metrics reset)
    sa.Column("window_epoch", TS, nullable=False),
    # usage in the window that never went through our deltas (the reading at first sight);
    # drops are charged to it first, as that traffic ages out
    sa.Column("untracked_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_reading", sa.BigInteger),
    sa.Column("last_reading_at", TS),
    sa.Column("used_24h", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("used_7d", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("used_30d", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("drift_bytes", sa.BigInteger),
    sa.Column("drift_checked_at", TS),
    sa.Column("forecast_state", sa.String(20), nullable=False, server_default="ok"),
    sa.Column("predicted_limit_at", TS),
    sa.Column("forecast_at", TS),
    # unique on a digest of the id: a B-tree entry holds at most about 2.7 kB
    sa.Column("key_id_md5", sa.String(32), sa.Computed("md5(key_id)", persisted=True)),
    sa.UniqueConstraint("server_id", "key_id_md5", name="uq_access_keys_server_key"),
)

#: range-partitioned by day on collected_at (snapshot.partitions; revision 0004): the
#: primary key holds the partition key, ids come from a sequence
snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger,
        primary_key=True,
        autoincrement=False,
        server_default=sa.text("nextval('snapshots_id_seq'::regclass)"),
    ),
    sa.Column(
        "key_ref",
        sa.BigInteger,
        sa.ForeignKey("access_keys.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("collected_at", TS, nullable=False, primary_key=True),
    sa.Column("reading_bytes", sa.BigInteger, nullable=False),
    sa.Column("delta_bytes", sa.BigInteger, nullable=False),
    sa.Column("dropped_bytes", sa.BigInteger, nullable=False, server_default="0"),
    # interval | window | new | baseline
    sa.Column("source", sa.String(10), nullable=False),
    sa.Index("ix_snapshots_key_ref_collected_at", "key_ref", "collected_at"),
    sa.Index("ix_snapshots_collected_at", "collected_at"),
    postgresql_partition_by="RANGE (collected_at)",
)

usage_hourly = sa.Table(
    "usage_hourly",
    metadata,
    sa.Column(
        "key_ref",
        sa.BigInteger,
        sa.ForeignKey("access_keys.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("hour", TS, primary_key=True),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("samples", sa.Integer, nullable=False),
    sa.Column("max_reading", sa.BigInteger, nullable=False),
    sa.Index("ix_usage_hourly_hour", "hour"),
)

anomaly_episodes = sa.Table(
    "anomaly_episodes",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column(
        "key_ref",
        sa.BigInteger,
        sa.ForeignKey("access_keys.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("ended_at", TS),
    sa.Column("observed_bytes", sa.BigInteger, nullable=False),
    sa.Column("baseline_bytes", sa.Float, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("ratio", sa.Float),
    sa.Column("peak_score", sa.Float, nullable=False),
    sa.Column("window_seconds", sa.Integer, nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Index(
        "uq_anomaly_episodes_open",
        "key_ref",
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL"),
    ),
    sa.Index("ix_anomaly_episodes_started_at", "started_at"),
)

cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("at", TS, nullable=False),
)

inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
