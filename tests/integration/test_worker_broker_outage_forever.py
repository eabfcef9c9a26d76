"""A worker waits out a Redis outage of any length instead of exiting when Celery's reconnect tries run out.

Found trying radtrace's workers through a Redis outage: Celery's consumer reconnects ``broker_connection_max_retries``
times (default 100, 2 s apart doubling by 2 s to 30 s: about 46 minutes in all) and then ends the worker with
"CRITICAL Unrecoverable error: OperationalError(...)" and a traceback, exit 1 (measured with a plain Celery worker
on its own redis-server with the limit at 2: 4 s after the kill, exit=1). radtrace did not set it, so a Redis outage of
an hour (a night's maintenance, a node reboot) ended every GPU and dispatch worker; serve's supervisor and the
systemd units restart them, a Kubernetes pod goes into CrashLoopBackOff, and each exit wrote a traceback instead of the
one "Cannot connect … Trying again in 30.00 seconds" line per try. The README says workers "start and wait those out".

The 46 minutes cannot be waited for in a test: this checks the setting on the app every worker runs (the real
``create_app`` of both broker kinds), and that Celery reads it as "no limit".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radtrace.config import load_settings
from radtrace.worker.app import create_app

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("broker", [None, "redis://127.0.0.1:6379/0"])
def test_the_worker_app_retries_the_broker_without_limit(tmp_path: Path, broker: str | None) -> None:
    settings = load_settings(data_dir=tmp_path, **({"broker": {"url": broker}} if broker else {}))
    app = create_app(settings, with_tasks=False)
    assert app.conf.broker_connection_retry is True
    assert app.conf.broker_connection_max_retries is None  # kombu's ensure_connection: None is "retry for ever"
