"""Each node's row says its own watch interval and staleness limit (store.node_watch_interval_s,
store.node_stale_after_s), and a row is judged by them, not by the settings of the host that judges it
(radtrace.store.nodes, migration 0026).

Before, ``radtrace db upgrade`` judged every row by its own host's ``store.node_stale_after_s``: a worker configured
to renew its row every 60 s (a slow database) looked ended to a host on the default 30 s between two of its beats,
and the migration ran under it; a listener renewing every second and killed with ``kill -9`` was waited for 30 s."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import _config, upgrade
from radtrace.store.node_watch import NodeWatch
from radtrace.store.nodes import Node, live_nodes, register_node
from radtrace.testing.services import temporary_postgres_database
from tests_support import radtrace

pytestmark = pytest.mark.integration


def _seen_ago(store: Store, node_id: str, seconds: float) -> None:
    with store.session() as session:
        session.execute(
            sa.update(Node).where(Node.id == node_id).values(seen_at=utc_now() - timedelta(seconds=seconds))
        )


def test_two_nodes_with_different_settings_are_each_judged_by_their_own(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    url = f"sqlite:///{data_dir / 'radtrace.db'}"
    data_dir.mkdir()
    store = Store.from_url(url)
    slow = NodeWatch(url, "worker", interval_s=120, stale_after_s=360)  # a site whose database answers slowly
    try:
        upgrade(store)
        slow.start()  # its next beat in 120 s: none during this test
        register_node(store, "fast", "listener", interval_s=1, stale_after_s=2)  # renews every second
        with store.engine.connect() as connection:
            written = dict(connection.execute(sa.select(Node.role, Node.stale_after_s)).all())
            intervals = dict(connection.execute(sa.select(Node.role, Node.watch_interval_s)).all())
        assert written == {"worker": 360.0, "listener": 2.0}
        assert intervals == {"worker": 120.0, "listener": 1.0}
        _seen_ago(store, slow.node_id, 150)  # between two of its beats: at work (its limit 360 s)
        _seen_ago(store, "fast", 5)  # five beats missed: ended (kill -9), though this host's limit is 30 s
        seen = live_nodes(store, stale_after_s=30)
        assert [(node.role, node.stale_after_s) for node in seen] == [("worker", 360.0)]
        assert "stale after 360 s" in seen[0].describe(), seen[0].describe()
        with store.session() as session:  # the migration a newer radtrace would run: back one revision
            session.execute(sa.text("UPDATE alembic_version SET version_num = '0025'"))
        refused = radtrace("db", "upgrade", env={"RADTRACE_DATA_DIR": str(data_dir)})  # this host: the default 30 s
    finally:
        slow.stop()
        store.dispose()
    said = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode == 1, said
    assert "other radtrace processes work on it: worker on " in said, said
    assert "listener on" not in said, said


def test_a_row_written_before_the_limits_were_recorded_is_judged_by_this_host_s_setting(tmp_path: Path) -> None:
    """A row of a node still running the code of migrations 0024 and 0025 records no limits (NULL)."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    try:
        upgrade(store)
        with store.session() as session:
            session.execute(
                sa.text("INSERT INTO nodes (id, host, pid, role, version, schema, started_at, seen_at) "
                        "VALUES ('old', 'gpu-node-9', 4242, 'worker', '0.1.0', '0025', :t, :t)"),
                {"t": (utc_now() - timedelta(seconds=45)).replace(tzinfo=None)},
            )  # fmt: skip
        assert live_nodes(store, stale_after_s=30) == []
        assert [(node.host, node.stale_after_s) for node in live_nodes(store, stale_after_s=60)] == [
            ("gpu-node-9", None)
        ]
    finally:
        store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0026_adds_the_limits_and_its_downgrade_drops_them(backend: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        url = (
            f"sqlite:///{tmp_path / 'radtrace.db'}"
            if backend == "sqlite"
            else stack.enter_context(temporary_postgres_database("radtrace_node_limits"))
        )
        store = Store.from_url(url)
        stack.callback(store.dispose)
        upgrade(store)
        with store.engine.connect() as connection:
            command.downgrade(_config(connection), "0025")
            connection.commit()
            assert {"watch_interval_s", "stale_after_s"}.isdisjoint(
                column["name"] for column in sa.inspect(connection).get_columns("nodes")
            )
        assert live_nodes(store) == []  # a host judging a database at 0025 (db upgrade): the rows say no limits
        upgrade(store)
        with store.engine.connect() as connection:
            names = {column["name"] for column in sa.inspect(connection).get_columns("nodes")}
        assert {"watch_interval_s", "stale_after_s"} <= names
