"""``python -m gmail_fetch once`` fails, naming the jobs that failed (issue 20: a one-shot
verb exits non-zero when its work failed; tributary.cli turns CycleFailed into exit 1 and
one line on stderr)."""

from __future__ import annotations

import dataclasses

import pytest

from gmail_fetch.service import once
from tributary.errors import CycleFailed

from .harness import Harness


async def test_once_fails_naming_the_job_that_failed(harness: Harness) -> None:
    for runner in harness.parts.runners:  # once reads in burst mode: do not wait long
        runner.options = dataclasses.replace(runner.options, block_ms=50)
    harness.add_user(5)
    done = await harness.create_job(max_results=5)
    await once(harness.res, harness.parts)
    assert (await harness.job(done["id"]))["status"] == "completed"

    harness.fake.revoke(harness.add_user(5, user_id="user-2", email="two@example.com"))
    failing = await harness.create_job(user_id="user-2", max_results=5)
    with pytest.raises(CycleFailed) as failed:
        await once(harness.res, harness.parts)
    said = str(failed.value)
    assert said.startswith(f"1 job(s) failed: {failing['id']} (")
    assert "invalid_grant" in said
    assert "\n" not in said
