"""HTTP API of notification set-up: receivers, silences, maintenance windows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alert import repository
from alert.app import AlertApp
from alert.matchers import parse_matchers
from alert.models import maintenance_windows, receivers, silences
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


async def _by_id(db: Transactions, table: sa.Table, key: RowId, what: str) -> Any:
    """The row of ``table`` whose id is ``key``; a 404 naming ``what`` when there is none."""
    row = await db(lambda s: s.execute(sa.select(table).where(table.c.id == key)).first())
    if row is None:
        raise not_found(what, key)
    return row


def _receivers_read(db: Transactions) -> APIRouter:
    router = APIRouter(prefix="/receivers", tags=["receivers"])

    @router.get("")
    async def list_receivers() -> list[ReceiverOut]:
        rows = await db(lambda s: list(s.execute(sa.select(receivers).order_by(receivers.c.id))))
        return [repository.receiver_out(r) for r in rows]

    @router.get("/{receiver_id}", responses=NOT_FOUND)
    async def get_receiver(receiver_id: RowId) -> ReceiverOut:
        return repository.receiver_out(await _by_id(db, receivers, receiver_id, "receiver"))

    return router


def _delete_receiver(session: Session, receiver_id: int) -> tuple[bool, list[int]]:
    row = session.execute(sa.select(receivers.c.name).where(receivers.c.id == receiver_id)).first()
    if row is None:
        return False, []
    users = repository.receiver_in_use(session, row.name)
    if not users:
        session.execute(sa.delete(receivers).where(receivers.c.id == receiver_id))
    return True, users


def _receivers_write(app: AlertApp, db: Transactions) -> APIRouter:
    router = APIRouter(prefix="/receivers", tags=["receivers"])

    async def save(spec: ReceiverSpec, receiver_id: int | None = None) -> ReceiverOut:
        try:
            row = await db(lambda s: repository.save_receiver(s, spec, app.clock(), receiver_id))
        except IntegrityError:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"a receiver named {spec.name!r} already exists"
            ) from None
        if row is None:
            raise not_found("receiver", receiver_id)
        return repository.receiver_out(row)

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
        found, users = await db(lambda s: _delete_receiver(s, receiver_id))
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
        row = await db(lambda s: repository.insert_silence(s, spec, app.clock()))
        return _silence_out(row, app)

    @router.get("")
    async def list_silences(
        active: bool = Query(False, description="only those in force"),
    ) -> list[SilenceOut]:
        rows = await db(lambda s: repository.list_silences(s, app.clock() if active else None))
        return [_silence_out(r, app) for r in rows]

    @router.get("/{silence_id}", responses=NOT_FOUND)
    async def get_silence(silence_id: RowId) -> SilenceOut:
        return _silence_out(await _by_id(db, silences, silence_id, "silence"), app)

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


def _delete_window(session: Session, window_id: int) -> bool:
    table = maintenance_windows
    stmt = sa.delete(table).where(table.c.id == window_id).returning(table.c.id)
    return session.execute(stmt).first() is not None


def _windows(app: AlertApp, db: Transactions) -> APIRouter:
    router = APIRouter(prefix="/maintenance-windows", tags=["maintenance windows"])
    table = maintenance_windows

    async def save(spec: WindowSpec, window_id: int | None = None) -> WindowOut:
        row = await db(lambda s: repository.save_window(s, spec, app.clock(), window_id))
        if row is None:
            raise not_found("maintenance window", window_id)
        return _window_out(row, app)

    @router.post("", status_code=status.HTTP_201_CREATED)
    async def create_window(spec: WindowSpec) -> WindowOut:
        return await save(spec)

    @router.get("")
    async def list_windows() -> list[WindowOut]:
        rows = await db(lambda s: list(s.execute(sa.select(table).order_by(table.c.id))))
        return [_window_out(r, app) for r in rows]

    @router.get("/{window_id}", responses=NOT_FOUND)
    async def get_window(window_id: RowId) -> WindowOut:
        return _window_out(await _by_id(db, table, window_id, "maintenance window"), app)

    @router.put("/{window_id}", responses=NOT_FOUND)
    async def replace_window(window_id: RowId, spec: WindowSpec) -> WindowOut:
        return await save(spec, window_id)

    @router.delete("/{window_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
    async def delete_window(window_id: RowId) -> Response:
        if not await db(lambda s: _delete_window(s, window_id)):
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
