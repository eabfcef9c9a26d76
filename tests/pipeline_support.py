"""radtrace in its production shape for end-to-end tests: ``radtrace serve`` on PostgreSQL and Redis.

:func:`service_env` writes the settings (fast timings, the tiny model, Orthanc as the PACS, an MLLP
receiver as the RIS); :func:`running_service` migrates the database and runs ``radtrace serve``, always
stopping it and everything it started. :class:`Service` finds serve's children (to kill one), reads
revision states straight from the database and waits for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from pipeline_invariants import RevisionSeen, revisions
from radtrace.testing.services import free_port
from serve_support import RunningServe, running_serve, tiny_service_env, wait_until
from tests_support import radtrace

__all__ = ["CALLERS", "Service", "running_service", "service_env"]

#: The listener admits the routing PACS (Orthanc) and dcmtk's storescu playing one.
CALLERS = ("ORTHANC", "PACS")

#: How each child of ``radtrace serve`` shows in its command line.
CHILDREN = {"listener": " listen", "worker": "--queues=gpu", "dispatcher": "--queues=dispatch", "api": " api"}


def service_env(
    data_dir: Path,
    *,
    store_url: str,
    broker_url: str,
    model_dir: Path,
    listener_port: int,
    key_prefix: str = "",
    pacs_port: int | None = None,
    ris_port: int | None = None,
    **overrides: str,
) -> dict[str, str]:
    """``RADTRACE_*`` variables for the whole service; ``overrides`` are further variables (full names)."""
    env = tiny_service_env(
        data_dir, listener_port=listener_port, model_dir=model_dir, api_port=free_port(), callers=CALLERS
    )
    env |= {
        "RADTRACE_STORE__URL": store_url,
        "RADTRACE_STORE__CONNECT_TIMEOUT_S": "3",
        "RADTRACE_BROKER__URL": broker_url,
        "RADTRACE_BROKER__KEY_PREFIX": key_prefix,
        "RADTRACE_BROKER__RECONCILE_INTERVAL_S": "1",
        "RADTRACE_BROKER__OVERDUE_AFTER_S": "2",
        "RADTRACE_BROKER__CLAIM_TIMEOUT_S": "30",  # far longer than one tiny-model reading, even on a busy CPU
        "RADTRACE_BROKER__RETRY_BACKOFF_INITIAL_S": "0.5",
        "RADTRACE_BROKER__RETRY_BACKOFF_MAX_S": "2",
        "RADTRACE_BROKER__MAX_ATTEMPTS": "5",
        "RADTRACE_DISPATCH__BACKOFF_INITIAL_S": "0.5",
        "RADTRACE_DISPATCH__BACKOFF_MAX_S": "2",
        "RADTRACE_DISPATCH__MAX_ATTEMPTS": "40",  # outlasts a destination down for half a minute
    }
    if pacs_port is not None:
        env["RADTRACE_DISPATCH__PACS"] = json.dumps([{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_port}])
    if ris_port is not None:
        env["RADTRACE_DISPATCH__RIS"] = json.dumps({"host": "127.0.0.1", "port": ris_port, "timeout_s": 5})
    return env | overrides


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class Service:
    """A running ``radtrace serve`` and the database it works on."""

    serve: RunningServe
    env: dict[str, str]
    log_file: Path

    @property
    def store_url(self) -> str:
        return self.env["RADTRACE_STORE__URL"]

    def cli(self, *args: str) -> str:
        """Run ``radtrace ARGS`` with the service's settings; fail unless it exits 0; its stdout."""
        result = radtrace(*args, env=self.env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def child(self, name: str, timeout: float = 60) -> int:
        """The PID of serve's child ``name`` (listener, worker, dispatcher, api), waiting for it to be up."""
        found: list[int] = []

        def up() -> bool:
            found[:] = [pid for pid in self.serve.note_children() if CHILDREN[name] in _cmdline(pid)]
            return len(found) == 1

        wait_until(up, timeout, f"serve's {name}", self.log_file)
        return found[0]

    def kill(self, name: str) -> int:
        """kill -9 serve's child ``name``; returns its PID."""
        pid = self.child(name)
        os.kill(pid, signal.SIGKILL)
        return pid

    def revisions(self, study_uid: str | None = None) -> list[RevisionSeen]:
        """Revisions as stored now (of one study, or all); empty while the database is down."""
        try:
            seen = revisions(self.store_url)
        except sa.exc.OperationalError:
            return []
        return [r for r in seen if study_uid is None or r.study_uid == study_uid]

    def wait_for(self, what: str, condition: Callable[[list[RevisionSeen]], bool], timeout: float = 60) -> None:
        """Poll the revisions until ``condition`` holds."""
        wait_until(lambda: condition(self.revisions()), timeout, what, self.log_file)

    def wait_settled(self, study_uid: str, count: int = 1, timeout: float = 60) -> list[RevisionSeen]:
        """Wait until the study has ``count`` revisions, all final; returns them."""

        def settled(seen: list[RevisionSeen]) -> bool:
            mine = [r for r in seen if r.study_uid == study_uid]
            return len(mine) == count and all(r.state.is_final for r in mine)

        self.wait_for(f"{count} final revision(s) of {study_uid}", settled, timeout)
        return self.revisions(study_uid)


@contextlib.contextmanager
def running_service(
    env: dict[str, str], log_file: Path, *, config: Path | None = None, graceful_stop: bool = False
) -> Iterator[Service]:
    """Migrate the database, then run ``radtrace [--config CONFIG] serve`` with ``env`` until the block ends;
    afterwards serve and every process it started are killed at once (kill -9, even when the test failed): no test
    on it asserts anything about stopping, and a graceful stop (``graceful_stop=True``: SIGTERM, the Celery workers'
    warm shutdown) took 8 to 14 s of each on a loaded machine.

    Its children re-read ``config`` when serve restarts them, which lets a test change a setting between a
    child's lives (``RADTRACE_*`` variables win over the file, so leave that setting out of ``env``).
    """
    upgraded = radtrace("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    port = int(env["RADTRACE_LISTENER__PORT"])
    with running_serve(env, log_file, listener_port=port, config=config, ready_timeout=90,
                       graceful_stop=graceful_stop) as serve:  # fmt: skip
        service = Service(serve, env, log_file)
        service.child("worker")
        yield service
