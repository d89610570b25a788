"""Who is calling: an :class:`Identity` from the ``Authorization`` header.

:class:`Authenticator` reads ``Authorization: Bearer <token>`` (the scheme is
case-insensitive, RFC 7235; one or more spaces before the token; the token is
an RFC 6750 b64token, compared exactly) and resolves the token against the
static API tokens, then, if it is a JWT and OIDC is configured, against the
issuer. With neither configured, authentication is off and every caller is
:data:`ANONYMOUS` with every scope: the service only allows that on a loopback
address, or when HTTP_ALLOW_INSECURE says so (``tributary.config``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tributary.web.tokens import TOKEN68, ApiToken, TokenTable, scope_granted

if TYPE_CHECKING:
    from tributary.web.oidc import JwtVerifier

Method = Literal["token", "jwt", "none"]


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: a name for the audit log and the scopes it holds."""

    name: str
    scopes: frozenset[str]
    method: Method

    def allows(self, scope: str) -> bool:
        return scope_granted(self.scopes, scope)


#: the caller when authentication is off
ANONYMOUS = Identity("anonymous", frozenset({"*"}), "none")


class Unauthenticated(Exception):
    """No usable credentials: a 401. ``error`` is the RFC 6750 code (None: none sent)."""

    def __init__(self, description: str, error: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.error = error


class InvalidToken(Unauthenticated):
    """Credentials were sent but are not valid (``error="invalid_token"``)."""

    def __init__(self, description: str = "the token is not valid") -> None:
        super().__init__(description, "invalid_token")


def bearer_token(values: Sequence[bytes]) -> str:
    """The token of the request's ``Authorization`` header values (raw ASGI bytes)."""
    if not values:
        raise Unauthenticated("a bearer token is required")
    if len(values) > 1:
        raise InvalidToken("more than one Authorization header")
    # a field value's surrounding white space is not part of it (RFC 9110 5.5)
    text = values[0].decode("latin-1").strip(" \t")
    scheme, _, rest = text.partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated("a bearer token is required")
    token = rest.lstrip(" ")  # auth-scheme 1*SP token68 (RFC 7235 2.1)
    if not TOKEN68.fullmatch(token):
        raise InvalidToken("the bearer token is malformed")
    return token


class Authenticator:
    """Resolves bearer tokens: static API tokens first, then OIDC JWTs."""

    def __init__(self, tokens: Sequence[ApiToken] = (), jwt: JwtVerifier | None = None) -> None:
        self._tokens = TokenTable(tokens)
        self._jwt = jwt

    @property
    def enabled(self) -> bool:
        return bool(self._tokens) or self._jwt is not None

    @property
    def jwt(self) -> JwtVerifier | None:
        return self._jwt

    async def identify(self, authorization: Sequence[bytes]) -> Identity:
        """The caller, or :class:`Unauthenticated` (:class:`InvalidToken`) to answer 401."""
        if not self.enabled:
            return ANONYMOUS
        token = bearer_token(authorization)
        entry = self._tokens.match(token)
        if entry is not None:
            return Identity(entry.name, entry.scopes, "token")
        if self._jwt is not None and token.count(".") == 2:
            return await self._jwt.verify(token)
        raise InvalidToken()
