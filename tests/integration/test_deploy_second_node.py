"""A second host of a site (PostgreSQL and Redis shared) whose data directory is not the listener's is refused at start.

Found by following deploy/README.md and docs/operations.md as hospital IT would, with node A running the listener
(+ dispatcher, QA API) and node B a GPU worker alone, each with its own RADTRACE_* settings: node B's
RADTRACE_DATA_DIR was a local folder (the NFS mount not made), every start-up check passed, and the real NIH film
sent to node A failed at its first attempt on node B with "spooled instance … cannot be read: No such file or
directory". The same node B with node A's data directory mounted at another path read it to a draft.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.config import load_settings
from radtrace.preflight import Service, run_preflight
from radtrace.preflight.check import Check
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Revision, RevisionState
from radtrace.store.nodes import live_nodes
from radtrace.testing.services import RedisNamespace, free_port
from serve_support import wait_until
from tests_support import radtrace

pytestmark = pytest.mark.integration

FILM = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"


def _node_env(data_dir: Path, postgres_url: str, redis: RedisNamespace, port: int) -> dict[str, str]:
    """One host's settings, as its /etc/radtrace/radtrace.env would hold them."""
    return {
        "RADTRACE_DATA_DIR": str(data_dir),
        "RADTRACE_STORE__URL": postgres_url,
        "RADTRACE_BROKER__URL": redis.url,
        "RADTRACE_BROKER__KEY_PREFIX": redis.prefix,
        "RADTRACE_LISTENER__HOST": "127.0.0.1",
        "RADTRACE_LISTENER__PORT": str(port),
        "RADTRACE_LISTENER__ACCEPT_UNKNOWN_CALLERS": "true",
        "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
        "RADTRACE_MODEL__BACKEND": "demo",
        "RADTRACE_MODEL__DEMO": "true",
    }


@contextlib.contextmanager
def _running(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``radtrace ARGS`` with one host's settings, as its unit starts it; SIGTERM (then SIGKILL) at the end."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | env
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "radtrace", *args], stdout=out, stderr=subprocess.STDOUT,
                                   env=environment, stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _check(name: str, env: dict[str, str], service: Service = "worker", **model: object) -> Check:
    """Check ``name`` of the start-up checks ``service`` runs with this host's settings (``model`` in place of the
    demo backend)."""
    broker = {"url": env["RADTRACE_BROKER__URL"], "key_prefix": env["RADTRACE_BROKER__KEY_PREFIX"]}
    settings = load_settings(data_dir=Path(env["RADTRACE_DATA_DIR"]), store={"url": env["RADTRACE_STORE__URL"]},
                             broker=broker, model=model or {"backend": "demo", "demo": True})  # fmt: skip
    checks = {check.name: check for check in run_preflight(settings, service=service)}
    assert name in checks, sorted(checks)
    return checks[name]


def _shared_check(env: dict[str, str], service: Service = "worker") -> Check:
    return _check("shared data directory", env, service)


