"""``radtrace listen`` started on a full data disk (a real 16 MiB tmpfs; the work database elsewhere, as with
PostgreSQL). It exited 1 (its start-up checks: no space left on device), so systemd started it again every 5 s for as
long as the disk stayed full. Now it waits with one line, the port closed (nothing could be staged or audited), and
starts once there is space; below listener.min_free_bytes it then refuses associations (transient, audited) as a
running listener does, and takes studies once the disk is above the limit, with no restart.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from listener_support import audit_payloads, listener_env
from radtrace.dicom_listener.dcmtk import echoscu, storescu
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from tests_support import fill_file_system, small_tmpfs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("echoscu") is None, reason="dcmtk is not installed"),
]

NIH = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
MB = 1 << 20
T = TypeVar("T")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "radtrace") as mounted:
        yield mounted


def _until(what: str, condition: Callable[[], T], process: subprocess.Popen[bytes], log_file: Path) -> T:
    """``condition()`` once it is truthy, within 60 s, ``radtrace listen`` still running."""
    deadline = time.monotonic() + 60
    while not (found := condition()):
        assert process.poll() is None, f"listen exited {process.returncode}:\n{log_file.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what}:\n{log_file.read_text()[-3000:]}"
        time.sleep(0.3)
    return found


def test_listen_on_a_full_disk_waits_with_the_port_closed_and_starts_once_there_is_space(
    tmp_path: Path, data_dir: Path, listener_port: int
) -> None:
    database_url = f"sqlite:///{tmp_path / 'work.db'}"
    store = Store.from_url(database_url)
    upgrade(store)
    env = listener_env(tmp_path, listener_port, database_url) | {
        "RADTRACE_DATA_DIR": str(data_dir),
        "RADTRACE_LISTENER__MIN_FREE_BYTES": str(8 * MB),
    }
    filler = fill_file_system(data_dir)
    assert os.statvfs(data_dir).f_bavail == 0
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | env
    log_file = tmp_path / "listen.log"
    with log_file.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "radtrace", "listen"], env=environment, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _until("waiting line", lambda: "the listener starts once there is space" in log_file.read_text(),
                         process, log_file)  # fmt: skip
        time.sleep(6)  # past the first re-run of its checks (5 s): still waiting, still up, port closed
        closed = echoscu(listener_port, timeout=10)
        # Space below listener.min_free_bytes (4 of 16 MiB): its checks pass, it starts and refuses as when running.
        os.truncate(filler, os.path.getsize(filler) - 4 * MB)
        refused = _until("transient refusal", lambda: (e := echoscu(listener_port, timeout=10)).returncode != 0
                         and "Rejected Transient" in e.stderr and e, process, log_file)  # fmt: skip
        # Space above the limit: studies are taken, by the same process.
        filler.unlink()
        _until("echo", lambda: echoscu(listener_port, timeout=10).returncode == 0, process, log_file)
        stored = storescu([NIH], listener_port, options=["-v"])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    log = log_file.read_text()
    assert process.returncode == 0, log
    assert closed.returncode != 0, closed.stderr
    assert "Rejected" not in closed.stderr, closed.stderr  # nothing answered: the port was closed
    assert "Temporary Congestion" in refused.stderr, refused.stderr
    assert "Received Store Response (Success)" in stored.stderr, stored.stderr
    waits = [line for line in log.splitlines() if "the listener starts once there is space" in line]
    assert len(waits) == 1, log
    assert "disk full:" in waits[0], waits[0]
    assert "No space left on device" in waits[0], waits[0]
    assert "disk space again" in log, log
    assert "Traceback" not in log, log
    reasons = {json.loads(p)["reason"] for p in audit_payloads(store, "association_rejected")}
    assert "spool disk nearly full" in reasons, reasons
    assert len(audit_payloads(store, "instance_received")) == 1
    assert len(audit_payloads(store, "application_started")) == 1
    store.dispose()
