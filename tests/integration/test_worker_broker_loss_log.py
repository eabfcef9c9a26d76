"""A worker that loses its Redis says so in Celery's one line, without Celery's six-line deprecation notice.

Found stopping the site's Redis under ``radtrace serve`` (PostgreSQL + Redis): each worker logged "Connection to
broker lost. Trying to re-establish the connection..." and then a ``py.warnings`` WARNING, escaped into one line of
about 700 characters, that "In Celery 5.1 we introduced an optional breaking change which on connection loss cancels
all currently executed tasks with late acknowledgement enabled…" and names a setting: nothing an operator can act
on in the middle of an outage (radtrace keeps Celery's behaviour: a reading in hand is finished, its claim is in the
database). Celery warns whatever that setting says, so the worker filters that one warning.

Here: ``radtrace worker --queues=dispatch`` (no model needed) on a redis-server of its own, which the test kills.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from private_servers import private_redis
from tests_support import radtrace

pytestmark = pytest.mark.integration


def _wait_for(log: Path, text: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return True
        time.sleep(0.2)
    return False


def test_broker_lost_is_one_celery_line_without_the_deprecation_notice(tmp_path: Path) -> None:
    data = tmp_path / "var"
    log = tmp_path / "worker.log"
    with private_redis(tmp_path / "redis") as broker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
        env |= {"RADTRACE_DATA_DIR": str(data), "RADTRACE_BROKER__URL": broker.url}
        upgraded = radtrace("db", "upgrade", env={"RADTRACE_DATA_DIR": str(data)}, cwd=tmp_path)
        assert upgraded.returncode == 0, upgraded.stderr
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "radtrace", "worker", "--queues=dispatch", "--concurrency=1", "--no-reconcile"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
            )  # fmt: skip
        try:
            assert _wait_for(log, "taking radtrace.dispatch", 60), log.read_text(errors="replace")
            time.sleep(3)  # its consumer connected (the line comes first): a loss now is a loss "after connected"
            broker.stop()
            assert _wait_for(log, "Connection to broker lost", 30), log.read_text(errors="replace")
            assert _wait_for(log, "Trying again in", 15), log.read_text(errors="replace")  # its next retry line
        finally:
            worker.terminate()
            worker.wait(30)
    said = log.read_text(errors="replace")
    assert "In Celery 5.1 we introduced" not in said
    assert "CPendingDeprecationWarning" not in said
