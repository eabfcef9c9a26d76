"""A worker started on a full disk waits for space instead of exiting into a restart loop.

``radtrace worker`` runs the start-up checks (:func:`radtrace.preflight.run_preflight`) and exits 1 when one fails.
On a full data disk they all fail (the write probes of the data directory, spool and quarantine, the embedded
database's migration), so under systemd (``Restart=on-failure``, ``RestartSec=5``) a worker killed or restarted
while the disk is full was started again every 5 s, for as long as the disk stayed full, each time loading radtrace
and saying the same three failures. Now, while checks fail and less than
:data:`~radtrace.worker.disk_space.FLOOR_BYTES` is free where the data directory is, the worker says so in one line
('disk full: <data_dir>, N MB free: the worker starts once there is space …') and runs the checks again after 5 s,
doubling up to 60 s; once they pass it starts (one line), and a failure that is not the disk ends it as before.

``listener.min_free_bytes`` (2 GiB, the free space below which the listener refuses studies) is the listener's
limit: below it the ``free disk space`` check is a warning for a worker, which reads what the free space holds for
drafts and lets the rest wait, not read (:mod:`radtrace.worker.disk_space`).

``radtrace listen`` uses the same function (``service="listener"``). Below ``listener.min_free_bytes`` it starts,
bound, and refuses as it does when the disk fills while it runs: each association A-ASSOCIATE-RJ rejected-transient,
temporary congestion ('spool disk nearly full', audited ``association_rejected`` per source and port), a C-STORE in
an association already agreed 0xA700. The PACS is told why and that it is transient, and retries as its queue says.
It exited 1 there before, so systemd started it again every 5 s for as long as the disk stayed low, the PACS seeing
a closed port. Only where its start-up checks cannot pass (under 1 MiB free: nothing can be staged or audited) does it
wait, the port closed, as the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from radtrace.worker.disk_space import FLOOR_BYTES, disk_full_line, free_bytes

if TYPE_CHECKING:
    from radtrace.config import Settings
    from radtrace.preflight import Check

__all__ = ["start_checks", "worker_start_checks"]

log = logging.getLogger(__name__)

FIRST_WAIT_S: Final = 5.0
LONGEST_WAIT_S: Final = 60.0


#: What each service does below ``listener.min_free_bytes`` (the ``free disk space`` check is then a warning).
_BELOW_LIMIT: Final = {
    "worker": "the worker reads what the free space holds for drafts, the rest wait, not read",
    "listener": "the listener starts and refuses associations (rejected-transient, temporary congestion; a C-STORE "
    "0xA700), audited, until there is space, as when the disk fills while it runs",
}


def _for_service(check: Check, service: str) -> Check:
    if check.name == "free disk space" and check.status == "failed":
        return replace(check, status="warning", detail=f"{check.detail}; {_BELOW_LIMIT[service]}")
    return check


def _disk_full(settings: Settings) -> bool:
    try:
        return free_bytes(settings.data_dir) < FLOOR_BYTES
    except OSError:
        return False


def worker_start_checks(
    settings: Settings, run: Callable[[Settings], list[Check]], *, sleep: Callable[[float], None] = time.sleep
) -> list[Check]:
    """The worker's start-up checks (``run``), run again while they fail on a full data disk (see the module)."""
    return start_checks(settings, run, service="worker", sleep=sleep)


def start_checks(
    settings: Settings,
    run: Callable[[Settings], list[Check]],
    *,
    service: str,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Check]:
    """``service``'s (``worker`` or ``listener``) start-up checks (``run``), the ``free disk space`` check a warning,
    run again while they fail on a full data disk (see the module)."""
    wait, since = FIRST_WAIT_S, None
    while True:
        checks = [_for_service(check, service) for check in run(settings)]
        failed = [check for check in checks if check.status == "failed"]
        if not failed or not _disk_full(settings):
            if since is not None and not failed:
                log.warning("disk space again where %s is; the %s starts after %.0f s", settings.data_dir, service,
                            time.monotonic() - since)  # fmt: skip
            return checks
        if since is None:
            since = time.monotonic()
            log.warning("%s: the %s starts once there is space (its start-up checks: %s; run again every %g s to "
                        "%g s)", disk_full_line(settings.data_dir), service,
                        "; ".join(f"{check.name}: {check.detail}" for check in failed), FIRST_WAIT_S,
                        LONGEST_WAIT_S)  # fmt: skip
        sleep(wait)
        wait = min(2 * wait, LONGEST_WAIT_S)