def test_a_worker_host_whose_data_directory_is_not_the_listeners_is_refused_naming_what_to_mount(
    tmp_path: Path, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    port = free_port()
    node_a = _node_env(tmp_path / "node-a" / "data", postgres_url, redis_namespace, port)
    local_b = _node_env(tmp_path / "node-b" / "data", postgres_url, redis_namespace, port)  # the mount not made
    mounted_b = _node_env(node_a["RADTRACE_DATA_DIR"], postgres_url, redis_namespace, port)
    assert radtrace("db", "upgrade", env=node_a).returncode == 0
    store = Store.from_url(postgres_url)
    try:
        with _running(node_a, tmp_path / "listen.log", "listen") as listener:
            wait_until(lambda: any(node.role == "listener" for node in live_nodes(store)), 60, "listener's nodes row",
                       tmp_path / "listen.log")  # fmt: skip

            before = _shared_check(local_b)  # nothing received yet: the running listener's lock says it
            assert (before.status, before.config_error) == ("failed", True), before
            assert f"listener on {os.uname().nodename} (pid {listener.pid}" in before.detail
            assert f"{local_b['RADTRACE_DATA_DIR']}/listener.lock is not there" in before.detail
            assert "mount the storage the listener's host writes" in before.detail
            assert _shared_check(mounted_b).status == "ok"

            sent = radtrace("send", "--port", str(port), str(FILM), env=node_a)
            assert sent.returncode == 0, sent.stdout + sent.stderr

            def received() -> bool:
                with store.session() as session:
                    return session.scalar(sa.select(sa.func.count()).select_from(Instance)) == 1

            wait_until(received, 30, "the film's instances row", tmp_path / "listen.log")

        # the listener stopped: the spooled film itself says which data directory is the listener's
        after = _shared_check(local_b, service="dispatcher")
        assert (after.status, after.config_error) == ("failed", True), after
        assert after.detail.startswith(f"{local_b['RADTRACE_DATA_DIR']}/spool holds none of the 1 newest instances")
        assert f"this host's data directory {local_b['RADTRACE_DATA_DIR']} is not the one the listener writes" in (
            after.detail
        )
        assert _shared_check(mounted_b, service="api").status == "ok"

        worker = radtrace("worker", "--queues=gpu", "--no-reconcile", "--gpu", "0", env=local_b, timeout=90)
        assert worker.returncode == 2, worker.stdout + worker.stderr  # the units do not restart it (exit 2)
        assert "start-up check 'shared data directory' failed" in worker.stderr
    finally:
        store.dispose()


def test_a_site_on_sqlite_has_no_shared_data_directory_to_check(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "var")
    assert "shared data directory" not in {check.name for check in run_preflight(settings, service="worker")}


def test_a_gpu_worker_host_set_up_with_other_model_settings_than_the_running_workers_is_warned_at_start(
    tmp_path: Path, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    """Node B reads with the demo backend (left on from the first setup); node C is set up for the real model with
    another token limit. Before, node C's checks passed, and the site's drafts came from two models by chance of
    which worker took each study."""
    port = free_port()
    node_a = _node_env(tmp_path / "data", postgres_url, redis_namespace, port) | {
        "RADTRACE_LISTENER__SETTLE_SECONDS": "1"
    }
    assert radtrace("db", "upgrade", env=node_a).returncode == 0
    store = Store.from_url(postgres_url)

    def reported() -> bool:
        with store.session() as session:
            return session.scalar(sa.select(sa.func.count()).where(Revision.state == RevisionState.REPORTED)) == 1

    try:
        with (
            _running(node_a, tmp_path / "listen.log", "listen"),
            _running(node_a, tmp_path / "worker-b.log", "worker", "--queues=gpu", "--no-reconcile", "--gpu", "0"),
        ):
            wait_until(lambda: {"listener", "worker"} <= {node.role for node in live_nodes(store)}, 60,
                       "the listener's and node B's worker's nodes rows", tmp_path / "worker-b.log")  # fmt: skip
            none_read = _check("model settings across workers", node_a, backend="transformers")
            assert (none_read.status, none_read.detail) == ("ok", "the 1 running GPU worker(s) read nothing yet")
            sent = radtrace("send", "--port", str(port), str(FILM), env=node_a)
            assert sent.returncode == 0, sent.stdout + sent.stderr
            wait_until(reported, 90, "the film read to a draft on node B", tmp_path / "worker-b.log")

            other = _check("model settings across workers", node_a, backend="transformers", max_new_tokens=48)
            assert other.status == "warning", other
            assert other.detail.startswith(f"worker on {os.uname().nodename} (pid ")
            assert "read with backend 'transformers' here, 'demo' there" in other.detail
            assert "set the same RADTRACE_MODEL__* on every GPU worker" in other.detail
            same = _check("model settings across workers", node_a)
            assert (same.status, same.detail) == ("ok", "as the newest readings of the 1 running GPU worker(s)")
    finally:
        store.dispose()
