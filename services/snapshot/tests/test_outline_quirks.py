"""The real Outline server's quirks (issue 20), one test each, against the fake with the
quirk switched on (simulators.outline_quirks): nothing fails, nothing is counted twice
or lost."""

from __future__ import annotations

from simulators.outline import FakeOutlineServer
from simulators.outline_quirks import Quirks

from .harness import MB, Harness

STEP = 300.0


async def _server(harness: Harness, quirks: Quirks, *key_ids: str) -> FakeOutlineServer:
    server = await harness.sim.add_server(interval_metrics=True)
    server.quirks = quirks
    for key_id in key_ids or ("0", "1"):
        server.create_key(key_id=key_id)
    return server


def _metric(harness: Harness, name: str, labels: dict[str, str] | None = None) -> float:
    value = harness.res.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


async def _collected(harness: Harness, server_id: str) -> None:
    outcome = await harness.collect(server_id)
    assert outcome.status == "collected", outcome


async def _baseline(
    harness: Harness, quirks: Quirks, *key_ids: str
) -> tuple[FakeOutlineServer, str]:
    """A server with these quirks, registered and collected once (the baseline)."""
    server = await _server(harness, quirks, *key_ids)
    server_id = harness.register(server)
    await _collected(harness, server_id)
    return server, server_id


async def _after(
    harness: Harness, server: FakeOutlineServer, server_id: str, seconds: float, **traffic: int
) -> None:
    """``seconds`` later, with this traffic (bytes by key id) since: collected again."""
    harness.advance(seconds)
    for key_id, nbytes in traffic.items():
        server.add_traffic(key_id, nbytes)
    await _collected(harness, server_id)


def _last(harness: Harness, server_id: str, key_id: str) -> tuple[int, str]:
    row = harness.deltas(server_id, key_id)[-1]
    return row.delta_bytes, row.source


async def test_a_key_id_of_any_length_and_its_name_are_stored_whole(harness: Harness) -> None:
    long_id, long_name = "id-" + "x" * 4000, "name-" + "y" * 4000
    server = await _server(harness, Quirks(), "0")
    server.create_key(key_id=long_id, name=long_name)  # PUT /access-keys/{id}
    server_id = harness.register(server)
    await _collected(harness, server_id)
    await _after(harness, server, server_id, STEP, **{long_id: 4 * MB})
    names = harness.rows("SELECT name FROM access_keys WHERE key_id = :k", k=long_id)
    assert [r.name for r in names] == [long_name]
    # the id is not a number: the interval answer cannot name it, the window can
    assert _last(harness, server_id, long_id) == (4 * MB, "window")


async def test_a_non_numeric_key_id_comes_back_null_and_gets_window_deltas(
    harness: Harness,
) -> None:
    server, server_id = await _baseline(harness, Quirks(parse_int_ids=True), "0", "my-identifier")
    await _after(harness, server, server_id, STEP, **{"0": 3 * MB, "my-identifier": 5 * MB})
    assert _last(harness, server_id, "0") == (3 * MB, "interval")
    assert _last(harness, server_id, "my-identifier") == (5 * MB, "window")
    assert _metric(harness, "snapshot_interval_unmatched_entries_total") == 1
    labels = {"reason": "unmatched"}
    assert _metric(harness, "snapshot_interval_fallbacks_total", labels) == 1


async def test_ids_parseint_reads_alike_are_not_mixed_up(harness: Harness) -> None:
    server, server_id = await _baseline(harness, Quirks(parse_int_ids=True), "7", "007")
    # the entry of 007 says accessKeyId 7 as well
    await _after(harness, server, server_id, STEP, **{"7": 10 * MB, "007": 20 * MB})
    assert _last(harness, server_id, "7") == (10 * MB, "window")
    assert _last(harness, server_id, "007") == (20 * MB, "window")


