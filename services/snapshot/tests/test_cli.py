"""The command line as a real process: servers add / list / remove, collect, check-config."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest
from cryptography.fernet import Fernet

from simulators.outline import OutlineSimulator
from snapshot.credentials import generate_key
from tributary.keys import Keys


@pytest.fixture
def env(redis_url: str, postgres_url: str, pg_schema: str, keys: Keys) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SNAPSHOT_", "OTEL_", "DB_SCHEMA", "EGRESS_"))
    }
    base.update(
        REDIS_URL=redis_url, DATABASE_URL=postgres_url, STREAM_PREFIX=keys.prefix,
        DB_SCHEMA=pg_schema, SNAPSHOT_ENCRYPTION_KEY=generate_key(), LOG_LEVEL="WARNING",
        EGRESS_ALLOW_NETWORKS="127.0.0.0/8",  # the simulated Outline servers
    )  # fmt: skip
    return base


async def _run(env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "snapshot", *args, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def test_servers_add_list_collect_remove(env: dict[str, str]) -> None:
    async with OutlineSimulator(1, 2) as sim:
        server = sim.servers[0]
        server.add_traffic("0", 1234)
        registration = json.dumps(
            {"apiUrl": server.api_url, "certSha256": server.certificate.sha256}
        )
        code, out, err = await _run(env, "servers", "add", "--name", "lab", "--from-json", "-",
                                    stdin=registration)  # fmt: skip
        assert code == 0, err
        added = _lines(out)[0]
        assert added["name"] == "lab"
        assert server.secret not in out + err
        code, out, err = await _run(env, "servers", "list")
        assert [s["id"] for s in _lines(out)] == [added["id"]]
        code, out, err = await _run(env, "collect", "--server", "lab")
        assert code == 0, err
        result = _lines(out)[0]
        assert (result["status"], result["snapshots"]) == ("collected", 2)
        assert server.secret not in out + err
        code, out, err = await _run(env, "servers", "remove", "lab")
        assert code == 0
        assert _lines(out)[0]["active"] is False


async def test_bad_configuration_names_the_variable(env: dict[str, str]) -> None:
    code, _, err = await _run({**env, "SNAPSHOT_ENCRYPTION_KEY": "short"}, "check-config")
    assert code == 2
    assert "SNAPSHOT_ENCRYPTION_KEY" in err
    assert "short" not in err


async def test_generate_key_needs_no_configuration(env: dict[str, str]) -> None:
    bare = {k: v for k, v in env.items() if k not in ("SNAPSHOT_ENCRYPTION_KEY", "DATABASE_URL")}
    code, out, err = await _run(bare, "generate-key")
    assert (code, err) == (0, "")
    Fernet(out.strip().encode())  # a valid key
    code, _, err = await _run(bare, "servers", "list")
    assert code == 2
    assert "ENCRYPTION_KEY" in err or "DATABASE_URL" in err


def _said(err: str) -> list[str]:
    """stderr without the JSON log lines."""
    return [line for line in err.splitlines() if line.strip() and not line.startswith("{")]


async def _register(env: dict[str, str], sim: OutlineSimulator) -> None:
    for server in sim.servers:
        registration = json.dumps(
            {"apiUrl": server.api_url, "certSha256": server.certificate.sha256}
        )
        code, _, err = await _run(env, "servers", "add", "--name", server.name,
                                  "--from-json", "-", stdin=registration)  # fmt: skip
        assert code == 0, err


async def test_once_and_collect_exit_1_naming_what_failed(env: dict[str, str]) -> None:
    """Issue 20: ``once`` exited 0, silently, when every server failed."""
    async with OutlineSimulator(2, 1) as sim:
        await _register(env, sim)
        code, _, err = await _run(env, "once")
        assert (code, err) == (0, "")
        sim.servers[1].down = True
        code, _, err = await _run(env, "once")
        assert code == 1
        lines = _said(err)
        assert len(lines) == 1, err  # besides the log lines
        assert lines[0].startswith("snapshot: 1 of 2 servers not collected: Outline Server 1 (http")
        assert sim.servers[1].secret not in err
        code, out, err = await _run(env, "collect", "--server", "Outline Server 1",
                                    "--server", "nowhere")  # fmt: skip
        assert code == 1
        assert _lines(out)[0]["status"] == "failed"
        assert _said(err)[-1] == (
            "snapshot: 2 of 2 servers not collected: Outline Server 1 (failed, http: "
            "GET /access-keys: HTTP 500); nowhere (no such server)"
        )
