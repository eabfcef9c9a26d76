"""Every metric deploy/prometheus/radtrace-rules.yml's expressions read is one the real radtrace processes serve:
``radtrace listen``, a GPU ``radtrace worker``, a dispatcher (``radtrace worker --queues dispatch``) and
``radtrace audit forward``, each started as a process on its own metrics port and scraped. A metric renamed in the
code (or misspelt in the file) fails this test; the QA API serves no /metrics (operations.md: probe /healthz)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from listener_support import listener_env, start_listener
from prometheus_rules_support import HOST_GROUP, exported_names, load_rules, metric_names
from radtrace.testing.services import free_port

pytestmark = pytest.mark.integration

#: The only metrics a rule may read that radtrace does not serve: node_exporter's, in the host group.
NODE_EXPORTER = frozenset({"node_filesystem_avail_bytes"})


def _scrape(port: int, process: subprocess.Popen[bytes], timeout_s: float = 90) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            if answer.status_code == 200:
                return answer.text
        assert process.poll() is None, f"the process on metrics port {port} ended ({process.returncode})"
        assert time.monotonic() < deadline, f"nothing served on metrics port {port} in {timeout_s} s"
        time.sleep(0.2)


@contextlib.contextmanager
def _radtrace(env: dict[str, str], *args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | env
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "radtrace", *args], stdout=out, stderr=subprocess.STDOUT,
                                   env=environment, start_new_session=True)  # fmt: skip
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


def _other_ports(count: int, taken: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


def _served(tmp_path: Path) -> dict[str, set[str]]:
    """The series names each real process serves on its metrics port."""
    database = f"sqlite:///{tmp_path / 'radtrace.db'}"
    worker_metrics = free_port()  # the dispatcher's is this + 1 (--metrics-offset 1): the others stay clear of it
    listener_port, listener_metrics, atna_metrics, atna_port = _other_ports(4, {worker_metrics, worker_metrics + 1})
    env = listener_env(tmp_path, listener_port, database)
    workers = env | {"RADTRACE_MODEL__BACKEND": "demo", "RADTRACE_MODEL__DEMO": "true", "HF_HUB_OFFLINE": "1",
                     "RADTRACE_BROKER__METRICS_PORT": str(worker_metrics)}  # fmt: skip
    atna = env | {"RADTRACE_ATNA__TRANSPORT": "tcp", "RADTRACE_ATNA__HOST": "127.0.0.1",  # nothing listens there
                  "RADTRACE_ATNA__PORT": str(atna_port),
                  "RADTRACE_ATNA__METRICS_PORT": str(atna_metrics)}  # fmt: skip
    listener = start_listener(env | {"RADTRACE_LISTENER__METRICS_PORT": str(listener_metrics)}, listener_port)
    served: dict[str, set[str]] = {}
    try:
        served["listener"] = exported_names(_scrape(listener_metrics, listener))  # type: ignore[arg-type]
        with (
            _radtrace(workers, "worker", "--queues", "gpu", log=tmp_path / "worker.log") as gpu,
            _radtrace(workers, "worker", "--queues", "dispatch", "--metrics-offset", "1",
                      log=tmp_path / "dispatcher.log") as dispatcher,
            _radtrace(atna, "audit", "forward", log=tmp_path / "atna.log") as forwarder,
        ):  # fmt: skip
            served["worker"] = exported_names(_scrape(worker_metrics, gpu))
            served["dispatcher"] = exported_names(_scrape(worker_metrics + 1, dispatcher))
            served["atna"] = exported_names(_scrape(atna_metrics, forwarder))
    finally:
        listener.send_signal(signal.SIGTERM)
        listener.communicate(timeout=30)
    return served


def test_every_metric_the_rules_read_is_served_by_a_real_radtrace_process(tmp_path: Path) -> None:
    served = _served(tmp_path)
    everything = set().union(*served.values())
    assert "radtrace_listener_rejections_total" in served["listener"]
    assert "radtrace_model_server_unavailable" in served["worker"]
    assert "radtrace_outbox_messages" in served["dispatcher"]
    assert "radtrace_atna_backlog_events" in served["atna"]
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            allowed = NODE_EXPORTER if group["name"] == HOST_GROUP else everything
            missing = names - allowed
            assert not missing, f"{rule['alert']} reads {sorted(missing)}, which no radtrace process serves"
