from __future__ import annotations

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from tributary.config import ServiceSettings, load_settings
from tributary.errors import ConfigError


class TrafficSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAFFIC_SYNC_", extra="ignore", frozen=True)

    interval_seconds: float = Field(300.0, gt=0, description="Flush interval.")
    api_token: SecretStr = Field(description="Token of the admin API.")


def test_prefixed_and_shared_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/3")
    monkeypatch.setenv("TRAFFIC_SYNC_INTERVAL_SECONDS", "5")
    monkeypatch.setenv("TRAFFIC_SYNC_API_TOKEN", "s3cret")
    settings = load_settings(TrafficSettings)
    assert settings.redis_url.get_secret_value() == "redis://r:6379/3"
    assert settings.interval_seconds == 5.0
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings.model_dump())


def test_bad_and_missing_variables_are_named_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFIC_SYNC_INTERVAL_SECONDS", "-1")
    monkeypatch.setenv("HTTP_PORT", "99999")
    monkeypatch.delenv("TRAFFIC_SYNC_API_TOKEN", raising=False)
    with pytest.raises(ConfigError) as err:
        load_settings(TrafficSettings)
    message = str(err.value)
    assert "\n" not in message
    for name in ("TRAFFIC_SYNC_INTERVAL_SECONDS", "HTTP_PORT", "TRAFFIC_SYNC_API_TOKEN"):
        assert name in message
