"""Quota bucket, history folding, error classification, settings, cipher."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httplib2  # type: ignore[import-untyped]
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from googleapiclient.errors import HttpError

from gmail_fetch.config import GmailFetchSettings
from gmail_fetch.crypto import TokenCipher
from gmail_fetch.errors import PermanentJobError
from gmail_fetch.gmail_errors import ApiError
from gmail_fetch.history import HistoryDelta, apply_history_record
from gmail_fetch.quota import QuotaBucket
from tributary.config import load_settings
from tributary.errors import ConfigError
from tributary.keys import Keys


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_quota_bucket_is_shared_between_replicas_and_refills(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    clock = FakeClock()
    one = QuotaBucket(redis_client, keys, 600, clock=clock, sleep=clock.sleep)  # 10 units/s
    two = QuotaBucket(redis_client, keys, 600, clock=clock, sleep=clock.sleep)
    assert await one.take("u", 500) == 0
    assert await two.take("u", 100) == 0  # the bucket is empty now, whoever asks
    assert await one.take("u", 50) == pytest.approx(5.0)
    assert await two.take("u", 10) == pytest.approx(1.0)  # queued behind the debt, then its own
    assert await one.take("other-user", 600) == 0  # users do not share
    clock.now += 120
    assert await two.take("u", 600) == 0  # refilled to capacity, not beyond


def test_history_records_fold_into_upserts_and_deletes() -> None:
    delta = HistoryDelta()
    records = [
        {"id": "10", "messagesAdded": [{"message": {"id": "a", "labelIds": ["INBOX"]}}]},
        {"id": "11", "messagesAdded": [{"message": {"id": "b", "labelIds": ["INBOX"]}}]},
        {"id": "12", "labelsAdded": [{"message": {"id": "a", "labelIds": ["INBOX", "X"]}}]},
        {"id": "13", "messagesDeleted": [{"message": {"id": "b"}}]},
        {"id": "14", "labelsAdded": [{"message": {"id": "c", "labelIds": ["TRASH"]}}]},
        {"id": "15", "messagesAdded": [{"message": {"id": "d", "labelIds": ["SPAM"]}}]},
    ]
    for record in records:
        apply_history_record(delta, record)
    assert delta.upserts == {"a": 12}
    assert delta.deletes == {"b", "c", "d"}


def test_cipher_round_trips_rotates_and_refuses_foreign_tokens() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    stored = TokenCipher([old]).encrypt("1//secret-refresh-token")
    assert "secret-refresh-token" not in stored
    assert TokenCipher([new, old]).decrypt(stored) == "1//secret-refresh-token"
    with pytest.raises(PermanentJobError, match="cannot be decrypted"):
        TokenCipher([new]).decrypt(stored)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GMAIL_FETCH_TOKEN_ENCRYPTION_KEYS": "not-a-key"}, "GMAIL_FETCH_TOKEN_ENCRYPTION_KEYS"),
        ({"API_TOKENS": "ops:short:*"}, "API_TOKENS"),
        ({"GMAIL_FETCH_BATCH_SIZE": "101"}, "GMAIL_FETCH_BATCH_SIZE"),
        ({"GMAIL_FETCH_API_ENDPOINT": "ftp://x"}, "GMAIL_FETCH_API_ENDPOINT"),
        ({"GMAIL_FETCH_OAUTH_CLIENT_ID": None}, "GMAIL_FETCH_OAUTH_CLIENT_ID"),
    ],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None], variable: str
) -> None:
    good = {
        "GMAIL_FETCH_OAUTH_CLIENT_ID": "client",
        "GMAIL_FETCH_OAUTH_CLIENT_SECRET": "secret",
        "GMAIL_FETCH_TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "API_TOKENS": "ops:a-long-enough-api-token:*",
    }
    for name, value in {**good, **env}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=variable) as caught:
        load_settings(GmailFetchSettings)
    assert good["GMAIL_FETCH_TOKEN_ENCRYPTION_KEYS"] not in str(caught.value)


def test_api_error_reads_reasons_status_and_retry_time_from_every_body_shape() -> None:
    def error(status: int, body: dict[str, object]) -> ApiError:
        response = httplib2.Response({"status": status})
        return ApiError.of(HttpError(response, json.dumps({"error": body}).encode()))

    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"}
    hidden = error(403, {"code": 403, "message": "Rate Limit Exceeded", "details": [info]})
    assert hidden.rate_limited
    assert hidden.retryable
    quota = error(403, {"code": 403, "message": "Quota exceeded for quota metric 'Queries'"})
    assert quota.retryable
    assert not quota.reasons
    scopes = {"reason": "insufficientPermissions", "domain": "global", "message": "no"}
    denied = error(403, {"code": 403, "message": "no", "errors": [scopes]})
    assert not denied.retryable
    assert denied.describe() == "HTTP 403 no (insufficientPermissions)"
    later = error(429, {"message": "User-rate limit exceeded.  Retry after 2030-01-01T00:00:10Z"})
    assert later.retry_after(datetime(2030, 1, 1, tzinfo=UTC).timestamp()) == 10.0
    assert later.retry_after(datetime(2030, 1, 2, tzinfo=UTC).timestamp()) == 0.0
    assert error(503, {"message": "Backend Error"}).retry_after(0) == 0.0
