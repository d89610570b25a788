"""schemathesis against the snapshot API over real HTTP: no 5xx, every answer as documented."""

from __future__ import annotations

import pytest

from tributary.metrics import Metrics
from tributary_testing.auth import AUTH, secured_app
from tributary_testing.fuzz import fuzz_api

from .harness import Harness

pytestmark = pytest.mark.fuzz


async def test_fuzzing_the_api_finds_no_server_error_and_no_undocumented_answer(
    harness: Harness,
) -> None:
    run = await fuzz_api(secured_app("snapshot", Metrics(), harness.parts.routers), headers=AUTH)
    assert run.passed, run.output
    print(run.summary())
