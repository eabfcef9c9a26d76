"""This process's row in ``nodes`` (:mod:`radtrace.store.nodes`) and the watch on the database's floor
(:mod:`radtrace.store.floor`), while a long-running process runs."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable

from radtrace.errors import RadtraceError
from radtrace.store.engine import Store
from radtrace.store.floor import running_problem
from radtrace.store.nodes import NODE_STALE_S, WATCH_INTERVAL_S, register_node, remove_node, renew_node

__all__ = ["NodeWatch"]

log = logging.getLogger(__name__)


class NodeWatch:
    """This process's row in ``nodes`` and the watch on the floor, while a long-running process runs.

    :meth:`start` writes the row (after the start-up checks) and starts a daemon thread that every ``interval_s``
    renews it and asks :func:`radtrace.store.floor.running_problem`. When this code may no longer work on the database
    (a newer radtrace raised the floor or migrated it), the thread logs one line saying both versions and what to do,
    removes the row and calls ``on_incompatible`` with the reason, once; by default that sends this process SIGTERM,
    which every radtrace service takes as ``systemctl stop``: no new work, what is in hand finished (a worker's study,
    a listener's association) or, cut short, taken up again by a node that may run (the claims expire; at least once).
    A database that does not answer is waited out (the services say that themselves). :meth:`stop` (also at exit)
    removes the row. The row says ``interval_s`` and ``stale_after_s`` (``store.node_watch_interval_s``,
    ``store.node_stale_after_s``): whoever judges it (``radtrace db upgrade``) takes it for ended only once it has not
    been renewed for that long (:func:`radtrace.store.nodes.live_nodes`)."""

    def __init__(
        self,
        store_url: str,
        role: str,
        *,
        interval_s: float = WATCH_INTERVAL_S,
        stale_after_s: float = NODE_STALE_S,
        on_incompatible: Callable[[str], None] | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.store_url, self.role, self.interval_s, self.stale_after_s = store_url, role, interval_s, stale_after_s
        self.on_incompatible = on_incompatible or _stop_this_process
        self.node_id = uuid.uuid4().hex
        self.problem: str | None = None
        self._connect_timeout_s = connect_timeout_s
        self._store: Store | None = None
        self._stopped = threading.Event()
        self._checking = threading.Lock()
        self._thread: threading.Thread | None = None
        self._registered = False

    def start(self) -> NodeWatch:
        """Write this process's row and start watching (idempotent)."""
        if self._thread is not None:
            return self
        self._store = Store.from_url(self.store_url, pool_size=1, connect_timeout_s=self._connect_timeout_s)
        with contextlib.suppress(RadtraceError):  # the database away: the thread writes it at its first beat
            register_node(self._store, self.node_id, self.role, **self._limits())
            self._registered = True
        self._thread = threading.Thread(target=self._run, name=f"radtrace-node-watch-{self.role}", daemon=True)
        self._thread.start()
        atexit.register(self.stop)
        return self

    def _limits(self) -> dict[str, float]:
        return {"interval_s": self.interval_s, "stale_after_s": self.stale_after_s}

    def check(self) -> str | None:
        """One beat: renew the row and compare this code with the database; the reason it may not work on it, or
        None. Acts (the log line, ``on_incompatible``) the first time a reason is found, once however many threads
        ask (serve's supervisor asks too when a child exits)."""
        with self._checking:
            return self._check()

    def _check(self) -> str | None:
        store = self._store
        if store is None or self.problem is not None:
            return self.problem
        try:
            if self._registered:
                renew_node(store, self.node_id, self.role, **self._limits())
            else:
                register_node(store, self.node_id, self.role, **self._limits())
                self._registered = True
            problem = running_problem(store)
        except RadtraceError as exc:
            log.debug("node watch: %s", exc.reason)
            return None
        if problem is None:
            return None
        self.problem = problem
        log.error("%s. This %s (pid %d) stops taking work now; what it has in hand is finished, or taken up again by "
                  "an upgraded node", problem, self.role, os.getpid())  # fmt: skip
        self._remove_row()
        self.on_incompatible(problem)
        return problem

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            if self.check() is not None:
                return

    def _remove_row(self) -> None:
        if self._store is not None and self._registered:
            with contextlib.suppress(RadtraceError):
                remove_node(self._store, self.node_id)
            self._registered = False

    def stop(self) -> None:
        """Stop watching and remove this process's row (idempotent)."""
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._connect_timeout_s + 5)
        self._remove_row()
        if self._store is not None:
            self._store.dispose()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


def _stop_this_process(_problem: str) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
