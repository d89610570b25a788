"""TLS and ACL users on the way to Redis, PostgreSQL and MariaDB, against real servers
started with TLS (:mod:`tributary_testing.tls`): the settings reach the drivers, the
server's certificate is verified against the configured CA (and its host name, unless
told otherwise), client certificates are presented, and a wrong CA is refused."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from tributary.config import ServiceSettings, load_settings
from tributary.db import DatabaseTls, make_engine
from tributary.errors import ConfigError
from tributary.redis_client import RedisTarget, connect
from tributary_testing.tls import Certificates, TlsMariaDB, TlsPostgres, TlsRedis

pytestmark = pytest.mark.timeout(120)


def settings(**env: str) -> ServiceSettings:
    return ServiceSettings.model_validate(env)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates.make(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_redis(certs: Certificates) -> Iterator[TlsRedis]:
    server = TlsRedis(certs, clients=True)
    yield server
    server.close()


# -- Redis -------------------------------------------------------------------------------


async def _whoami(target: RedisTarget) -> str:
    client: aioredis.Redis = connect(target)
    try:
        return str(await client.acl_whoami())
    finally:
        await client.aclose()


def whoami(**env: str) -> str:
    return asyncio.run(_whoami(RedisTarget.of(settings(**env))))


def client_env(certs: Certificates) -> dict[str, str]:
    return {"REDIS_TLS_CERT_FILE": str(certs.client_cert),
            "REDIS_TLS_KEY_FILE": str(certs.client_key)}  # fmt: skip


def test_redis_over_tls_with_the_ca_and_a_client_certificate(
    tls_redis: TlsRedis, certs: Certificates
) -> None:
    env = {"REDIS_URL": tls_redis.url(), "REDIS_TLS_CA_FILE": str(certs.ca), **client_env(certs)}
    assert whoami(**env) == "default"


def test_redis_refuses_a_server_signed_by_another_ca(
    tls_redis: TlsRedis, certs: Certificates
) -> None:
    with pytest.raises(aioredis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        whoami(REDIS_URL=tls_redis.url(), REDIS_TLS_CA_FILE=str(certs.other_ca),
               **client_env(certs))  # fmt: skip


def test_redis_checks_the_host_name_unless_told_not_to(
    tls_redis: TlsRedis, certs: Certificates
) -> None:
    env = {"REDIS_URL": tls_redis.url("127.0.0.1"), "REDIS_TLS_CA_FILE": str(certs.ca),
           **client_env(certs)}  # fmt: skip
    with pytest.raises(aioredis.ConnectionError, match=r"match|mismatch"):
        whoami(**env)
    assert whoami(**env, REDIS_TLS_CHECK_HOSTNAME="false") == "default"


def test_redis_without_the_client_certificate_is_turned_away(
    tls_redis: TlsRedis, certs: Certificates
) -> None:
    with pytest.raises(aioredis.ConnectionError):
        whoami(REDIS_URL=tls_redis.url(), REDIS_TLS_CA_FILE=str(certs.ca))


def test_redis_acl_user_and_password_from_their_own_settings(
    tls_redis: TlsRedis, certs: Certificates
) -> None:
    """REDIS_USERNAME/REDIS_PASSWORD: the password comes from a Secret, not the URL."""
    password = secrets.token_hex(16)
    env = {"REDIS_URL": tls_redis.url(), "REDIS_TLS_CA_FILE": str(certs.ca), **client_env(certs)}

    async def add_user() -> None:
        client = connect(RedisTarget.of(settings(**env)))
        await client.acl_setuser("svc", enabled=True, passwords=[f"+{password}"],
                                 commands=["+ping", "+acl|whoami"])  # fmt: skip
        await client.aclose()

    asyncio.run(add_user())
    assert whoami(**env, REDIS_USERNAME="svc", REDIS_PASSWORD=password) == "svc"
    with pytest.raises(aioredis.AuthenticationError):
        whoami(**env, REDIS_USERNAME="svc", REDIS_PASSWORD="wrong")
    target = RedisTarget.of(settings(**env, REDIS_USERNAME="svc", REDIS_PASSWORD=password))
    assert password not in repr(settings(**env, REDIS_PASSWORD=password))
    assert target.options()["password"] == password


# -- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_postgres(certs: Certificates) -> Iterator[TlsPostgres]:
    server = TlsPostgres(certs)
    yield server
    server.close()


def pg_ssl(url: str, **env: str) -> Any:
    engine = make_engine(url, tls=DatabaseTls.of(settings(**env)), pool_size=1)
    try:
        with engine.connect() as conn:
            query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            return conn.execute(sa.text(query)).scalar_one()
    finally:
        engine.dispose()


def test_postgres_verify_full_with_the_ca(tls_postgres: TlsPostgres, certs: Certificates) -> None:
    env = {"DATABASE_TLS_MODE": "verify-full", "DATABASE_TLS_CA_FILE": str(certs.ca)}
    assert pg_ssl(tls_postgres.url(), **env) is True


def test_postgres_verify_full_refuses_another_ca_and_another_host_name(
    tls_postgres: TlsPostgres, certs: Certificates
) -> None:
    with pytest.raises(sa.exc.OperationalError, match="certificate verify failed"):
        pg_ssl(tls_postgres.url(), DATABASE_TLS_MODE="verify-full",
               DATABASE_TLS_CA_FILE=str(certs.other_ca))  # fmt: skip
    by_address = tls_postgres.url("127.0.0.1")
    with pytest.raises(sa.exc.OperationalError, match="does not match"):
        pg_ssl(by_address, DATABASE_TLS_MODE="verify-full", DATABASE_TLS_CA_FILE=str(certs.ca))
    # verify-ca checks the chain only
    assert pg_ssl(by_address, DATABASE_TLS_MODE="verify-ca", DATABASE_TLS_CA_FILE=str(certs.ca))


def test_postgres_disable_really_goes_without_tls(tls_postgres: TlsPostgres) -> None:
    """The server here rejects connections without TLS (pg_hba ``hostnossl reject``)."""
    with pytest.raises(sa.exc.OperationalError, match="no encryption"):
        pg_ssl(tls_postgres.url(), DATABASE_TLS_MODE="disable")


# -- MariaDB -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_mariadb(certs: Certificates) -> Iterator[TlsMariaDB]:
    server = TlsMariaDB(certs)
    yield server
    server.close()


def mysql_cipher(url: str, **env: str) -> str:
    engine = make_engine(url, tls=DatabaseTls.of(settings(**env)), pool_size=1)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).one()
            return str(row[1])
    finally:
        engine.dispose()


def test_mariadb_verify_full_with_the_ca(tls_mariadb: TlsMariaDB, certs: Certificates) -> None:
    env = {"DATABASE_TLS_MODE": "verify-full", "DATABASE_TLS_CA_FILE": str(certs.ca)}
    assert mysql_cipher(tls_mariadb.url(), **env) != ""
    assert mysql_cipher(tls_mariadb.url(), DATABASE_TLS_MODE="require") != ""
    assert mysql_cipher(tls_mariadb.url(), DATABASE_TLS_MODE="disable") == ""


def test_mariadb_verify_refuses_another_ca_and_another_host_name(
    tls_mariadb: TlsMariaDB, certs: Certificates
) -> None:
    with pytest.raises(sa.exc.OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
        mysql_cipher(tls_mariadb.url(), DATABASE_TLS_MODE="verify-ca",
                     DATABASE_TLS_CA_FILE=str(certs.other_ca))  # fmt: skip
    by_address = tls_mariadb.url("127.0.0.1")
    with pytest.raises(sa.exc.OperationalError, match=r"match|mismatch"):
        mysql_cipher(by_address, DATABASE_TLS_MODE="verify-full",
                     DATABASE_TLS_CA_FILE=str(certs.ca))  # fmt: skip
    assert mysql_cipher(by_address, DATABASE_TLS_MODE="verify-ca",
                        DATABASE_TLS_CA_FILE=str(certs.ca)) != ""  # fmt: skip


# -- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_TLS_CA_FILE": "{ca}"}, "need a rediss:// REDIS_URL"),
        ({"REDIS_URL": "rediss://h:6380/0", "REDIS_TLS_CERT_FILE": "{ca}"},
         "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together"),
        ({"REDIS_URL": "rediss://h:6380/0", "REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"},
         "REDIS_TLS_CA_FILE=/nonexistent/ca.pem: not a readable file"),
        ({"DATABASE_TLS_MODE": "verify-full"}, "needs DATABASE_TLS_CA_FILE"),
        ({"DATABASE_TLS_MODE": "disable", "DATABASE_TLS_CA_FILE": "{ca}"},
         "DATABASE_TLS_MODE=disable"),
        ({"DATABASE_TLS_MODE": "prefer"}, "DATABASE_TLS_MODE"),
    ],
)  # fmt: skip
def test_tls_settings_that_cannot_work_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, certs: Certificates, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(ca=certs.ca))
    with pytest.raises(ConfigError, match=message):
        load_settings(ServiceSettings)


def test_files_outside_the_url_are_passed_to_the_client(certs: Certificates) -> None:
    target = RedisTarget.of(settings(REDIS_URL="rediss://cache:6380/0",
                                     REDIS_TLS_CA_FILE=str(certs.ca)))  # fmt: skip
    assert target.options() == {
        "ssl_cert_reqs": "required", "ssl_check_hostname": True, "ssl_ca_certs": str(certs.ca),
    }  # fmt: skip
    assert RedisTarget.of(settings()).options() == {}
    assert Path(str(target.options()["ssl_ca_certs"])).exists()
