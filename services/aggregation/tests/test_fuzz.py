"""schemathesis against the aggregation API over real HTTP: no 5xx, every answer as
documented."""

from __future__ import annotations

import pytest

from aggregation.api import router
from tributary_testing.auth import AUTH, check_every_operation_needs_a_token, secured_app
from tributary_testing.fuzz import fuzz_api

from .conftest import AppFactory

pytestmark = pytest.mark.fuzz


async def test_fuzzing_the_api_finds_no_server_error_and_no_undocumented_answer(
    make_app: AppFactory,
) -> None:
    res, _ = await make_app()
    app = secured_app("aggregation", res.metrics, [router(res.sessions)])
    assert await check_every_operation_needs_a_token(app) > 0
    run = await fuzz_api(app, headers=AUTH)
    assert run.passed, run.output
    print(run.summary())
