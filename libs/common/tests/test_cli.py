"""The common CLI verbs, in process."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

import pytest
import redis

from tributary.cli import EXIT_CONFIG, EXIT_FAILED, Command, Invocation, main
from tributary.errors import CycleFailed
from tributary.keys import Keys
from tributary.streams.dlq import dead_letter_fields
from tributary_testing.sample_service import SERVICE, STREAM


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_url: str, keys: Keys) -> Keys:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STREAM_PREFIX", keys.prefix)
    return keys


def test_dlq_list_show_replay_purge(
    env: Keys, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    original = {"id": "e1", "type": "sample.happened", "data": "{}"}
    for n in range(3):
        fields = dead_letter_fields(
            {**original, "id": f"e{n}"}, error="boom", deliveries=5, stream=STREAM,
            group="sample", consumer="c", entry_id=f"1-{n}",
        )  # fmt: skip
        client.xadd(env.dlq(STREAM), fields)  # type: ignore[arg-type]
    service = SERVICE

    assert main(service, ["dlq", "list", STREAM]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["error"] for r in rows] == ["boom"] * 3
    first = rows[0]["id"]

    assert main(service, ["dlq", "show", STREAM, first]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["fields"]["id"] == "e0"
    assert shown["deliveries"] == 5

    assert main(service, ["dlq", "replay", STREAM, first]) == 0
    assert "replayed 1" in capsys.readouterr().out
    back = client.xrange(env.stream(STREAM))
    assert [f for _, f in back or []] == [{**original, "id": "e0"}]

    assert main(service, ["dlq", "purge", STREAM, rows[1]["id"]]) == 0
    assert "purged 1" in capsys.readouterr().out
    assert client.xlen(env.dlq(STREAM)) == 1
    client.close()


def _verb(seen: list[str]) -> Command[Any, Any]:
    def run(inv: Invocation[Any, Any]) -> int:
        seen.append(inv.args.word)
        return 7

    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("word")

    return Command("say", "a verb that needs no settings", run, arguments)


def test_a_verb_runs_its_function_with_its_arguments_and_loads_settings_only_on_use(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAMPLE_BATCH_SIZE", "not a number")  # a broken configuration
    seen: list[str] = []
    assert main(SERVICE, ["say", "hello"], [_verb(seen)]) == 7
    assert seen == ["hello"]
    assert main(SERVICE, ["check-config"], [_verb(seen)]) == EXIT_CONFIG
    assert "SAMPLE_BATCH_SIZE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as unknown:
        main(SERVICE, ["shout"], [_verb(seen)])
    assert unknown.value.code == 2


def test_a_failed_verb_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def failing(inv: Invocation[Any, Any]) -> int:
        raise CycleFailed("2 of 3 things not done: a (why); b (why)")

    def broken(inv: Invocation[Any, Any]) -> int:
        raise ValueError("bad\nsecond line https://user:hunter2@host/")

    verbs = [Command("fail", "", failing), Command("break", "", broken)]
    assert main(SERVICE, ["fail"], verbs) == EXIT_FAILED
    assert capsys.readouterr().err == "sample: 2 of 3 things not done: a (why); b (why)\n"
    assert main(SERVICE, ["break"], verbs) == EXIT_FAILED
    assert capsys.readouterr().err == "sample: break failed: ValueError: bad\n"


def test_once_exits_1_when_its_cycle_dead_lettered_entries(
    root_logging: logging.Logger,
    env: Keys,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    postgres_url: str,
    pg_schema: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    monkeypatch.setenv("DB_SCHEMA", pg_schema)
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    assert main(SERVICE, ["once"]) == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xadd(env.stream(STREAM), {"not": "an event"})
    client.close()
    assert main(SERVICE, ["once"]) == EXIT_FAILED
    said = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("{")]
    assert said == ["sample: entries dead-lettered: 1 on sample.events (see `dlq list`)"]
