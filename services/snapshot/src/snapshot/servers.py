"""Registering, listing and deactivating Outline servers (shared by the API and the CLI)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from snapshot import repository as repo
from snapshot.credentials import (
    InvalidApiUrl,
    SecretBox,
    normalize_fingerprint,
    parse_api_url,
    url_digest,
)
from snapshot.models import servers
from tributary.egress import HTTPS_ONLY, EgressPolicy, RefusedUrl


class RegistrationError(ValueError):
    """Bad registration input; the message never quotes the apiUrl."""


class DuplicateServer(RegistrationError):
    def __init__(self, server_id: str) -> None:
        super().__init__(f"this apiUrl is already registered as server {server_id}")
        self.server_id = server_id


class Registration(BaseModel):
    """What the Outline Manager shows for a server, plus an optional display name."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    api_url: str = Field(alias="apiUrl", min_length=1, max_length=2000)
    cert_sha256: str = Field(alias="certSha256", min_length=1, max_length=200)
    name: str | None = Field(None, max_length=200)


def parse_registration(raw: Any) -> Registration:
    """Validate a registration body; errors name the field, never echo a value."""
    if not isinstance(raw, dict):
        raise RegistrationError("body must be a JSON object with apiUrl and certSha256")
    try:
        return Registration.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise RegistrationError("; ".join(problems)) from None


def vet_destination(policy: EgressPolicy, registration: Registration) -> None:
    """The egress rules: https only, and no loopback, private, link-local... address
    unless the operator allow-lists it. Blocking (DNS): run before the transaction."""
    try:
        parse_api_url(registration.api_url)
    except InvalidApiUrl as exc:
        raise RegistrationError(str(exc)) from None
    try:
        policy.vet_url(registration.api_url.strip(), HTTPS_ONLY)
    except RefusedUrl as exc:
        raise RegistrationError(f"apiUrl refused ({exc.rule}): {exc}") from None


def register_server(
    session: Session, box: SecretBox, registration: Registration, now: datetime
) -> sa.Row[Any]:
    try:
        url = parse_api_url(registration.api_url)
    except InvalidApiUrl as exc:
        raise RegistrationError(str(exc)) from None
    try:
        pin = normalize_fingerprint(registration.cert_sha256)
    except ValueError as exc:
        raise RegistrationError(str(exc)) from None
    digest = url_digest(url)
    existing = repo.server_exists_with_digest(session, digest)
    if existing is not None:
        raise DuplicateServer(existing.id)
    server_id = str(uuid.uuid4())
    session.execute(
        sa.insert(servers).values(
            id=server_id,
            name=(registration.name or url.endpoint)[:200],
            api_url_encrypted=box.encrypt(url),
            api_url_sha256=digest,
            endpoint=url.endpoint,
            cert_sha256=pin,
            active=True,
            created_at=now,
        )
    )
    row = repo.find_server(session, server_id)
    assert row is not None
    return row


def set_active(session: Session, ref: str, active: bool, now: datetime) -> sa.Row[Any] | None:
    row = repo.find_server(session, ref)
    if row is None:
        return None
    session.execute(
        sa.update(servers)
        .where(servers.c.id == row.id)
        .values(
            active=active,
            deactivated_at=None if active else now,
            backoff_until=None,
            consecutive_failures=0,
        )
    )
    return repo.find_server(session, row.id)


PUBLIC_FIELDS = (
    "id",
    "name",
    "endpoint",
    "cert_sha256",
    "active",
    "created_at",
    "deactivated_at",
    "outline_server_id",
    "outline_name",
    "access_key_data_limit",
    "interval_metrics",
    "last_success_at",
    "last_attempt_at",
    "last_error_kind",
    "last_error",
    "consecutive_failures",
    "backoff_until",
    "key_count",
    "snapshot_count",
)


def public_view(row: sa.Row[Any], now: datetime | None = None) -> dict[str, Any]:
    """A server as the API and CLI show it: everything but the apiUrl."""
    view = {name: getattr(row, name) for name in PUBLIC_FIELDS}
    if now is not None:
        view["in_backoff"] = row.backoff_until is not None and row.backoff_until > now
    return view
