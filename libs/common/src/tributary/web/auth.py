"""Who may call which route: scopes per route, checked before the body is read.

Every route needs a scope ``<service>:read`` or ``<service>:write``: GET (and
HEAD) routes read, every other method writes, unless the route declares
otherwise with ``dependencies=[requires("metrics")]`` (or ``public()``, which
only the probes /healthz and /readyz use; a test walks every service's OpenAPI
for others). :class:`Guard`, a pure ASGI middleware, finds the route a request
is for and, from its headers alone (nothing of the body is read yet):

- 401 with ``WWW-Authenticate: Bearer`` (``error="invalid_token"`` when a token
  was sent but is not valid) for missing or invalid credentials,
- 403 (``error="insufficient_scope"``) for a valid identity without the scope,
- 415 for a body that is not JSON on a route that takes one (no form or
  text/plain "simple" requests a web page could send cross-origin),

then lets the request through, and logs every write (any method but GET, HEAD,
OPTIONS) as one JSON audit line: who, method, route template, status, outcome
(never the credential).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tributary.web.errors import error_response
from tributary.web.identity import Authenticator, Identity, Unauthenticated

audit_log = logging.getLogger("tributary.audit")

#: where the Guard leaves the caller's Identity in the ASGI scope
IDENTITY = "tributary.identity"
#: methods that change nothing: not audited, and their routes read by default
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: the OpenAPI security scheme of the bearer tokens (static tokens and JWTs alike)
BEARER_SCHEME = "bearerAuth"
OIDC_SCHEME = "oidc"

DocsMode = Literal["off", "protected", "public"]


class Requires:
    """Marks a route as needing ``<service>:<access>`` (or an absolute ``service:access``).

    The Guard enforces it before the body is read; as a dependency it checks again,
    so a route mounted without the Guard is not left open.
    """

    def __init__(self, access: str) -> None:
        self.access = access

    async def __call__(self, request: Request) -> None:
        identity = request.scope.get(IDENTITY)
        if not isinstance(identity, Identity):
            raise HTTPException(401, "a bearer token is required")


class Public:
    """Marks a route that needs no credentials (the probes only)."""

    async def __call__(self) -> None:
        return None


def requires(access: str) -> Any:
    """``dependencies=[requires("read")]``: the route needs this scope, whatever its method."""
    return Depends(Requires(access))


def public() -> Any:
    return Depends(Public())


@dataclass(frozen=True)
class Rule:
    """What a request needs: nothing (public), an identity, or an identity with ``scope``."""

    public: bool = False
    scope: str | None = None


PUBLIC = Rule(public=True)
#: a request for no known route: any identity may learn that it is a 404
AUTHENTICATED = Rule()


def _markers(dependant: Dependant) -> Iterator[object]:
    for dep in dependant.dependencies:
        yield dep.call
        yield from _markers(dep)


@dataclass(frozen=True)
class Policy:
    """The rule of every route of one service's app."""

    service: str
    docs: DocsMode = "off"
    docs_paths: frozenset[str] = frozenset()

    def scope(self, access: str) -> str:
        return access if ":" in access else f"{self.service}:{access}"

    def default(self, methods: Iterable[str]) -> Rule:
        return Rule(scope=self.scope("read" if set(methods) <= SAFE_METHODS else "write"))

    def rule(self, route: RouteContext, method: str) -> Rule:
        if isinstance(route.original_route, APIRoute):
            # the effective dependant: with the dependencies of the routers it is included by
            for marker in _markers(route.dependant):
                if isinstance(marker, Public):
                    return PUBLIC
                if isinstance(marker, Requires):
                    return Rule(scope=self.scope(marker.access))
            return self.default(route.methods or ())
        if route.path in self.docs_paths and self.docs == "public":
            return PUBLIC
        return self.default([method])


def match_route(routes: Sequence[RouteContext], scope: Scope) -> RouteContext | None:
    """The route FastAPI's router would pick (or the path's route for a 405)."""
    partial: RouteContext | None = None
    for route in routes:
        found, _ = route.matches(scope)
        if found == Match.FULL:
            return route
        if found == Match.PARTIAL and partial is None:
            partial = route
    return partial


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope.get("headers", ()) if key == name]


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    return bool(_header(scope, b"transfer-encoding")) or any(
        v.strip() not in (b"", b"0") for v in length
    )


def is_json(content_type: bytes) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters aside."""
    media = content_type.split(b";", 1)[0].strip().lower()
    kind, _, subtype = media.partition(b"/")
    return kind == b"application" and (subtype == b"json" or subtype.endswith(b"+json"))


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    return "refused" if status < 500 else "failed"


class Guard:
    """Authentication, authorisation, the JSON-only rule and the audit log, as ASGI."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[BaseRoute],
        policy: Policy,
        authenticator: Authenticator,
    ) -> None:
        self.app = app
        self._routes = routes
        self._contexts: list[RouteContext] | None = None
        self.policy = policy
        self.authenticator = authenticator
        self.realm = f'Bearer realm="{policy.service}"'

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        if self._contexts is None:  # every route is in place by the first request
            self._contexts = list(iter_route_contexts(self._routes))
        route = match_route(self._contexts, scope)
        rule = AUTHENTICATED if route is None else self.policy.rule(route, method)
        if rule.public:
            await self.app(scope, receive, send)
            return
        template = (route.path_format if route is not None else None) or "(no route)"
        audited = method not in SAFE_METHODS
        identity: Identity | None = None
        status = 500
        try:
            identity = await self.authenticator.identify(_header(scope, b"authorization"))
            status = await self._dispatch(scope, receive, send, route, rule, identity)
        except Unauthenticated as exc:
            status = 401
            await self._unauthorized(exc)(scope, receive, send)
        finally:
            if audited:
                self._audit(identity, method, template, status)

    async def _dispatch(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: RouteContext | None,
        rule: Rule,
        identity: Identity,
    ) -> int:
        if rule.scope is not None and not identity.allows(rule.scope):
            challenge = f'{self.realm}, error="insufficient_scope", scope="{rule.scope}"'
            message = f"the token lacks the scope {rule.scope}"
            await error_response(403, message, headers={"WWW-Authenticate": challenge})(
                scope, receive, send
            )
            return 403
        takes_body = route is not None and getattr(route, "body_field", None) is not None
        if takes_body and _has_body(scope):
            content_type = b"".join(_header(scope, b"content-type"))
            if not is_json(content_type):
                message = "the request body must be JSON (Content-Type: application/json)"
                await error_response(415, message)(scope, receive, send)
                return 415
        scope[IDENTITY] = identity
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, recording_send)
        return status

    def _unauthorized(self, exc: Unauthenticated) -> ASGIApp:
        challenge = self.realm
        if exc.error is not None:
            challenge += f', error="{exc.error}", error_description="{exc.description}"'
        return error_response(401, exc.description, headers={"WWW-Authenticate": challenge})

    def _audit(self, identity: Identity | None, method: str, route: str, status: int) -> None:
        who = identity.name if identity is not None else None
        audit_log.info(
            "%s %s by %s: %d",
            method,
            route,
            who or "(unauthenticated)",
            status,
            extra={
                "audit": True,
                "identity": who,
                "auth": identity.method if identity is not None else None,
                "http_method": method,
                "route": route,
                "status": status,
                "outcome": _outcome(status),
            },
        )
