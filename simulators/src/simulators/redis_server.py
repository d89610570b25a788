"""A Redis server of a test's own, which the test may restart: ``redis-server`` on a
free port, AOF with fsync on every write, in a folder the test owns."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from simulators.ports import free_port


class RedisServer:
    """``acl_file``: users made with ACL SETUSER survive a restart once ``ACL SAVE``d."""

    def __init__(self, folder: Path, *, acl_file: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (Debian package redis-server)")
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.acl_file = folder / "users.acl" if acl_file else None
        if self.acl_file is not None:
            self.acl_file.touch()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - the machine's redis-server
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--logfile", str(self.folder / "redis.log"),
             *(["--aclfile", str(self.acl_file)] if self.acl_file else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start: {self.log()}") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        """SHUTDOWN (the AOF is already on disk), as ``systemctl stop redis`` does."""
        if self.proc is None or self.proc.poll() is not None:
            return
        client = redis.Redis.from_url(self.url)
        try:
            client.shutdown()
        except redis.ConnectionError:
            pass  # the reply never comes: the server is gone
        finally:
            client.close()
        self.proc.wait(timeout=20)

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
