"""Stream entries as text that may hold bytes which are not UTF-8.

A client from :func:`tributary.redis_client.connect` decodes such bytes to
lone surrogates. These helpers find them (an entry that holds any is
malformed), write them back unchanged (``to_bytes``), and show them to people
as ``\\xff`` escapes (``printable``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tributary.redis_client import ENCODING_ERRORS


def entry_problem(fields: Mapping[str, str], max_chars: int | None = None) -> str | None:
    """Why ``fields`` (an entry's names and values) cannot be an event's text: longer than
    ``max_chars`` characters in all, or not UTF-8; None when it can.

    Cheap for the usual entry: the names and the values joined, their lengths and one
    ``isascii`` each; the encoder runs only on text that is not plain ASCII.
    """
    values, names = "".join(fields.values()), "".join(fields)
    if max_chars is not None and len(values) + len(names) > max_chars:
        return f"entry is {len(values) + len(names)} characters, over the limit of {max_chars}"
    if values.isascii() and names.isascii():
        return None
    return undecodable(fields)


def undecodable(fields: Mapping[str, str]) -> str | None:
    """Why ``fields`` (an entry's names and values) is not UTF-8 text, or None when it is."""
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


def printable_json(value: Any) -> Any:
    """``value`` (an entry's fields, or anything JSON made of them) with :func:`printable`
    applied to every string in it, keys included: ready for ``json.dumps``."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): printable_json(v) for k, v in value.items()}
    return value
