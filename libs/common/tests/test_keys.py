"""Key names are stored data: renaming one leaves what Redis holds under the old name
behind (and shared names are a contract with other writers)."""

from __future__ import annotations

from tributary.keys import Keys


def test_every_key_name_behind_the_prefix() -> None:
    keys = Keys("p:")
    assert keys.stream("alerts") == "p:alerts"
    assert keys.dlq("alerts") == "p:alerts.dlq"
    assert keys.retries("alerts", "alert") == "p:alerts:retry:alert"
    assert keys.lease("snapshot:tick") == "p:lease:snapshot:tick"
    assert keys.usage_counter_prefix == "p:usage:"
    assert keys.usage_counter("m1", "2025-03-10", "emails") == "p:usage:m1:2025-03-10:emails"
    assert keys.usage_index("2025-03-10") == "p:usage-index:2025-03-10"
    assert keys.node_traffic_affixes == ("p:node:", ":traffic")
    assert keys.node_traffic(42) == "p:node:42:traffic"
    assert keys.traffic_dirty == "p:traffic_sync:dirty"
    assert keys.traffic_batch("b1") == "p:traffic_sync:batch:b1"
    assert keys.traffic_batches == "p:traffic_sync:batches"
    assert keys.traffic_quarantine_prefix == "p:traffic_sync:quarantine:"
    assert keys.traffic_quarantine("7") == "p:traffic_sync:quarantine:7"
    assert keys.traffic_status == "p:traffic_sync:status"
    assert keys.gmail_quota("u1") == "p:gmail_fetch:quota:u1"
    assert keys.snapshot_scheduler == "p:snapshot:scheduler"


def test_without_a_prefix_the_names_are_the_legacy_ones() -> None:
    keys = Keys()
    assert keys.node_traffic("42") == "node:42:traffic"
    assert keys.usage_counter("m1", "2025-03-10", "emails") == "usage:m1:2025-03-10:emails"
    assert keys.logical("alerts") == "alerts"


def test_logical_is_the_stream_name_of_a_stream_key() -> None:
    keys = Keys("p:")
    assert keys.logical(keys.stream("usage.aggregated")) == "usage.aggregated"
    assert keys.logical("other") == "other"  # not under the prefix: as is
