"""HTTP API of notification set-up: receivers, silences, maintenance windows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy.exc import IntegrityError

from alert import repository
from alert.app import AlertApp
from alert.matchers import parse_matchers
from alert.notify.suppression import Window
from alert.schemas import (
    AttemptOut,
    NotificationOut,
    ReceiverOut,
    ReceiverSpec,
    SilenceOut,
    SilenceSpec,
    WindowOut,
    WindowSpec,
)
from tributary.egress import EgressPolicy, RefusedUrl
from tributary.logs import redact
from tributary.transactions import Transactions
from tributary.web.errors import error_responses
from tributary.web.params import RowId

#: 422 (starlette renamed its constant; the number is what clients see)
UNPROCESSABLE = 422
NOT_FOUND = error_responses(404)
CONFLICT = error_responses(409)


def notification_out(row: Any, tries: Sequence[dict[str, Any]]) -> NotificationOut:
    fields = {
        name: getattr(row, name)
        for name in NotificationOut.model_fields
        if name != "delivery_attempts"
    }
    return NotificationOut(
        **fields, delivery_attempts=[AttemptOut.model_validate(t) for t in tries]
    )


def not_found(what: str, key: object) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {key} not found")


def _found(row: Any, what: str, key: object) -> Any:
    """``row``, or a 404 naming ``what`` when there is none."""
    if row is None:
        raise not_found(what, key)
    return row


def receiver_out(row: Any) -> ReceiverOut:
    """A receiver as the API shows it: never its secret, its header values or the secret
    parts of its URL."""
    config = row.config or {}
    url = config.get("url")
    return ReceiverOut(
        id=row.id,
        name=row.name,
        kind=row.kind,
        url=redact(url) if url else None,
        timeout_seconds=config.get("timeout_seconds"),
        header_names=sorted(config.get("headers") or {}),
        has_hmac_secret=bool(row.secret),
        to=config.get("to") or [],
        subject_prefix=config.get("subject_prefix") or "",
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _receivers_read(db: Transactions) -> APIRouter:
    router = APIRouter(prefix="/receivers", tags=["receivers"])

    @router.get("")
    async def list_receivers() -> list[ReceiverOut]:
        return [receiver_out(r) for r in await db.read(repository.list_receivers)]

    @router.get("/{receiver_id}", responses=NOT_FOUND)
    async def get_receiver(receiver_id: RowId) -> ReceiverOut:
        row = await db.read(repository.get_receiver, receiver_id)
        return receiver_out(_found(row, "receiver", receiver_id))

    return router


async def _check_url(policy: EgressPolicy, url: str) -> None:
    """422 naming the egress rule a webhook URL breaks (the URL itself is not echoed)."""
    try:
        await policy.avet_url(url)
    except RefusedUrl as exc:
        raise HTTPException(UNPROCESSABLE, f"url refused ({exc.rule}): {exc}") from None


def _receivers_write(app: AlertApp, db: Transactions) -> APIRouter:
    router = APIRouter(prefix="/receivers", tags=["receivers"])

    async def save(spec: ReceiverSpec, receiver_id: int | None = None) -> ReceiverOut:
        if spec.url is not None:
            await _check_url(app.egress, spec.url)
        try:
            row = await db(repository.save_receiver, spec.row(), app.clock(), receiver_id)
        except IntegrityError:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"a receiver named {spec.name!r} already exists"
            ) from None
        if row is None:
            raise not_found("receiver", receiver_id)
        return receiver_out(row)

    @router.post("", status_code=status.HTTP_201_CREATED, responses=CONFLICT)
    async def create_receiver(spec: ReceiverSpec) -> ReceiverOut:
        return await save(spec)

    @router.put("/{receiver_id}", responses=error_responses(404, 409))
    async def replace_receiver(receiver_id: RowId, spec: ReceiverSpec) -> ReceiverOut:
        return await save(spec, receiver_id)

    @router.delete(
        "/{receiver_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=error_responses(404, 409),
    )
    async def delete_receiver(receiver_id: RowId) -> Response:
        found, users = await db(repository.delete_receiver, receiver_id)
        if not found:
            raise not_found("receiver", receiver_id)
        if users:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"receiver is used by rule(s) {', '.join(map(str, users))}",
            )
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router


def _silence_out(row: Any, app: AlertApp) -> SilenceOut:
    now = app.clock()
    return SilenceOut(
        id=row.id,
        matchers=parse_matchers(row.matchers),
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        created_by=row.created_by,
        comment=row.comment,
        created_at=row.created_at,
        active=row.starts_at <= now < row.ends_at,
    )


def _silences(app: AlertApp, db: Transactions) -> APIRouter:
    router = APIRouter(prefix="/silences", tags=["silences"])

    @router.post("", status_code=status.HTTP_201_CREATED)
    async def create_silence(spec: SilenceSpec) -> SilenceOut:
        starts = spec.starts_at or app.clock()
        if spec.ends_at <= starts:
            raise HTTPException(UNPROCESSABLE, "ends_at must be after starts_at")
        row = await db(repository.insert_silence, spec.row(), app.clock())
        return _silence_out(row, app)

    @router.get("")
    async def list_silences(
        active: bool = Query(False, description="only those in force"),
    ) -> list[SilenceOut]:
        rows = await db(lambda s: repository.list_silences(s, app.clock() if active else None))
        return [_silence_out(r, app) for r in rows]

    @router.get("/{silence_id}", responses=NOT_FOUND)
    async def get_silence(silence_id: RowId) -> SilenceOut:
        row = await db.read(repository.get_silence, silence_id)
        return _silence_out(_found(row, "silence", silence_id), app)

    @router.delete("/{silence_id}", responses=NOT_FOUND)
    async def expire_silence(silence_id: RowId) -> SilenceOut:
        """Expire the silence now (it stays listed, inactive)."""
        row = await db(lambda s: repository.expire_silence(s, silence_id, app.clock()))
        if row is None:
            raise not_found("silence", silence_id)
        return _silence_out(row, app)

    return router


def _window_out(row: Any, app: AlertApp) -> WindowOut:
    window = Window.of_row(row)
    fields = {name: getattr(row, name) for name in WindowOut.model_fields if name != "active"}
    return WindowOut(**fields, active=row.enabled and window.is_active(app.clock()))


def _windows(app: AlertApp, db: Transactions) -> APIRouter:
    router = APIRouter(prefix="/maintenance-windows", tags=["maintenance windows"])

    async def save(spec: WindowSpec, window_id: int | None = None) -> WindowOut:
        row = await db(repository.save_window, spec.row(), app.clock(), window_id)
        if row is None:
            raise not_found("maintenance window", window_id)
        return _window_out(row, app)

    @router.post("", status_code=status.HTTP_201_CREATED)
    async def create_window(spec: WindowSpec) -> WindowOut:
        return await save(spec)

    @router.get("")
    async def list_windows() -> list[WindowOut]:
        return [_window_out(r, app) for r in await db.read(repository.list_windows)]

    @router.get("/{window_id}", responses=NOT_FOUND)
    async def get_window(window_id: RowId) -> WindowOut:
        row = await db.read(repository.get_window, window_id)
        return _window_out(_found(row, "maintenance window", window_id), app)

    @router.put("/{window_id}", responses=NOT_FOUND)
    async def replace_window(window_id: RowId, spec: WindowSpec) -> WindowOut:
        return await save(spec, window_id)

    @router.delete("/{window_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
    async def delete_window(window_id: RowId) -> Response:
        if not await db(repository.delete_window, window_id):
            raise not_found("maintenance window", window_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router


def router(app: AlertApp, db: Transactions) -> APIRouter:
    root = APIRouter()
    root.include_router(_receivers_read(db))
    root.include_router(_receivers_write(app, db))
    root.include_router(_silences(app, db))
    root.include_router(_windows(app, db))
    return root
