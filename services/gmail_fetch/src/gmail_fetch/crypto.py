"""Refresh tokens are stored encrypted (Fernet: AES-128-CBC + HMAC-SHA256).

The keys come from ``GMAIL_FETCH_TOKEN_ENCRYPTION_KEYS``; the first one
encrypts, every one decrypts, so a key is rotated by putting the new key
first and re-adding accounts (or re-encrypting) before dropping the old one.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from gmail_fetch.errors import PermanentJobError


class TokenCipher:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise PermanentJobError(
                "the stored refresh token cannot be decrypted with the configured keys; "
                "check GMAIL_FETCH_TOKEN_ENCRYPTION_KEYS or add the account again"
            ) from None
