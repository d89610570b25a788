"""Least privilege: what each service may do in Redis and its database, in one place.

A service needs, in Redis, the streams it writes or reads (each with its dead letters
and the retry sets of its groups), its leader leases, and its own keys or the keys its
domain shares with other writers (:mod:`tributary.keys` names them all); and a fixed set
of command categories. In PostgreSQL it needs to own its schema and nothing else; in
MySQL/MariaDB (traffic_sync) the rights on its database that its migrations and tables
use. docs/security.md shows what :func:`redis_acl` and :func:`database_sql` print, and
the end-to-end run (tests/integration) runs every service as these users.

``python -m tributary privileges <service>`` prints the ACL rule and the SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tributary import catalog
from tributary.keys import DLQ_SUFFIX, RETRY_INFIX, Keys

#: Redis command categories every service uses: reads and writes of data, scripts
#: (EVALSHA, SCRIPT LOAD), MULTI/EXEC, blocking reads (XREADGROUP BLOCK), connection
#: commands (AUTH, PING, CLIENT SETINFO); then the dangerous and admin ones taken away
#: (KEYS, FLUSHALL, CONFIG, DEBUG, CLIENT KILL, SHUTDOWN, ACL ...).
REDIS_COMMANDS = (
    "-@all", "+@read", "+@write", "+@scripting", "+@transaction", "+@blocking", "+@connection",
    "-@dangerous", "-@admin",
)  # fmt: skip

#: MySQL/MariaDB rights on the service's own database: its data, and the DDL its
#: migrations run (retention and queries need no more)
MYSQL_RIGHTS = "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, REFERENCES"


@dataclass(frozen=True, slots=True)
class Needs:
    """What one service touches in Redis beyond its leases: the streams it writes or
    consumes, and patterns of its other keys (built with :class:`Keys`)."""

    streams: tuple[str, ...]
    keys: Callable[[Keys], tuple[str, ...]] = lambda keys: ()


def _glob(text: str) -> str:
    """``text`` with Redis glob characters escaped (a prefix or name matched literally)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


NEEDS: dict[str, Needs] = {
    "snapshot": Needs(
        (catalog.OUTLINE_COLLECT, catalog.USAGE_ANOMALIES, catalog.USAGE_FORECASTS),
        lambda k: (_glob(k.snapshot_scheduler),),
    ),
    "gmail_fetch": Needs(
        (catalog.GMAIL_JOBS, catalog.GMAIL_JOB_EVENTS),
        lambda k: (_glob(k.gmail_quota("")) + "*",),
    ),
    "traffic_sync": Needs(
        (catalog.TRAFFIC_FLUSHED,),
        lambda k: (
            "{}*{}".format(*map(_glob, k.node_traffic_affixes)),
            _glob(k.traffic_dirty),
            _glob(k.traffic_batch("")) + "*",
            _glob(k.traffic_batches),
            _glob(k.traffic_quarantine_prefix) + "*",
            _glob(k.traffic_status),
        ),
    ),
    "aggregation": Needs(
        (catalog.USAGE_AGGREGATED,),
        lambda k: (_glob(k.usage_counter_prefix) + "*", _glob(k.usage_index("")) + "*"),
    ),
    # alert consumes every other service's facts and writes readings and alerts
    "alert": Needs(
        (
            catalog.DEVICE_READINGS,
            catalog.ALERTS,
            catalog.TRAFFIC_FLUSHED,
            catalog.USAGE_AGGREGATED,
            catalog.USAGE_ANOMALIES,
            catalog.USAGE_FORECASTS,
        ),
    ),
}


def key_patterns(service: str, keys: Keys) -> list[str]:
    """Every key pattern ``service`` may touch (``ACL SETUSER ... ~<pattern>``)."""
    needs = NEEDS[service]
    patterns: list[str] = []
    for stream in needs.streams:
        name = _glob(keys.stream(stream))
        patterns += [name, f"{name}{DLQ_SUFFIX}", f"{name}{RETRY_INFIX}*"]
    patterns.append(_glob(keys.lease(f"{service}:")) + "*")
    patterns += needs.keys(keys)
    return patterns


def redis_acl(service: str, keys: Keys) -> list[str]:
    """The rules of ``ACL SETUSER <user> ...`` for ``service`` (without ``on`` and the
    password, which the operator adds): keys, no Pub/Sub channels, commands."""
    return ["resetkeys", *(f"~{p}" for p in key_patterns(service, keys)), "resetchannels",
            *REDIS_COMMANDS]  # fmt: skip


def database_sql(
    service: str, backend: str, role: str, schema_or_database: str, password: str
) -> list[str]:
    """The statements an administrator runs once to give ``service`` its database user,
    logging in with ``password`` (quoted here)."""
    if service not in NEEDS:
        raise KeyError(service)
    quoted = password.replace("'", "''")
    if backend == "postgresql":
        return [
            f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{quoted}'",
            f'CREATE SCHEMA IF NOT EXISTS "{schema_or_database}" AUTHORIZATION "{role}"',
            # PostgreSQL 15+ already refuses CREATE in public to everyone else
            f'REVOKE CREATE ON SCHEMA public FROM "{role}"',
        ]
    return [
        f"CREATE USER '{role}'@'%' IDENTIFIED BY '{quoted}'",
        f"GRANT {MYSQL_RIGHTS} ON `{schema_or_database}`.* TO '{role}'@'%'",
    ]


#: where each service keeps its tables by default: PostgreSQL schema, or MySQL database
HOMES: dict[str, tuple[str, str]] = {
    "snapshot": ("postgresql", "snapshot"),
    "gmail_fetch": ("postgresql", "gmail_fetch"),
    "aggregation": ("postgresql", "aggregation"),
    "alert": ("postgresql", "alert"),
    "traffic_sync": ("mysql", "traffic"),
}


def render(service: str, prefix: str = "") -> str:
    """The Markdown block docs/security.md shows for ``service`` (and the ``privileges``
    command prints): its Redis ACL user and its database user, for ``STREAM_PREFIX``."""
    backend, home = HOMES[service]
    acl = " ".join(["ACL SETUSER", service, "on", ">CHANGE-ME", *redis_acl(service, Keys(prefix))])
    sql = database_sql(service, backend, service, home, "CHANGE-ME")
    return "\n".join(["```", acl, "```", "", "```sql", *(f"{s};" for s in sql), "```"])
