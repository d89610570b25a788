"""Resolvers for the egress transport's ``resolve`` hook (DNS is a third party here)."""

from __future__ import annotations


class Rebinder:
    """DNS rebinding: a public address at the first answer (the URL is saved), loopback after."""

    def __init__(self) -> None:
        self.answers = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.answers += 1
        return ["93.184.216.34"] if self.answers == 1 else ["127.0.0.1"]
