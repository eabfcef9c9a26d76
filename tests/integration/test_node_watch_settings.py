"""The node watch's interval and the nodes rows' staleness limit are settings (store.node_watch_interval_s,
store.node_stale_after_s), validated, and what the services and ``radtrace db upgrade`` use (radtrace.store.nodes).
Before, they were constants (10 s, 30 s): a site whose database answers slowly could not widen them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from radtrace.config import load_settings
from radtrace.config_sections import StoreSettings
from radtrace.preflight import start_node_watch
from radtrace.store import census
from radtrace.store import floor as floors
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.node_watch import NodeWatch
from radtrace.store.nodes import NODE_STALE_S, WATCH_INTERVAL_S, live_nodes
from tests_support import radtrace

pytestmark = pytest.mark.integration


def test_defaults_are_the_documented_ones_and_a_limit_under_two_beats_is_refused() -> None:
    store = StoreSettings()
    assert (store.node_watch_interval_s, store.node_stale_after_s) == (WATCH_INTERVAL_S, NODE_STALE_S) == (10.0, 30.0)
    assert StoreSettings(node_watch_interval_s=30, node_stale_after_s=60).node_stale_after_s == 60
    with pytest.raises(ValidationError, match=r"node_stale_after_s \(30\) must be at least twice"):
        StoreSettings(node_watch_interval_s=20)
    for wrong in ({"node_watch_interval_s": 0}, {"node_watch_interval_s": 301}, {"node_stale_after_s": 1}):
        with pytest.raises(ValidationError):
            StoreSettings(**wrong)  # type: ignore[arg-type]


def test_a_service_watches_at_its_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NodeWatch, "start", lambda self: self)  # the interval it was given, not a database
    monkeypatch.setenv("RADTRACE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RADTRACE_STORE__NODE_WATCH_INTERVAL_S", "4")
    monkeypatch.setenv("RADTRACE_STORE__NODE_STALE_AFTER_S", "12")
    watch = start_node_watch(load_settings(), "worker")
    assert (watch.interval_s, watch.stale_after_s) == (4.0, 12.0)  # what its row says (migration 0026)


def test_serve_watches_at_its_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from radtrace import supervisor

    watched: list[tuple[float, float]] = []

    class NoChildren:  # serve's supervisor, without starting the components
        def __init__(self, *_args: object, **_kwargs: object) -> None:
            pass

        def on_incompatible(self, _problem: str) -> None:
            pass

        def run(self) -> int:
            return 0

    monkeypatch.setattr(NodeWatch, "start", lambda self: watched.append((self.interval_s, self.stale_after_s)) or self)
    monkeypatch.setattr(NodeWatch, "stop", lambda self: None)
    monkeypatch.setattr(supervisor, "Supervisor", NoChildren)
    settings = load_settings(data_dir=tmp_path, store={"node_watch_interval_s": 7, "node_stale_after_s": 21})
    assert supervisor.run_serve(settings) == 0
    assert watched == [(7.0, 21.0)]


def _seen_ago(store: Store, seconds: float) -> None:
    with store.session() as session:
        session.execute(
            sa.text("INSERT INTO nodes (id, host, pid, role, version, schema, started_at, seen_at) "
                    "VALUES ('n1', 'gpu-node-9', 4242, 'worker', '0.1.0', '0024', :t, :t)"),
            {"t": (utc_now() - timedelta(seconds=seconds)).replace(tzinfo=None)},
        )  # fmt: skip


def test_a_row_is_stale_after_the_setting_also_for_db_upgrade(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    store = Store.from_url(f"sqlite:///{data_dir / 'radtrace.db'}")
    try:
        upgrade(store)
        _seen_ago(store, 45)  # a worker on another machine, one slow beat behind a 30 s watch
        assert live_nodes(store) == []  # the default: 30 s
        assert [node.host for node in live_nodes(store, stale_after_s=60)] == ["gpu-node-9"]
        assert census.others_at_work(store, stale_after_s=60)
        with store.session() as session:  # the migration a newer radtrace would run: back one revision
            session.execute(sa.text("UPDATE alembic_version SET version_num = '0024'"))
    finally:
        store.dispose()
    env = {"RADTRACE_DATA_DIR": str(data_dir), "RADTRACE_STORE__NODE_STALE_AFTER_S": "120"}
    refused = radtrace("db", "upgrade", env=env)
    said = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode == 1, said
    assert "other radtrace processes work on it: worker on gpu-node-9 (pid 4242" in said, said
    assert "'stale after': its store.node_stale_after_s; 120 s for a row that says none" in said, said


def test_a_floor_raised_by_a_build_of_the_same_version_names_the_schema_not_an_upgrade_to_this_version() -> None:
    """Every commit says radtrace 0.1.0 (pyproject.toml): a floor raised by a later build of it told a node running
    0.1.0 to "upgrade this node to radtrace 0.1.0 or newer"."""
    floor = floors.Floor("0999_from_a_newer_build", floors.code_version(), "older code misreads the new tables")
    problem = floors.too_old_problem(floor)
    assert problem is not None
    assert f"upgrade this node to radtrace {floors.code_version()} or newer" not in problem
    assert "needs radtrace code that knows schema 0999_from_a_newer_build (older code misreads" in problem
    assert f"it also says it is radtrace {floors.code_version()}: the version was not raised" in problem
    assert "install the radtrace build that migrated the database on this node, then start it again" in problem
    newer = floors.too_old_problem(floors.Floor("0999_from_a_newer_build", "9.9.0", "older code misreads"))
    assert newer is not None
    assert "upgrade this node to radtrace 9.9.0 or newer, then start it again" in newer
