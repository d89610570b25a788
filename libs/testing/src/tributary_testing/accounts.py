"""Least-privilege accounts for a run of the services: one Redis ACL user, one
PostgreSQL role owning its schema (or one MariaDB user on its database) per service,
exactly as docs/security.md tells an operator to make them (:mod:`tributary.privileges`),
each with a fresh password. :meth:`Accounts.env` is what each service then runs with;
:meth:`Accounts.secrets` the values that must never show up in its output."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tributary.keys import Keys
from tributary.privileges import database_sql, redis_acl


@dataclass
class Accounts:
    redis_url: str
    postgres_url: str
    mysql_url: str
    #: service -> PostgreSQL schema, or for MySQL the database, it owns
    homes: dict[str, str]
    prefix: str
    run: str
    mysql_services: frozenset[str] = frozenset({"traffic_sync"})
    passwords: dict[str, str] = field(default_factory=dict)

    def user(self, service: str) -> str:
        return f"t_{self.run}_{service}"

    def create(self) -> None:
        redis_admin = redis.Redis.from_url(self.redis_url)
        try:
            for service, home in self.homes.items():
                password = self.passwords[service] = secrets.token_hex(16)
                rules = redis_acl(service, Keys(self.prefix))
                redis_admin.acl_setuser(self.user(service), reset=True)  # a name reused
                redis_admin.execute_command(  # type: ignore[no-untyped-call]
                    "ACL", "SETUSER", self.user(service), "on", f">{password}", *rules
                )
                self._database(service, home, password)
            if redis_admin.config_get("aclfile").get("aclfile"):
                redis_admin.execute_command("ACL", "SAVE")  # type: ignore[no-untyped-call]
        finally:
            redis_admin.close()

    def _database(self, service: str, home: str, password: str) -> None:
        mysql = service in self.mysql_services
        engine = sa.create_engine(self.mysql_url if mysql else self.postgres_url)
        statements = database_sql(service, "mysql" if mysql else "postgresql",
                                  self.user(service), home, password)  # fmt: skip
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
        engine.dispose()

    def env(self, service: str, postgres_url: str, mysql_url: str) -> dict[str, str]:
        """REDIS_USERNAME/REDIS_PASSWORD and the DATABASE_URL of ``service``'s account,
        on the database server at ``postgres_url`` / ``mysql_url`` (a proxy, say)."""
        mysql = service in self.mysql_services
        url = make_url(mysql_url if mysql else postgres_url).set(
            username=self.user(service), password=self.passwords[service]
        )
        if mysql:
            url = url.set(database=self.homes[service])
        return {
            "REDIS_USERNAME": self.user(service),
            "REDIS_PASSWORD": self.passwords[service],
            "DATABASE_URL": url.render_as_string(hide_password=False),
        }

    def secrets(self) -> list[str]:
        return list(self.passwords.values())

    def drop(self) -> None:
        """Remove the users and roles (the schemas and databases are the caller's)."""
        redis_admin = redis.Redis.from_url(self.redis_url)
        try:
            for service in self.passwords:
                redis_admin.acl_deluser(self.user(service))
        finally:
            redis_admin.close()
        for mysql, url in ((False, self.postgres_url), (True, self.mysql_url)):
            engine = sa.create_engine(url)
            with engine.begin() as conn:
                for service in self.passwords:
                    if (service in self.mysql_services) != mysql:
                        continue
                    if mysql:
                        conn.execute(sa.text(f"DROP USER IF EXISTS '{self.user(service)}'@'%'"))
                    else:
                        conn.execute(sa.text(f'DROP OWNED BY "{self.user(service)}" CASCADE'))
                        conn.execute(sa.text(f'DROP ROLE IF EXISTS "{self.user(service)}"'))
            engine.dispose()
