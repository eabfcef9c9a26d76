"""radtrace's store through a real pgbouncer (Debian's, 1.18) pooling transactions.

psycopg prepares a statement server-side once a connection has run it 5 times (its prepare_threshold). pgbouncer
1.18 pooling transactions gives each transaction whichever server connection is free: a statement prepared on one
was missing on the next, and the call failed permanently ('prepared statement "_pg3_N" does not exist', or 'already
exists' where the name was taken by another client's). Reproduced with the node heartbeat (nodes.renew_node, 4
threads on one store, 20 beats each: 10 of 80 failed). radtrace now prepares nothing (engine.PREPARE_THRESHOLD).
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pgbouncer_support import pgbouncer
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.nodes import register_node, renew_node
from radtrace.testing.services import temporary_postgres_database

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database("radtrace_store_pgbouncer") as url:
        store = Store.from_url(url)
        try:
            upgrade(store)
        finally:
            store.dispose()
        yield url


def test_the_heartbeat_repeated_survives_a_server_connection_taken_by_another_client(postgres_url: str) -> None:
    """One radtrace connection beats 8 times on pgbouncer's one server connection (its statements run more than
    psycopg's 5 times); another client then holds that server connection in a transaction, so the next beat runs on a
    fresh one. Before: that beat failed ('prepared statement "_pg3_N" does not exist'). Now it is recorded."""
    with pgbouncer(postgres_url, "transaction") as bouncer:
        store = Store.from_url(bouncer, pool_size=1)
        try:
            register_node(store, "store-pgbouncer", "worker")
            for _ in range(8):
                renew_node(store, "store-pgbouncer", "worker")
            libpq = make_url(bouncer).set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(libpq) as other:
                other.execute("SELECT 1")  # in a transaction: pgbouncer's idle server connection is its now
                renew_node(store, "store-pgbouncer", "worker")
                other.rollback()
            with store.session() as session:
                seen = session.execute(sa.text("SELECT count(*) FROM nodes WHERE id = 'store-pgbouncer'")).scalar()
            assert seen == 1
        finally:
            store.dispose()


def test_a_store_prepares_no_statement_on_postgresql(postgres_url: str) -> None:
    """Straight to PostgreSQL too: a call repeated 10 times leaves no prepared statement on its connection (none to
    miss behind a pooler, no generic plan)."""
    store = Store.from_url(postgres_url, pool_size=1)
    try:
        register_node(store, "store-direct", "worker")
        for _ in range(10):
            renew_node(store, "store-direct", "worker")
        with store.session() as session:
            prepared = session.execute(sa.text("SELECT count(*) FROM pg_prepared_statements")).scalar()
        assert prepared == 0
    finally:
        store.dispose()
