"""The Outline apiUrl is a credential: encrypted at rest, parsed once, never shown in full.

``https://host:port/<secret path>``: whoever knows the path manages the
server. It is stored encrypted with Fernet (keys from
``SNAPSHOT_ENCRYPTION_KEY``; several keys allow rotation), identified by a
SHA-256 digest (duplicate detection without the plain text), and shown as
its public ``host:port`` only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

_HEX = re.compile(r"^[0-9A-F]{64}$")


class InvalidApiUrl(ValueError):
    """The apiUrl is not ``https://host[:port]/<secret path>``; the message never quotes it."""


class SecretUnavailable(RuntimeError):
    """A stored apiUrl cannot be decrypted with the configured keys."""


@dataclass(frozen=True)
class ApiUrl:
    """A parsed apiUrl. ``repr`` shows the public part only."""

    host: str
    port: int
    secret_path: str  # without leading or trailing slash

    @property
    def endpoint(self) -> str:
        """The public part, safe to show and log: ``host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, path: str) -> str:
        """Full URL of an API path such as ``/server`` (a secret: never log it)."""
        return f"https://{self.endpoint}/{self.secret_path}{path}"

    @property
    def plain(self) -> str:
        return f"https://{self.endpoint}/{self.secret_path}"

    def __repr__(self) -> str:
        return f"ApiUrl({self.endpoint}/***)"

    __str__ = __repr__


def parse_api_url(raw: str) -> ApiUrl:
    raw = raw.strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise InvalidApiUrl("apiUrl is not a valid URL") from None
    if parts.scheme != "https":
        raise InvalidApiUrl("apiUrl must start with https://")
    if not parts.hostname:
        raise InvalidApiUrl("apiUrl has no host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidApiUrl("apiUrl must not carry credentials, a query or a fragment")
    secret = parts.path.strip("/")
    if not secret:
        raise InvalidApiUrl("apiUrl has no secret path")
    return ApiUrl(parts.hostname, port or 443, secret)


def normalize_fingerprint(raw: str) -> str:
    """``certSha256`` as upper-case hex without separators (accepts ``aa:bb:..`` too)."""
    value = raw.strip().replace(":", "").replace(" ", "").upper()
    if not _HEX.match(value):
        raise ValueError("certSha256 must be 64 hexadecimal digits (a SHA-256 fingerprint)")
    return value


def url_digest(url: ApiUrl) -> str:
    """Identifies an apiUrl without storing it (its secret has ~128 random bits)."""
    return hashlib.sha256(url.plain.encode()).hexdigest()


class SecretBox:
    """Fernet encryption of apiUrls; the first key encrypts, every key decrypts."""

    def __init__(self, keys: SecretStr | str) -> None:
        text = keys.get_secret_value() if isinstance(keys, SecretStr) else keys
        fernets = [Fernet(k.strip()) for k in text.split(",") if k.strip()]
        if not fernets:
            raise ValueError("no encryption key")
        self._fernet = MultiFernet(fernets)

    def encrypt(self, url: ApiUrl) -> str:
        return self._fernet.encrypt(url.plain.encode()).decode()

    def decrypt(self, token: str) -> ApiUrl:
        try:
            return parse_api_url(self._fernet.decrypt(token.encode()).decode())
        except InvalidToken:
            raise SecretUnavailable(
                "stored apiUrl cannot be decrypted with SNAPSHOT_ENCRYPTION_KEY"
            ) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt ``token`` with the first key."""
        return self._fernet.rotate(token.encode()).decode()


def generate_key() -> str:
    return Fernet.generate_key().decode()