async def test_a_cached_interval_answer_is_not_counted_again(harness: Harness) -> None:
    server, server_id = await _baseline(harness, Quirks(query_cache=True))
    await _after(harness, server, server_id, STEP, **{"0": 50 * MB})
    await _after(harness, server, server_id, STEP, **{"0": 5 * MB})
    assert [r.delta_bytes for r in harness.deltas(server_id, "0")] == [0, 50 * MB, 5 * MB]
    assert _last(harness, server_id, "0") == (5 * MB, "window")
    labels = {"reason": "inconsistent"}
    assert _metric(harness, "snapshot_interval_fallbacks_total", labels) == 1
    used = harness.rows("SELECT used_24h FROM access_keys WHERE key_id = '0'")
    assert used[0].used_24h == 55 * MB


async def test_a_since_shorter_than_a_scrape_loses_nothing(harness: Harness) -> None:
    server, server_id = await _baseline(harness, Quirks(scrape_seconds=60))
    await _after(harness, server, server_id, 30, **{"0": 10 * MB})
    assert _last(harness, server_id, "0") == (10 * MB, "window")
    await _after(harness, server, server_id, STEP + 30, **{"0": 7 * MB})
    assert _last(harness, server_id, "0") == (7 * MB, "interval")


async def test_negative_byte_counts_are_read_as_zero(harness: Harness) -> None:
    server, server_id = await _baseline(harness, Quirks(negative_bytes=True))
    # key 1 has no traffic: its entry says -1.4e-11
    await _after(harness, server, server_id, STEP, **{"0": 2 * MB})
    assert _last(harness, server_id, "0") == (2 * MB, "interval")
    assert _last(harness, server_id, "1") == (0, "interval")
    assert _metric(harness, "snapshot_negative_byte_counts_total") == 1


async def test_fractional_byte_counts_are_rounded(harness: Harness) -> None:
    server, server_id = await _baseline(harness, Quirks(fractional_bytes=True))
    # the answer says 2000000.37
    await _after(harness, server, server_id, STEP, **{"0": 2 * MB})
    assert _last(harness, server_id, "0") == (2 * MB, "interval")


async def test_unlabelled_traffic_the_empty_key_is_no_key(harness: Harness) -> None:
    server, server_id = await _baseline(harness, Quirks(unlabelled_bytes=9 * MB))
    await _after(harness, server, server_id, STEP, **{"0": 2 * MB})
    assert _last(harness, server_id, "0") == (2 * MB, "interval")
    assert harness.rows("SELECT key_id FROM access_keys WHERE key_id = ''") == []


async def test_usage_of_a_key_no_longer_listed_and_zero_byte_keys(harness: Harness) -> None:
    server = await _server(harness, Quirks(zero_entries=True), "0", "1", "2")
    server_id = harness.register(server)
    server.add_traffic("2", 8 * MB)
    await _collected(harness, server_id)
    server.delete_key("2")  # its usage stays in /metrics/transfer for 30 days
    # key 1: absent from the 30-day map, 0 in the interval
    await _after(harness, server, server_id, STEP, **{"0": 2 * MB})
    assert _last(harness, server_id, "0") == (2 * MB, "interval")
    assert _last(harness, server_id, "1") == (0, "interval")
    keys = harness.rows("SELECT key_id, deleted_at FROM access_keys ORDER BY key_id")
    assert [(k.key_id, k.deleted_at is not None) for k in keys] == [
        ("0", False),
        ("1", False),
        ("2", True),
    ]


async def test_a_cached_answer_of_a_busy_key_is_caught_too(harness: Harness) -> None:
    """The tolerance is the answer's own size, not the 30-day reading's: a key with 2 GB
    in its window must not have a cached 15 MB taken for its 2 MB."""
    server, server_id = await _baseline(harness, Quirks(query_cache=True))
    await _after(harness, server, server_id, 200, **{"0": 2000 * MB})  # since=200s
    await _after(harness, server, server_id, STEP, **{"0": 15 * MB})  # since=300s, cached
    await _after(harness, server, server_id, STEP, **{"0": 2 * MB})  # since=300s again
    deltas = [r.delta_bytes for r in harness.deltas(server_id, "0")]
    assert deltas == [0, 2000 * MB, 15 * MB, 2 * MB]
