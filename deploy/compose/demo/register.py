# ruff: noqa: S310, S603  (demo script: fixed http URLs from the compose file, own CLIs)
"""Demo profile, run once: registers the fake Outline servers with snapshot, the fake
Gmail users with gmail_fetch (and starts a job for each), the webhook receiver and the
scenario's alert rules (simulators.scenario, the same as ``make demo``).

Runs in the simulators image, which has every service's command line installed;
settings come from the same environment the services get (docker-compose.yml).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx

from simulators.scenario import Scenario, set_up

DEMO = Path("/demo")
ALERT_URL = os.environ.get("ALERT_URL", "http://alert:8000")
GMAIL_FETCH_URL = os.environ.get("GMAIL_FETCH_URL", "http://gmail-fetch:8000")
TRAFFIC_SYNC_URL = os.environ.get("TRAFFIC_SYNC_URL", "http://traffic-sync:8000")
WEBHOOK_URL = os.environ.get("WEBHOOK_URL", "http://webhook-sink:8090")


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr, flush=True)
    return done.stdout


def api_token() -> str:
    """The token of the first API_TOKENS entry (name:token:scopes): every API wants one."""
    return os.environ["API_TOKENS"].split(",")[0].strip().split(":")[1]


def send(url: str, body: object, method: str = "POST") -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_token()}"}
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(url, response.status, flush=True)
    except urllib.error.HTTPError as exc:  # 409/422 when registered before: fine
        print(url, exc.code, exc.read().decode(errors="replace"), flush=True)


def outline_servers() -> None:
    for server in json.loads((DEMO / "outline.json").read_text()):
        registration = {"apiUrl": server["apiUrl"], "certSha256": server["certSha256"]}
        cli(
            "snapshot", "servers", "add", "--name", server["name"], "--from-json", "-",
            stdin=json.dumps(registration),
        )  # fmt: skip


def spiky_history(seconds: float = 180) -> None:
    """Two quiet days of hourly history for the scenario's spiky key (outline-sim's
    --scenario), once snapshot has collected its server: its bursts are then anomalies."""
    path = DEMO / "scenario.json"
    if not path.exists():
        return
    spiky = json.loads(path.read_text())["spiky"]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        listed = [json.loads(line) for line in cli("snapshot", "servers", "list").splitlines()
                  if line.startswith("{")]  # fmt: skip
        server = next((s for s in listed if s.get("name") == spiky["name"]), None)
        if server is not None and server.get("last_success_at"):
            history = Scenario().history(server["id"], spiky["key_id"])
            cli("snapshot", "history", "import", "-", stdin=history)
            return
        time.sleep(2)
    print(f"spiky key's server not collected within {seconds:.0f}s: no history", flush=True)


def gmail_users() -> None:
    for line in (DEMO / "gmail.jsonl").read_text().splitlines():
        user = json.loads(line)
        if "refresh_token" not in user:
            continue
        user_id = user["email"].split("@")[0]
        cli(
            "gmail_fetch", "accounts", "add", user_id, user["email"],
            env={"GMAIL_FETCH_REFRESH_TOKEN": user["refresh_token"]},
        )  # fmt: skip
        send(f"{GMAIL_FETCH_URL}/api/analytics/jobs", {"user_id": user_id})


def alerting() -> None:
    """The webhook receiver and the scenario's rules, as ``make demo`` sets them up (and
    not twice when the demo is brought up again over its volumes)."""

    async def go() -> None:
        headers = {"Authorization": f"Bearer {api_token()}"}
        async with httpx.AsyncClient(timeout=10, headers=headers) as http:
            await set_up(http, ALERT_URL, WEBHOOK_URL)

    asyncio.run(go())
    send(f"{TRAFFIC_SYNC_URL}/nodes/1/limit", {"limit_bytes": 2_000_000_000}, method="PUT")


if __name__ == "__main__":
    outline_servers()
    gmail_users()
    alerting()
    spiky_history()
