"""Ports for the servers the simulators (and tests) start on the loopback address."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on right now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
