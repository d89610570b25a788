"""schemathesis against the snapshot API over real HTTP: no 5xx, every answer as documented."""

from __future__ import annotations

import pytest

from tributary.http import create_app
from tributary.metrics import Metrics
from tributary_testing.fuzz import fuzz_api

from .harness import Harness

pytestmark = pytest.mark.fuzz


async def test_fuzzing_the_api_finds_no_server_error_and_no_undocumented_answer(
    harness: Harness,
) -> None:
    run = await fuzz_api(create_app("snapshot", Metrics(), routers=harness.parts.routers))
    assert run.passed, run.output
    print(run.summary())
