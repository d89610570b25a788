"""The one backoff formula: exponential, capped, full jitter."""

from __future__ import annotations

import random

import pytest

from tributary.backoff import backoff_ceiling, compute_backoff


def test_the_ceiling_doubles_per_attempt_up_to_the_cap() -> None:
    assert [backoff_ceiling(n, base=1.0, cap=10.0) for n in range(1, 7)] == [
        1.0, 2.0, 4.0, 8.0, 10.0, 10.0,
    ]  # fmt: skip
    assert backoff_ceiling(0, base=1.0, cap=10.0) == 1.0  # attempt 0 counts as the first
    assert backoff_ceiling(10_000, base=1.0, cap=10.0) == 10.0  # no overflow


def test_full_jitter_draws_over_the_whole_window() -> None:
    rng = random.Random(7)
    delays = [compute_backoff(4, base=1.0, cap=60.0, rng=rng.random) for _ in range(1000)]
    assert all(0.0 <= d < 8.0 for d in delays)
    assert min(delays) < 0.5
    assert max(delays) > 7.5
    assert compute_backoff(4, base=1.0, cap=60.0, rng=lambda: 0.5) == 4.0
    assert compute_backoff(4, base=1.0, cap=60.0, jitter=False) == 8.0


def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        compute_backoff(1, base=-1.0, cap=1.0)
