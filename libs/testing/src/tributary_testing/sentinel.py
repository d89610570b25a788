"""A Redis master, its replica and a Sentinel watching them, all of a test's own
(``redis-server`` on free ports, in a temporary folder), for failover tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from simulators.ports import free_port
from tributary_testing.waiting import wait_until

MASTER_NAME = "mymaster"


def _start(argv: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                if client.ping():
                    return proc
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(f"{argv[0]} on {port} did not start: {tail}") from None
                time.sleep(0.05)
    finally:
        client.close()


class SentinelGroup:
    """``with SentinelGroup() as group: group.sentinel_port, group.failover()``."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (Debian package redis-server)")
        self.folder = Path(tempfile.mkdtemp(prefix="tributary-sentinel-"))
        self.ports = {"a": free_port(), "b": free_port()}
        self.sentinel_port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        for name, port in self.ports.items():
            log = self.folder / f"{name}.log"
            argv = [binary, "--port", str(port), *common, "--logfile", str(log),
                    "--dir", str(self.folder)]  # fmt: skip
            if name == "b":
                argv += ["--replicaof", "127.0.0.1", str(self.ports["a"])]
            self.procs.append(_start(argv, port, log))
        config = self.folder / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.folder}\n"
            f"logfile {self.folder / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.ports['a']} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
        )
        self.procs.append(_start([binary, str(config), "--sentinel"], self.sentinel_port,
                                 self.folder / "sentinel.log"))  # fmt: skip
        self.sentinel = redis.Redis(port=self.sentinel_port, decode_responses=True)

    def master_port(self) -> int:
        _, port = self.sentinel.execute_command(  # type: ignore[no-untyped-call]
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME
        )
        return int(port)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True)

    def failover(self) -> int:
        """Promote the replica (SENTINEL FAILOVER, once the sentinel knows it and it is in
        sync) and wait until the old master is its replica; the new master's port.

        Until the old master is demoted it still accepts writes, which the resync then
        throws away: the window ``min-replicas-to-write`` closes (docs/operations.md)."""
        old = self.master_port()

        def replica_ready() -> bool:
            replicas = self.sentinel.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "REPLICAS", MASTER_NAME
            )
            return any("s_down" not in str(r) for r in replicas) and bool(replicas)

        wait_until(replica_ready, what="the sentinel knows the replica")
        other = self.ports["b"] if old == self.ports["a"] else self.ports["a"]
        self._wait_replication(other, "master_link_status", "up", "the replica in sync")
        self.sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)  # type: ignore[no-untyped-call]
        wait_until(lambda: self.master_port() != old, what="the sentinel names a new master")
        new = self.master_port()
        self._wait_replication(new, "role", "master", "the new master accepts writes")
        self._wait_replication(old, "role", "slave", "the old master demoted")
        return new

    def _wait_replication(self, port: int, field: str, value: str, what: str) -> None:
        """Until ``INFO replication`` of the server on ``port`` says ``field:value``."""
        client = self.client(port)
        try:
            wait_until(lambda: client.info("replication").get(field) == value, what=what)
        finally:
            client.close()

    def close(self) -> None:
        self.sentinel.close()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> SentinelGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
