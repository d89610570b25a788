"""schemathesis against the gmail_fetch API over real HTTP (with a valid bearer token):
no 5xx, every answer as documented."""

from __future__ import annotations

import pytest

from tributary_testing.auth import AUTH, check_every_operation_needs_a_token, secured_app
from tributary_testing.fuzz import fuzz_api

from .harness import Harness

pytestmark = pytest.mark.fuzz


async def test_fuzzing_the_api_finds_no_server_error_and_no_undocumented_answer(
    harness: Harness,
) -> None:
    harness.add_account()
    app = secured_app("gmail_fetch", harness.res.metrics, harness.parts.routers)
    assert await check_every_operation_needs_a_token(app) > 0
    run = await fuzz_api(app, headers=AUTH)
    assert run.passed, run.output
    print(run.summary())
