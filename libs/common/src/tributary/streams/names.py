"""Stream key names. Every Redis key the library writes is built here, behind one prefix."""

from __future__ import annotations

from dataclasses import dataclass

DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds Redis keys under a configurable prefix (``STREAM_PREFIX``)."""

    prefix: str = ""

    def stream(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def dlq(self, name: str) -> str:
        return f"{self.prefix}{name}{DLQ_SUFFIX}"

    def retries(self, name: str, group: str) -> str:
        """Sorted set of entry ids waiting for redelivery, scored by due time (ms)."""
        return f"{self.prefix}{name}:retry:{group}"

    def lease(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    def key(self, name: str) -> str:
        """Any other key of a service (counters, indexes...)."""
        return f"{self.prefix}{name}"

    def logical(self, key: str) -> str:
        """The stream name of a key built by :meth:`stream`."""
        return key[len(self.prefix) :] if self.prefix and key.startswith(self.prefix) else key
