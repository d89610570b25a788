"""Servers of a test's own that speak TLS, and the certificates they present.

Redis, PostgreSQL and MariaDB are started from the machine's own binaries (the Debian
packages the local services come from) on free ports, in folders the test owns, with
certificates from a throwaway CA (:mod:`trustme`): the servers' name is ``localhost``
only (so a client that checks host names refuses ``127.0.0.1``), and a client
certificate for servers that ask for one. :meth:`close` stops each and removes its folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trustme

from simulators.ports import free_port

#: the one name on the servers' certificate
HOST = "localhost"


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA, the server's certificate and key, a client's, and a CA no
    server here uses (a client trusting only it must refuse to connect)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path

    @classmethod
    def make(cls, folder: Path) -> Certificates:
        folder.mkdir(parents=True, exist_ok=True)
        ca, other = trustme.CA(), trustme.CA()
        server = ca.issue_cert(HOST)
        client = ca.issue_cert("tributary-client")
        names = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key", "other.pem")
        paths = cls(*(folder / name for name in names))
        ca.cert_pem.write_to_path(str(paths.ca))
        other.cert_pem.write_to_path(str(paths.other_ca))
        server.cert_chain_pems[0].write_to_path(str(paths.server_cert))
        server.private_key_pem.write_to_path(str(paths.server_key))
        client.cert_chain_pems[0].write_to_path(str(paths.client_cert))
        client.private_key_pem.write_to_path(str(paths.client_key))
        for path in (paths.server_key, paths.client_key):
            path.chmod(0o600)
        return paths


def _binary(name: str, *patterns: str) -> str:
    found = shutil.which(name) or next(
        (p for pattern in patterns for p in sorted(glob.glob(pattern))), None
    )
    if found is None:
        raise RuntimeError(f"{name} is not installed (Debian's server package has it)")
    return found


def _wait(what: str, ready: subprocess.Popen[bytes], check: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + 30
    while not check():
        if ready.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not start: {tail}")
        time.sleep(0.1)


def _owned_folder(user: str | None) -> Path:
    """A temporary folder the server's own user may write (root runs the tests here,
    and PostgreSQL and MariaDB refuse to run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="tributary-tls-"))
    if user is not None:
        shutil.chown(folder, user, user)
    return folder


def _server_user(name: str) -> str | None:
    return name if os.geteuid() == 0 else None


def _port_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


class _Server:
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


class TlsRedis(_Server):
    """``redis-server`` with TLS only (no plain port); ``clients``: require a client
    certificate (``tls-auth-clients yes``) or not (``no``)."""

    def __init__(self, certs: Certificates, *, clients: bool = False) -> None:
        self.folder, self.port = _owned_folder(None), free_port()
        log = self.folder / "redis.log"
        self.proc = subprocess.Popen(  # noqa: S603 - the machine's redis-server
            [_binary("redis-server"), "--port", "0", "--tls-port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--logfile", str(log),
             "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
             "--tls-ca-cert-file", str(certs.ca),
             "--tls-auth-clients", "yes" if clients else "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait("redis-server (TLS)", self.proc, lambda: _port_answers(self.port), log)

    def url(self, host: str = HOST) -> str:
        return f"rediss://{host}:{self.port}/0"


class TlsPostgres(_Server):
    """A PostgreSQL cluster of its own with ``ssl = on``, trust authentication over TCP
    for ``hostssl`` only: a connection without TLS is refused."""

    def __init__(self, certs: Certificates) -> None:
        user = _server_user("postgres")
        self.folder, self.port = _owned_folder(user), free_port()
        data, log = self.folder / "data", self.folder / "postgres.log"
        prefix = ["runuser", "-u", user, "--"] if user else []
        bindir = Path(_binary("initdb", "/usr/lib/postgresql/*/bin/initdb")).parent
        subprocess.run(  # noqa: S603 - the machine's initdb
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
             "--auth", "trust", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        for source, name in ((certs.server_cert, "server.crt"), (certs.server_key, "server.key")):
            shutil.copy(source, data / name)
            (data / name).chmod(0o600)
            if user:
                shutil.chown(data / name, user, user)
        (data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
            "hostnossl all all 127.0.0.1/32 reject\n"
        )
        output = log.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - the machine's postgres
            [*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.folder}",
             "-c", "ssl=on", "-c", "fsync=off"],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        output.close()  # the server holds its own copy
        _wait("postgres (TLS)", self.proc, lambda: _port_answers(self.port), log)

    def url(self, host: str = HOST) -> str:
        return f"postgresql+psycopg://postgres@{host}:{self.port}/postgres"


class TlsMariaDB(_Server):
    """A MariaDB server of its own with TLS; every account may log in (``skip-grant-tables``)."""

    def __init__(self, certs: Certificates) -> None:
        user = _server_user("mysql")
        self.folder, self.port = _owned_folder(user), free_port()
        data, log = self.folder / "data", self.folder / "mariadb.log"
        subprocess.run(  # noqa: S603 - the machine's mariadb-install-db
            [_binary("mariadb-install-db"), "--no-defaults", f"--datadir={data}",
             *([f"--user={user}"] if user else []), "--skip-test-db",
             "--auth-root-authentication-method=normal"],
            check=True, capture_output=True,
        )  # fmt: skip
        copies = {}
        for source in (certs.ca, certs.server_cert, certs.server_key):
            copies[source] = self.folder / source.name
            shutil.copy(source, copies[source])
            if user:
                shutil.chown(copies[source], user, user)
        self.proc = subprocess.Popen(  # noqa: S603 - the machine's mariadbd
            [_binary("mariadbd", "/usr/sbin/mariadbd"), "--no-defaults", f"--datadir={data}",
             f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--socket={self.folder / 'mariadb.sock'}", f"--pid-file={self.folder / 'pid'}",
             *([f"--user={user}"] if user else []), "--skip-grant-tables",
             f"--ssl-ca={copies[certs.ca]}", f"--ssl-cert={copies[certs.server_cert]}",
             f"--ssl-key={copies[certs.server_key]}", f"--log-error={log}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait("mariadbd (TLS)", self.proc, lambda: _port_answers(self.port), log)

    def url(self, host: str = HOST) -> str:
        return f"mysql+pymysql://root@{host}:{self.port}/mysql"
