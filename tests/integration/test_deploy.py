"""The split deployment runs: the systemd units' own commands take a study to ``dispatched``; KEDA's list is real.

The commands are read from the ExecStart lines of deploy/systemd (the compose file and the Kubernetes manifests
run the same ones: tests/unit/test_deploy_manifests.py) and started as plain local processes, the installed
binary replaced by this venv's ``radtrace``, on the embedded defaults the single-host units use (SQLite and the
embedded SQLite broker under one data dir) with the tiny model. dcmtk's storescu plays the PACS.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from radtrace.config import load_settings
from radtrace.dicom_listener.dcmtk import echoscu, storescu
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState
from radtrace.testing.services import RedisNamespace, free_port
from radtrace.testing.studies import make_study, write_study
from serve_support import alive, descendants, tiny_service_env, wait_until
from tests_support import radtrace

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT_BINARY = "/opt/radtrace/venv/bin/radtrace"
LONG_RUNNING = ["radtrace-listener.service", "radtrace-worker@.service", "radtrace-dispatcher.service",
                "radtrace-api.service"]  # fmt: skip


def _unit(name: str) -> tuple[list[str], dict[str, str]]:
    """A unit's ExecStart (``%i`` = GPU 0) as argv for this venv, and its Environment= settings."""
    argv: list[str] = []
    environment: dict[str, str] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if line.startswith("ExecStart="):
            words = line.removeprefix("ExecStart=").replace("%i", "0").split()
            assert words[0] == UNIT_BINARY, line
            argv = [sys.executable, "-m", "radtrace", *words[1:]]
        elif line.startswith("Environment="):
            environment.update(word.split("=", 1) for word in line.removeprefix("Environment=").split())
    assert argv, f"{name} has no ExecStart"
    return argv, environment


@contextlib.contextmanager
def _started(
    commands: dict[str, list[str]], env: dict[str, str], logs: Path
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Start each command in its own session; afterwards SIGTERM, then SIGKILL, every process it started."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    seen: set[int] = set()
    try:
        for name, argv in commands.items():
            with (logs / f"{name}.log").open("wb") as log:
                processes[name] = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )  # fmt: skip
        yield processes
    finally:
        for process in processes.values():
            seen |= descendants(process.pid) | {process.pid}
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for pid in seen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


def _revision_states(data_dir: Path) -> list[str]:
    """Every revision's state in the embedded SQLite database of ``data_dir``."""
    store = Store.from_url(f"sqlite:///{data_dir / 'radtrace.db'}")
    try:
        with store.session() as session:
            return [RevisionState(state).value for state in session.scalars(sa.select(Revision.state))]
    finally:
        store.dispose()


def _logs(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(logs.glob("*.log")))


def test_the_systemd_units_commands_take_a_study_from_dicom_to_a_dispatched_sr(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    started = time.monotonic()
    listener_port, api_port = free_port(), free_port()
    drop, logs = tmp_path / "drop", tmp_path / "logs"
    drop.mkdir()
    logs.mkdir()
    study = make_study()
    files = write_study(study, tmp_path / "study")

    unit_environment: dict[str, str] = {}
    for name in ["radtrace-db-upgrade.service", *LONG_RUNNING]:
        unit_environment.update(_unit(name)[1])
    assert unit_environment["RADTRACE_DATA_DIR"] == "/var/lib/radtrace"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    env.update(unit_environment)
    # what /etc/radtrace/radtrace.env would say on a test host
    env |= tiny_service_env(tmp_path / "radtrace", listener_port=listener_port, model_dir=tiny_model_dir,
                            api_port=api_port)  # fmt: skip
    env.update({
        "HF_HOME": str(tmp_path / "hf"),
        "RADTRACE_BROKER__RECONCILE_INTERVAL_S": "2",
        "RADTRACE_DISPATCH__FILE_DROP_DIR": str(drop),
    })  # fmt: skip
    cli_env = {k: env[k] for k in ("RADTRACE_DATA_DIR", "RADTRACE_MODEL__PATH", "RADTRACE_LISTENER__MIN_FREE_BYTES")}

    # radtrace-db-upgrade.service (Type=oneshot) runs first: the others are After= and Requires= it.
    upgrade = subprocess.run(_unit("radtrace-db-upgrade.service")[0], env=env, capture_output=True, text=True,
                             timeout=120, check=False)  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr

    commands = {name: _unit(name)[0] for name in LONG_RUNNING}
    with _started(commands, env, logs) as processes:

        def listening() -> bool:
            assert all(p.poll() is None for p in processes.values()), _logs(logs)
            return echoscu(listener_port, timeout=10).returncode == 0

        wait_until(listening, 60, "the listener answering C-ECHO")
        sent = storescu(files, listener_port)
        assert sent.returncode == 0, sent.stderr

        def dispatched() -> bool:  # read here: a 'radtrace status' per poll was ~2.5 s of CPU each
            assert all(p.poll() is None for p in processes.values()), _logs(logs)
            return _revision_states(Path(cli_env["RADTRACE_DATA_DIR"])) == ["dispatched"]

        try:
            wait_until(dispatched, 60, "the revision dispatched")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_logs(logs)}") from None
        result = radtrace("status", "--json", "--no-broker", env=cli_env)  # and the operator's command says so
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["revisions"].get("dispatched") == 1, result.stdout
        assert list(drop.glob("*.dcm")), "no SR in the file drop"

        # The container health check (deploy/docker/healthcheck.py) says every component is healthy.
        health = [sys.executable, str(ROOT / "deploy" / "docker" / "healthcheck.py")]
        for role in ("listen", "api", "worker"):
            check = subprocess.run([*health, role], env=env, capture_output=True, text=True, timeout=60, check=False)
            assert check.returncode == 0, f"{role}: {check.stderr}"
    assert all(p.poll() is not None for p in processes.values())
    assert time.monotonic() - started < 120


def test_the_list_keda_watches_is_where_the_doorbell_rings(redis_namespace: RedisNamespace) -> None:
    """KEDA's redis triggers name lists; a study rung for inference (routine or STAT) must land in exactly those."""
    import redis

    from radtrace.store.models import Priority
    from radtrace.worker.doorbell import ring_process

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "worker-autoscaling.yaml").read_text()))
    (scaled,) = [doc for doc in docs if doc["kind"] == "ScaledObject"]
    routine, stat = (t["metadata"]["listName"] for t in scaled["spec"]["triggers"])  # for the default empty prefix
    settings = load_settings(broker={"url": redis_namespace.url, "key_prefix": redis_namespace.prefix})
    client = redis.Redis.from_url(redis_namespace.url)
    try:
        assert ring_process(settings, "1.2.826.0.1.3680043.8.498.1", 1)
        assert ring_process(settings, "1.2.826.0.1.3680043.8.498.2", 1, priority=Priority.STAT)
        assert ring_process(settings, "1.2.826.0.1.3680043.8.498.3", 1, priority=Priority.STAT)
        assert client.llen(redis_namespace.prefix + routine) == 1
        assert client.llen(redis_namespace.prefix + stat) == 2
    finally:
        client.close()
