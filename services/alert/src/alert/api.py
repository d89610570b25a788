"""HTTP API: rules, events and readings; receivers, silences and maintenance windows are
in api_setup.py. Invalid input gets a 4xx naming what is wrong, never a 500."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy.orm import Session

from alert import api_setup, repository, rule_admin
from alert.api_setup import NOT_FOUND, UNPROCESSABLE, not_found
from alert.app import AlertApp
from alert.rules import RuleSpec, Source
from alert.schemas import Accepted, EventDetail, EventOut, ReadingIn, RuleOut
from tributary import catalog
from tributary.events import make_event
from tributary.transactions import Transactions
from tributary.web.params import Count, RowId

T = TypeVar("T")
#: readings accepted in one POST /readings
MAX_READINGS_PER_REQUEST = 1000


def rule_out(row: Any) -> RuleOut:
    return RuleOut(
        id=row.id,
        revision=row.revision,
        created_at=row.created_at,
        updated_at=row.updated_at,
        spec=row.spec,
    )


def _check_receivers(session: Session, spec: RuleSpec) -> None:
    names = list(spec.receivers)
    if spec.escalation is not None:
        names.append(spec.escalation.receiver)
    missing = repository.missing_receivers(session, names)
    if missing:
        raise HTTPException(UNPROCESSABLE, f"unknown receiver(s): {', '.join(missing)}")


def _rules_read(db: Transactions) -> APIRouter:
    router = APIRouter(prefix="/rules", tags=["rules"])

    @router.get("")
    async def list_rules(
        source: Source | None = None,
        enabled: bool | None = None,
        limit: int = Query(100, ge=1, le=1000),
        offset: Count = 0,
    ) -> list[RuleOut]:
        rows = await db(lambda s: repository.list_rules(s, source, enabled, limit, offset))
        return [rule_out(r) for r in rows]

    @router.get("/{rule_id}", responses=NOT_FOUND)
    async def get_rule(rule_id: RowId) -> RuleOut:
        row = await db(lambda s: repository.get_rule(s, rule_id))
        if row is None:
            raise not_found("rule", rule_id)
        return rule_out(row)

    return router


def _rules_write(app: AlertApp, db: Transactions) -> APIRouter:
    router = APIRouter(prefix="/rules", tags=["rules"])
    emitter = app.evaluator.emitter

    @router.post("", status_code=status.HTTP_201_CREATED)
    async def create_rule(spec: RuleSpec) -> RuleOut:
        def create(session: Session) -> Any:
            _check_receivers(session, spec)
            (rule_id,) = repository.insert_rules(session, [spec], app.clock())
            return repository.get_rule(session, rule_id)

        return rule_out(await db(create))

    @router.put("/{rule_id}", responses=NOT_FOUND)
    async def replace_rule(rule_id: RowId, spec: RuleSpec) -> RuleOut:
        def replace(session: Session) -> Any:
            _check_receivers(session, spec)
            if not rule_admin.update(session, rule_id, spec, emitter, app.clock()):
                return None
            return repository.get_rule(session, rule_id)

        row = await db(replace)
        if row is None:
            raise not_found("rule", rule_id)
        app.relay.wake()
        app.notifier.wake()
        return rule_out(row)

    @router.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
    async def delete_rule(rule_id: RowId) -> Response:
        deleted = await db(lambda s: rule_admin.delete(s, rule_id, emitter, app.clock()))
        if not deleted:
            raise not_found("rule", rule_id)
        app.relay.wake()
        app.notifier.wake()
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router


def _event_out(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in EventOut.model_fields}


def _events(db: Transactions) -> APIRouter:
    router = APIRouter(prefix="/events", tags=["events"])

    @router.get("")
    async def list_events(
        open: bool | None = Query(None, description="true: open alerts; false: resolved ones"),
        subject: str | None = Query(None, max_length=300),
        rule_id: RowId | None = None,
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[EventOut]:
        rows = await db(
            lambda s: repository.list_events(
                s, open_only=open, subject=subject, rule_id=rule_id, limit=limit
            )
        )
        return [EventOut.model_validate(_event_out(r)) for r in rows]

    @router.get("/{event_id}", responses=NOT_FOUND)
    async def get_event(event_id: str) -> EventDetail:
        found = await db(lambda s: repository.event_detail(s, event_id))
        if found is None:
            raise not_found("event", event_id)
        event, sent, tries = found
        detail = EventDetail.model_validate(_event_out(event))
        by_notification: dict[int, list[dict[str, Any]]] = {}
        for t in tries:
            by_notification.setdefault(t.notification_id, []).append(dict(t._mapping))
        detail.notifications = [
            api_setup.notification_out(n, by_notification.get(n.id, [])) for n in sent
        ]
        return detail

    return router


def _readings(app: AlertApp) -> APIRouter:
    router = APIRouter(tags=["readings"])

    @router.post("/readings", status_code=status.HTTP_202_ACCEPTED)
    async def post_readings(body: ReadingIn | list[ReadingIn]) -> Accepted:
        """Publish one reading or a list (up to 1000) to device.readings."""
        readings = body if isinstance(body, list) else [body]
        if not readings or len(readings) > MAX_READINGS_PER_REQUEST:
            raise HTTPException(
                UNPROCESSABLE,
                f"send 1..{MAX_READINGS_PER_REQUEST} readings per request",
            )
        now = app.clock()
        events = [
            make_event("device.reading.recorded", r.payload(now), app.group, app.registry)
            for r in readings
        ]
        await app.producer.publish_many([(catalog.DEVICE_READINGS, e) for e in events])
        return Accepted(event_ids=[e.id for e in events])

    return router


def router(app: AlertApp) -> APIRouter:
    db = Transactions(app.sessions)
    root = APIRouter()
    root.include_router(_rules_read(db))
    root.include_router(_rules_write(app, db))
    root.include_router(_events(db))
    root.include_router(_readings(app))
    root.include_router(api_setup.router(app, db))
    return root
