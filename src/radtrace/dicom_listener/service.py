"""``radtrace listen``: run the listener until SIGTERM/SIGINT, in one or several processes.

With ``listener.processes`` > 1 the parent forks that many children before opening any database
connection or thread; each binds the same port (and ``listener.plain_port``, if set) with ``SO_REUSEPORT`` and
runs its own listener and completion timer (completing a revision re-checks its state under the study's lock, so
two timers never complete one twice). They count associations per source, and spend each source's negotiation
CPU budget, together (:class:`~radtrace.dicom_listener.shared_counts.SharedSourceCounts`, made before the fork).
Each child is sent SIGTERM if the parent ends, even by kill -9 (:func:`_end_with`). The parent forwards signals,
clears the association counts of a child that exited (a budget holds nothing of one process's to clear), and
exits when the children have.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from types import FrameType

from radtrace.config import Settings
from radtrace.dicom_listener.ae import Listener
from radtrace.dicom_listener.metrics import ListenerMetrics
from radtrace.dicom_listener.shared_counts import SharedSourceCounts
from radtrace.metrics_server import start_metrics_server
from radtrace.parent_death import ending_with_parent
from radtrace.store.engine import Store

__all__ = ["run_listener", "run_listener_processes"]

log = logging.getLogger(__name__)


def run_listener(settings: Settings, index: int = 0, source_counts: SharedSourceCounts | None = None) -> None:
    """Run one listener process until SIGTERM or SIGINT (blocking); ``index`` is its row in ``source_counts``."""
    if source_counts is not None:
        source_counts.attach(index)
    store = Store.from_url(
        settings.store_url, pool_size=settings.store.pool_size, connect_timeout_s=settings.store.connect_timeout_s
    )
    metrics = ListenerMetrics()
    if settings.listener.metrics_port is not None:
        # Unauthenticated: bound where the listener is (or listener.metrics_host), never wider by default; every
        # scraper bounded in connections and time (prometheus_client's own server held a thread per slow peer).
        start_metrics_server(
            settings.listener.metrics_port + index, addr=settings.listener.metrics_bind_host, registry=metrics.registry
        )
    listener = Listener(
        settings,
        store,
        metrics=metrics,
        redirect_tempdir=True,
        source_counts=source_counts,
        plain_port=settings.listener.plain_port,
    )
    stopping = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("listener stopping on signal %d", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    listener.start()
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        listener.stop()
        store.dispose()


def run_listener_processes(settings: Settings) -> int:
    """Run ``listener.processes`` listener processes sharing the port; returns an exit status."""
    count = settings.listener.processes
    if count == 1:
        run_listener(settings)
        return 0
    listener = settings.listener
    source_counts = SharedSourceCounts(count, listener.max_associations + listener.max_half_open + 1)
    children: list[int] = []
    # Each child stops as on systemctl stop when this process ends, even by kill -9: otherwise the orphans went on
    # serving both ports and holding the locks inherited at fork, and a radtrace listen started again was refused
    # as "another radtrace listener (pid <the dead parent>)" until someone found and killed them.
    follow_parent = ending_with_parent(signal.SIGTERM)
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                if refused := follow_parent():
                    log.warning("listener process cannot follow its parent (prctl: errno %d)", refused)
                run_listener(settings, index, source_counts)
            except BaseException:
                log.exception("listener process %d failed", index)
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        children.append(pid)

    running = dict(zip(children, range(count), strict=True))

    def _forward(signum: int, _frame: FrameType | None) -> None:
        for child in list(running):  # not one already reaped: its PID may be another process's now
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    worst = 0
    while running:  # whichever child ends first: its associations no longer count against their sources
        pid, status = os.wait()
        if pid not in running:
            continue
        index = running.pop(pid)
        source_counts.clear(index)
        code = os.waitstatus_to_exitcode(status) if status else 0
        if code:
            log.warning("listener process %d exited with %d; %d left", index, code, len(running))
        worst = max(worst, code)
    return 1 if worst else 0
