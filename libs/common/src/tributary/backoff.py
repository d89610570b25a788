"""The one backoff formula: exponential, capped, with full jitter.

As dramatiq's ``compute_backoff``: the ceiling of retry ``attempt`` is
``base * 2 ** (attempt - 1)``, capped at ``cap``; the delay is drawn uniformly
between 0 and that ceiling ("full jitter": clients that failed together spread
out over the whole window instead of retrying in step). Every retry loop of the
library and the services asks this function, so they all behave alike.
"""

from __future__ import annotations

import random
from collections.abc import Callable

#: attempts beyond this add nothing (2**62 times any base is past every cap)
_MAX_EXPONENT = 62


def backoff_ceiling(attempt: int, *, base: float, cap: float) -> float:
    """The longest delay before retry ``attempt`` (1: the first): ``base * 2**(attempt-1)``,
    at most ``cap``."""
    exponent = min(max(attempt, 1) - 1, _MAX_EXPONENT)
    return float(min(cap, base * float(2**exponent)))


def compute_backoff(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: bool = True,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry ``attempt`` (1: the first retry).

    With ``jitter`` (the default) a uniform draw from ``[0, ceiling)``; without it,
    the ceiling itself (for schedules that must be predictable, e.g. a run's
    next attempt shown to an operator). ``rng`` returns floats in ``[0, 1)``.
    """
    if base < 0 or cap < 0:
        raise ValueError("backoff base and cap must not be negative")
    ceiling = backoff_ceiling(attempt, base=base, cap=cap)
    return ceiling * rng() if jitter else ceiling
