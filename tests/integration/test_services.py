"""The real-service fixtures: each test gets a private PostgreSQL database and Redis key prefix."""

from __future__ import annotations

import socket

import psycopg
import pytest
import redis
import sqlalchemy as sa

from radtrace.testing.services import (
    POSTGRES_ADMIN_URL,
    RedisNamespace,
    ensure_postgres,
    ensure_redis,
    free_port,
    temporary_postgres_database,
    temporary_redis_namespace,
)

pytestmark = pytest.mark.integration


def test_postgres_database_is_real_private_and_dropped_afterwards() -> None:
    with temporary_postgres_database() as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE probe (id integer primary key, note text)"))
            conn.execute(sa.text("INSERT INTO probe VALUES (1, 'ü 肺')"))
            assert conn.execute(sa.text("SELECT note FROM probe")).scalar_one() == "ü 肺"
            server = conn.execute(sa.text("SHOW server_version")).scalar_one()
        engine.dispose()
        name = url.rsplit("/", 1)[1]
    assert server.startswith(("15", "16", "17"))
    with psycopg.connect(POSTGRES_ADMIN_URL) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert left == (0,)


def test_two_postgres_databases_do_not_see_each_other() -> None:
    with temporary_postgres_database() as first, temporary_postgres_database() as second:
        assert first != second
        one = sa.create_engine(first)
        with one.begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_in_first (id integer)"))
        two = sa.create_engine(second)
        with two.connect() as conn:
            assert not sa.inspect(conn).has_table("only_in_first")
        one.dispose()
        two.dispose()


def test_redis_namespace_is_real_and_cleaned_up(redis_namespace: RedisNamespace) -> None:
    client = redis.Redis.from_url(redis_namespace.url)
    client.set(redis_namespace.key("doorbell"), b"ring")
    client.lpush(redis_namespace.key("queue"), b"study-1")
    assert client.get(redis_namespace.key("doorbell")) == b"ring"
    assert client.info("server")["redis_version"].startswith("7")
    client.close()


def test_redis_namespace_keys_are_removed_on_exit() -> None:
    with temporary_redis_namespace() as namespace:
        client = redis.Redis.from_url(namespace.url)
        for index in range(1200):  # more than one SCAN page
            client.set(namespace.key(f"k{index}"), index)
    assert list(client.scan_iter(match=f"{namespace.prefix}*")) == []
    client.close()


def test_ensure_functions_are_idempotent_when_servers_run() -> None:
    assert ensure_postgres() == ensure_postgres()
    assert ensure_redis() == ensure_redis()


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert server.getsockname()[1] == port
