"""The least-privilege users of docs/security.md (:mod:`tributary.privileges`) on the real
Redis, PostgreSQL and MariaDB: each service's user may do its own work and nothing
beyond it (the end-to-end run shows the rights are enough; this shows they are few)."""

from __future__ import annotations

import fnmatch
import secrets
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tributary import catalog
from tributary.keys import Keys
from tributary.privileges import HOMES, NEEDS, database_sql, key_patterns, redis_acl
from tributary_testing.infra import delete_prefix

#: a key of each service's own that no other service may touch
OWN_KEY: dict[str, Callable[[Keys], str]] = {
    "snapshot": lambda k: k.snapshot_scheduler,
    "gmail_fetch": lambda k: k.gmail_quota("u1"),
    "traffic_sync": lambda k: k.traffic_status,
    "aggregation": lambda k: k.usage_counter("m1", "2026-12-06", "calls"),
    "alert": lambda k: k.stream(catalog.ALERTS),
}


@pytest.fixture
def acl_client(redis_url: str) -> Iterator[tuple[Keys, dict[str, redis.Redis]]]:
    prefix = f"t_acl_{uuid.uuid4().hex[:8]}:"
    keys = Keys(prefix)
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    clients: dict[str, redis.Redis] = {}
    for service in NEEDS:
        user, password = f"{prefix}{service}", secrets.token_hex(8)
        admin.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", user, "on", f">{password}", *redis_acl(service, keys)
        )
        clients[service] = redis.Redis.from_url(
            redis_url, username=user, password=password, decode_responses=True
        )
    yield keys, clients
    for service, client in clients.items():
        client.close()
        admin.acl_deluser(f"{prefix}{service}")
    admin.close()
    delete_prefix(redis_url, prefix)


@pytest.mark.parametrize("service", list(NEEDS))
def test_a_service_user_may_use_its_streams_and_keys_and_nothing_else(
    acl_client: tuple[Keys, dict[str, redis.Redis]], service: str
) -> None:
    keys, clients = acl_client
    client = clients[service]
    for stream in NEEDS[service].streams:
        entry = client.xadd(keys.stream(stream), {"k": "v"})
        client.xgroup_create(keys.stream(stream), service, id="0", mkstream=True)
        assert client.xreadgroup(service, "c1", {keys.stream(stream): ">"}, count=1, block=1)
        client.xack(keys.stream(stream), service, entry)
        client.xadd(keys.dlq(stream), {"k": "v"})
        client.zadd(keys.retries(stream, service), {"1-0": 1})
        client.xtrim(keys.stream(stream), minid="0-1")
        client.xinfo_groups(keys.stream(stream))
    client.set(keys.lease(f"{service}:job"), "me", px=1000)
    assert client.evalsha(client.script_load("return 1"), 0) == 1
    own = OWN_KEY[service](keys)
    client.exists(own)
    for other, build in OWN_KEY.items():
        if other == service or build(keys) in _covered(service, keys):
            continue
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.exists(build(keys))
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set(keys.lease("someone-else:job"), "me")
    for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("ACL", "LIST"),
                    ("CLIENT", "LIST"), ("SHUTDOWN",), ("PUBLISH", "c", "m")):  # fmt: skip
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)  # type: ignore[no-untyped-call]


def _covered(service: str, keys: Keys) -> set[str]:
    """Keys of others that ``service`` legitimately shares (alert reads every stream)."""
    patterns = key_patterns(service, keys)
    return {
        build(keys)
        for build in OWN_KEY.values()
        if any(fnmatch.fnmatchcase(build(keys), p.replace("\\", "")) for p in patterns)
    }


def test_a_prefix_with_glob_characters_is_matched_literally() -> None:
    patterns = key_patterns("snapshot", Keys("a*b[1]:"))
    assert patterns[0] == "a\\*b\\[1\\]:outline.collect"


def _run_as(url: str, role: str, password: str, statements: list[str]) -> list[str]:
    """Each statement in its own transaction as ``role``: the errors, in order ('' = ok)."""
    engine = sa.create_engine(make_url(url).set(username=role, password=password))
    errors = []
    try:
        for statement in statements:
            try:
                with engine.begin() as conn:
                    conn.execute(sa.text(statement))
                errors.append("")
            except sa.exc.DBAPIError as exc:
                errors.append(str(exc.orig).splitlines()[0])
    finally:
        engine.dispose()
    return errors


def test_a_postgres_role_owns_its_schema_and_nothing_else(postgres_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    role, schema, other = f"t_{run}_alert", f"t_{run}_alert", f"t_{run}_other"
    password = secrets.token_hex(8)
    admin = sa.create_engine(postgres_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{other}"'))
            for statement in database_sql("alert", "postgresql", role, schema, password):
                conn.execute(sa.text(statement))
        errors = _run_as(postgres_url, role, password, [
            f'CREATE TABLE "{schema}".rules (id int primary key)',
            f'INSERT INTO "{schema}".rules VALUES (1)',
            f'ALTER TABLE "{schema}".rules ADD COLUMN name text',
            f'CREATE TABLE "{other}".stolen (id int)',
            "CREATE TABLE public.stolen (id int)",
            f'CREATE SCHEMA "t_{run}_new"',
        ])  # fmt: skip
        assert errors[:3] == ["", "", ""]
        assert all("permission denied" in e for e in errors[3:]), errors
    finally:
        with admin.begin() as conn:
            for name in (schema, other):
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def test_a_mysql_user_has_rights_on_its_database_only(mysql_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    user, database = f"t_{run}_ts", f"t_{run}_traffic"
    password = secrets.token_hex(8)
    admin = sa.create_engine(mysql_url)
    own_url = make_url(mysql_url).set(database=database).render_as_string(hide_password=False)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{database}`"))
            for statement in database_sql("traffic_sync", "mysql", user, database, password):
                conn.execute(sa.text(statement))
        other = make_url(mysql_url).database
        errors = _run_as(own_url, user, password, [
            "CREATE TABLE node_traffic (id int primary key)",
            "INSERT INTO node_traffic VALUES (1)",
            "CREATE INDEX by_id ON node_traffic (id)",
            f"CREATE TABLE `{other}`.stolen (id int)",
            "CREATE DATABASE stolen",
            "SELECT * FROM mysql.user",
        ])  # fmt: skip
        assert errors[:3] == ["", "", ""]
        assert all("denied" in e for e in errors[3:]), errors
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{database}`"))
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


def test_every_service_has_a_home_and_needs() -> None:
    assert set(HOMES) == set(NEEDS) == set(OWN_KEY)
