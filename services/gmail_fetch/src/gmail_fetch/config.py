"""gmail_fetch settings, from ``GMAIL_FETCH_*`` environment variables (plus the shared ones)."""

from __future__ import annotations

from typing import ClassVar

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from tributary.config import ServiceSettings

DEFAULT_SCOPE = "https://www.googleapis.com/auth/gmail.readonly"


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class GmailFetchSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="GMAIL_FETCH_", extra="ignore", frozen=True, populate_by_name=True
    )
    service_name: ClassVar[str] = "gmail_fetch"

    # -- Google endpoints ---------------------------------------------------------------
    api_endpoint: str = Field(
        "https://gmail.googleapis.com/",
        description="Gmail API root (client_options api_endpoint); a local fake in tests/demo.",
    )
    batch_path: str = Field(
        "batch/gmail/v1", description="Path of the batch endpoint, relative to the API endpoint."
    )
    token_uri: str = Field(
        "https://oauth2.googleapis.com/token", description="OAuth 2 token endpoint."
    )
    oauth_client_id: str = Field(description="OAuth client id the refresh tokens belong to.")
    oauth_client_secret: SecretStr = Field(description="OAuth client secret.")
    oauth_scopes: str = Field(DEFAULT_SCOPE, description="Comma-separated OAuth scopes.")
    # -- secrets --------------------------------------------------------------------------
    token_encryption_keys: SecretStr = Field(
        description="Comma-separated Fernet keys encrypting stored refresh tokens; the first "
        "encrypts, all decrypt (rotation)."
    )
    # -- jobs -----------------------------------------------------------------------------
    max_results_cap: int = Field(
        500, ge=1, le=10_000, description="Largest max_results a job may ask for."
    )
    default_max_results: int = Field(500, ge=1, description="max_results of a job that names none.")
    max_concurrent_jobs: int = Field(5, ge=1, le=100, description="Jobs one replica runs at once.")
    job_max_attempts: int = Field(
        3, ge=1, le=10, description="Attempts of a job failing transiently."
    )
    job_retry_base_seconds: float = Field(
        5.0, gt=0, description="Backoff before a job's second attempt (doubles each attempt)."
    )
    job_retry_max_seconds: float = Field(
        600.0, gt=0, description="Longest backoff between two attempts of a job."
    )
    job_timeout_seconds: float = Field(900.0, gt=0, description="Deadline of one job attempt.")
    claim_idle_seconds: float = Field(
        60.0, gt=0, description="A job whose replica went silent this long is taken over."
    )
    metadata_headers: str = Field(
        "From,To,Subject,Date",
        description="Headers fetched with format=metadata (comma-separated).",
    )
    # -- Gmail calls ----------------------------------------------------------------------
    batch_size: int = Field(50, ge=1, le=100, description="messages.get calls per batch request.")
    batches_in_flight: int = Field(4, ge=1, description="Batch requests one job has in flight.")
    max_inflight_requests: int = Field(
        8, ge=1, le=64, description="Gmail HTTP requests in flight per replica (worker threads)."
    )
    quota_units_per_minute: int = Field(
        15_000, ge=10, description="Per-user Gmail quota (units/minute), shared by all replicas."
    )
    part_max_retries: int = Field(
        5,
        ge=0,
        description="Retries of a rate-limited/5xx call or batch part before the job fails.",
    )
    backoff_base_seconds: float = Field(0.5, gt=0, description="First retry delay of a call.")
    backoff_max_seconds: float = Field(32.0, gt=0, description="Longest retry delay of a call.")
    http_timeout_seconds: float = Field(
        30.0, gt=0, description="Timeout of one Gmail HTTP request."
    )
    cache_retention_days: float = Field(
        30.0, gt=0, description="Cached messages fetched longer ago than this are deleted."
    )
    job_retention_days: float = Field(
        30.0, gt=0, description="Finished jobs (completed, failed, cancelled) are kept this long."
    )

    @field_validator("token_encryption_keys")
    @classmethod
    def _fernet_keys(cls, value: SecretStr) -> SecretStr:
        keys = split_list(value.get_secret_value())
        if not keys:
            raise ValueError("at least one Fernet key is required")
        for key in keys:
            try:
                Fernet(key)
            except (ValueError, TypeError):
                raise ValueError(
                    "not a Fernet key (32 url-safe base64-encoded bytes); generate one with "
                    "Fernet.generate_key()"
                ) from None
        return value

    @field_validator("api_endpoint", "token_uri")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _default_within_cap(self) -> GmailFetchSettings:
        if self.default_max_results > self.max_results_cap:
            raise ValueError("GMAIL_FETCH_DEFAULT_MAX_RESULTS exceeds GMAIL_FETCH_MAX_RESULTS_CAP")
        return self

    @property
    def scopes(self) -> list[str]:
        return split_list(self.oauth_scopes)

    @property
    def headers(self) -> list[str]:
        return split_list(self.metadata_headers)

    @property
    def batch_uri(self) -> str:
        return self.api_endpoint.rstrip("/") + "/" + self.batch_path.lstrip("/")

    def encryption_keys(self) -> list[str]:
        return split_list(self.token_encryption_keys.get_secret_value())
