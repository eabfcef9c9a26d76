"""A node on another Redis database number or key prefix than the rest of the site is refused at start (exit 2), in
one line naming both; the first node records the site's broker in the database (``site_settings``, migration 0027).

Before, such a node passed every start-up check (its broker answers) and then never received work: the listener rang
the doorbell in one Redis database, the worker listened in the other (seen from outside: a GPU host whose env file
said ``/1``)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.config import load_settings
from radtrace.preflight.site_broker import site_broker_check
from radtrace.store.engine import Store
from radtrace.store.nodes import Node, database_now
from radtrace.store.site_settings import SiteSetting, read_site_setting
from radtrace.testing.services import RedisNamespace
from tests_support import radtrace

pytestmark = pytest.mark.integration


def _on(redis: RedisNamespace, db: int, postgres_url: str, data_dir: Path, prefix: str | None = None) -> dict[str, str]:
    server = redis.url.rsplit("/", 1)[0]
    return {"RADTRACE_STORE__URL": postgres_url, "RADTRACE_BROKER__URL": f"{server}/{db}",
            "RADTRACE_BROKER__KEY_PREFIX": redis.prefix if prefix is None else prefix,
            "RADTRACE_DATA_DIR": str(data_dir)}  # fmt: skip


def _running_listener(store: Store) -> None:
    """A listener on another host of the site, its row renewed now."""
    with store.session() as session:
        now = database_now(session.connection())
        session.execute(sa.insert(Node).values(
            id="listener-a", host="pacs-gw-1.hospital.example", pid=4242, role="listener", version="0.2.0",
            schema="0027", started_at=now - timedelta(minutes=5), seen_at=now, watch_interval_s=10.0,
            stale_after_s=30.0,
        ))  # fmt: skip


def test_a_worker_on_another_redis_database_is_refused_naming_both(
    pg_store: Store, postgres_url: str, redis_namespace: RedisNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _on(redis_namespace, 0, postgres_url, tmp_path / "site")
    for name, value in site.items():
        monkeypatch.setenv(name, value)
    first = site_broker_check(load_settings(), "listener")  # the site's first node records its broker
    assert first is not None
    assert first.status == "ok", first.detail
    _running_listener(pg_store)
    data_dir = tmp_path / "gpu-host"
    data_dir.mkdir()
    (data_dir / "listener.lock").touch()  # the shared data directory, as the listener's host has it

    refused = radtrace("worker", "--queues=dispatch", env=_on(redis_namespace, 1, postgres_url, data_dir))

    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = [line for line in refused.stderr.splitlines() if "check 'site broker' failed" in line]
    assert "this node's broker is Redis database 1" in line, line
    assert "the site's is Redis database 0" in line, line
    assert "listener on pacs-gw-1.hospital.example" in line, line
    assert "RADTRACE_BROKER__URL" in line, line
    assert "not started: start-up checks failed (site broker)" in refused.stderr, refused.stderr
    assert ":6379/1" in line, line
    assert ":6379/0" in line, line

    same = site_broker_check(load_settings(), "worker")  # the site's own database and prefix: started
    assert same is not None
    assert same.status == "ok", same.detail


def test_another_key_prefix_is_refused_and_a_stopped_site_takes_the_new_broker(
    pg_store: Store, postgres_url: str, redis_namespace: RedisNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def check(db: int, prefix: str) -> tuple[str, str]:
        for name, value in _on(redis_namespace, db, postgres_url, tmp_path, prefix).items():
            monkeypatch.setenv(name, value)
        found = site_broker_check(load_settings(), "worker")
        assert found is not None
        return found.status, found.detail

    assert check(0, "site-a:")[0] == "ok"
    assert check(0, "site-b:")[0] == "warning"  # no radtrace process runs: the site was stopped, its broker moved
    _running_listener(pg_store)
    status, detail = check(0, "site-a:")
    assert status == "failed", detail
    assert "key prefix 'site-a:'" in detail, detail
    assert "key prefix 'site-b:'" in detail, detail
    recorded = read_site_setting(pg_store, "broker")
    assert recorded is not None
    assert "site-b:" in recorded.value  # the refused node changed nothing
    assert "worker on" in recorded.recorded_by


def test_the_embedded_broker_and_sqlite_are_not_judged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADTRACE_DATA_DIR", str(tmp_path))
    assert site_broker_check(load_settings(), "worker") is None


def test_a_node_with_other_queue_names_than_the_site_is_refused_naming_each(
    pg_store: Store, postgres_url: str, redis_namespace: RedisNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _on(redis_namespace, 0, postgres_url, tmp_path).items():
        monkeypatch.setenv(name, value)
    first = site_broker_check(load_settings(), "listener")
    assert first is not None
    assert first.status == "ok", first.detail
    _running_listener(pg_store)
    monkeypatch.setenv("RADTRACE_BROKER__GPU_QUEUE", "chest.gpu")  # a GPU host's env file from another site
    monkeypatch.setenv("RADTRACE_BROKER__DISPATCH_QUEUE", "chest.dispatch")

    refused = site_broker_check(load_settings(), "worker")

    assert refused is not None
    assert refused.status == "failed", refused.detail
    assert refused.config_error  # exit 2: not restarted by systemd
    detail = refused.detail
    assert "broker.gpu_queue (RADTRACE_BROKER__GPU_QUEUE) is 'chest.gpu' here, 'radtrace.gpu' on the site" in detail
    assert "broker.dispatch_queue (RADTRACE_BROKER__DISPATCH_QUEUE) is 'chest.dispatch' here, 'radtrace.dispatch'" in (
        detail
    )
    assert "stat_queue (" not in detail  # the same as the site's: not named
    assert "listener on pacs-gw-1.hospital.example" in detail, detail
    recorded = read_site_setting(pg_store, "broker")
    assert recorded is not None
    assert json.loads(recorded.value)["queues"] == {
        "dispatch_queue": "radtrace.dispatch", "gpu_queue": "radtrace.gpu", "stat_queue": "radtrace.gpu.stat"
    }  # fmt: skip

    monkeypatch.setenv("RADTRACE_BROKER__GPU_QUEUE", "radtrace.gpu")
    monkeypatch.setenv("RADTRACE_BROKER__DISPATCH_QUEUE", "radtrace.dispatch")
    same = site_broker_check(load_settings(), "worker")
    assert same is not None
    assert same.status == "ok", same.detail


def test_a_record_made_before_queue_names_were_recorded_is_completed_then_judged(
    pg_store: Store, postgres_url: str, redis_namespace: RedisNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _on(redis_namespace, 0, postgres_url, tmp_path)
    server = env["RADTRACE_BROKER__URL"].split("://", 1)[1].rsplit("/", 1)[0]
    older = json.dumps({"server": server, "db": "0", "key_prefix": redis_namespace.prefix}, sort_keys=True)
    with pg_store.session() as session:  # as radtrace at d3e7351 recorded it: no queue names
        session.execute(sa.insert(SiteSetting).values(
            name="broker", value=older, recorded_at=database_now(session.connection()), recorded_by="listener on a",
        ))  # fmt: skip
    _running_listener(pg_store)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    agrees = site_broker_check(load_settings(), "worker")

    assert agrees is not None
    assert agrees.status == "ok", agrees.detail
    recorded = read_site_setting(pg_store, "broker")
    assert recorded is not None
    assert json.loads(recorded.value)["queues"]["stat_queue"] == "radtrace.gpu.stat"
    monkeypatch.setenv("RADTRACE_BROKER__STAT_QUEUE", "radtrace.stat")
    refused = site_broker_check(load_settings(), "listener")
    assert refused is not None
    assert refused.status == "failed", refused.detail
    assert "broker.stat_queue (RADTRACE_BROKER__STAT_QUEUE) is 'radtrace.stat' here" in refused.detail
