"""Stream entries as text that may hold bytes which are not UTF-8.

A client from :func:`tributary.redis_client.connect` decodes such bytes to
lone surrogates. These helpers find them (an entry that holds any is
malformed), write them back unchanged (``to_bytes``), and show them to people
as ``\\xff`` escapes (``printable``).
"""

from __future__ import annotations

from collections.abc import Mapping

from tributary.redis_client import ENCODING_ERRORS


def undecodable(fields: Mapping[str, str]) -> str | None:
    """Why ``fields`` (an entry's names and values) is not UTF-8 text, or None when it is.

    Cheap for the usual entry: ``isascii`` on each name and value, the
    encoder only for text that is not plain ASCII.
    """
    for name, value in fields.items():
        if name.isascii() and value.isascii():
            continue
        for what, text in (("name", name), ("value", value)):
            try:
                text.encode()
            except UnicodeEncodeError as exc:
                shown = printable(name)
                return (
                    f"field {shown!r}: {what} is not valid UTF-8 "
                    f"(byte 0x{ord(text[exc.start]) & 0xFF:02x} at character {exc.start})"
                )
    return None


def to_bytes(text: str) -> bytes:
    """The exact bytes ``text`` was read from (UTF-8, invalid bytes restored)."""
    return text.encode("utf-8", ENCODING_ERRORS)


def binary_fields(fields: Mapping[str, str]) -> dict[bytes, bytes]:
    """``fields`` as the bytes to XADD: names and values exactly as they were read."""
    return {to_bytes(name): to_bytes(value) for name, value in fields.items()}


def printable(text: str) -> str:
    """``text`` with every byte that is not UTF-8 shown as a ``\\xNN`` escape."""
    return to_bytes(text).decode("utf-8", "backslashreplace")
