"""Fixtures of gmail_fetch's tests (the harness itself is harness.py, next to this file)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from gmail_fetch.config import GmailFetchSettings
from simulators.gmail import GmailServer
from tributary.keys import Keys

from .harness import Harness, close_harness, make_settings, open_harness


@pytest.fixture
def gmail() -> Iterator[GmailServer]:
    with GmailServer() as server:
        yield server


@pytest.fixture
def settings(
    gmail: GmailServer, redis_url: str, postgres_url: str, pg_schema: str, keys: Keys
) -> GmailFetchSettings:
    return make_settings(gmail, redis_url, postgres_url, pg_schema, keys)


@pytest.fixture
async def harness(settings: GmailFetchSettings, gmail: GmailServer) -> AsyncIterator[Harness]:
    h = await open_harness(settings, gmail)
    yield h
    await close_harness(h)
