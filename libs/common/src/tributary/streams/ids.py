"""Stream entry ids (``<ms>-<seq>``) compared and stepped as numbers."""

from __future__ import annotations


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def format_id(parts: tuple[int, int]) -> str:
    return f"{parts[0]}-{parts[1]}"


def next_id(entry_id: str) -> str:
    """The smallest id greater than ``entry_id``."""
    ms, seq = parse_id(entry_id)
    if seq == 2**64 - 1:
        return format_id((ms + 1, 0))
    return format_id((ms, seq + 1))


def min_id(a: str, b: str) -> str:
    return a if parse_id(a) <= parse_id(b) else b
