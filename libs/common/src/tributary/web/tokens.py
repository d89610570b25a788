"""Static API tokens: ``API_TOKENS``, kept only as SHA-256 digests in memory.

The setting lists entries ``name:token:scopes``, separated by commas or new
lines; ``scopes`` is a space-separated list (``alert:read alert:write``,
``alert:*``, ``*:read`` or ``*``). Several entries may be valid at once, which
is how a token is rotated: add the new one, move the clients, remove the old
one. The name is what the audit log shows; the token itself is never kept,
only its digest, and a presented token is compared with every digest in
constant time (:func:`hmac.compare_digest`), so the time taken says nothing
about which entry (if any) matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: shortest token accepted, in characters: long enough not to be guessed
MIN_TOKEN_CHARS = 16
#: RFC 6750 b64token (token68): what a bearer token may be made of
TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}")
#: a scope a token may be granted: ``service:access``, with ``*`` for either part, or ``*``
SCOPE = re.compile(r"\*|[a-z_*][a-z0-9_\-]*:[a-z*][a-z0-9_]*")
ENTRY_SEPARATORS = re.compile(r"[,\n]")


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def scope_granted(granted: Iterable[str], required: str) -> bool:
    """Whether any granted scope (``*`` as a wildcard part) covers ``required``."""
    service, _, access = required.partition(":")
    for scope in granted:
        if scope in ("*", required):
            return True
        have_service, _, have_access = scope.partition(":")
        if have_service in ("*", service) and have_access in ("*", access):
            return True
    return False


@dataclass(frozen=True)
class ApiToken:
    """One entry of API_TOKENS: its name, the digest of its token, its scopes."""

    name: str
    digest: bytes
    scopes: frozenset[str]

    def __repr__(self) -> str:  # never the digest either: it identifies the token
        return f"ApiToken(name={self.name!r}, scopes={sorted(self.scopes)!r})"


def _entry(number: int, text: str) -> ApiToken:
    where = f"entry {number}"
    name, sep, rest = text.partition(":")
    token, sep2, scopes_text = rest.partition(":")
    if not sep or not sep2:
        raise ValueError(f"{where}: expected name:token:scopes")
    if not NAME.fullmatch(name):
        raise ValueError(f"{where}: name must be letters, digits, '_', '.', '@' or '-'")
    if not TOKEN68.fullmatch(token) or len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"{where} ({name}): the token must be at least {MIN_TOKEN_CHARS} characters of "
            "A-Z a-z 0-9 - . _ ~ + / (e.g. `openssl rand -hex 32`)"
        )
    scopes = scopes_text.split()
    if not scopes:
        raise ValueError(f"{where} ({name}): no scopes (e.g. alert:read alert:write, or *)")
    for scope in scopes:
        if not SCOPE.fullmatch(scope):
            raise ValueError(f"{where} ({name}): {scope!r} is not a scope (service:read|write)")
    return ApiToken(name, digest(token), frozenset(scopes))


def parse_api_tokens(text: str) -> tuple[ApiToken, ...]:
    """The entries of an API_TOKENS value; ValueError (never showing a token) if malformed."""
    parts = [p.strip() for p in ENTRY_SEPARATORS.split(text)]
    entries = tuple(_entry(n, p) for n, p in enumerate((p for p in parts if p), start=1))
    digests = [e.digest for e in entries]
    if len(set(digests)) != len(digests):
        raise ValueError("the same token appears in two entries")
    return entries


class TokenTable:
    """The accepted tokens; :meth:`match` compares a presented one with every entry."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._tokens = tuple(tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def match(self, token: str) -> ApiToken | None:
        presented = digest(token)
        found: ApiToken | None = None
        for entry in self._tokens:  # every entry, always: no early exit on a match
            if hmac.compare_digest(presented, entry.digest):
                found = entry
        return found
