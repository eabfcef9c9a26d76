"""``radtrace worker``: one Celery worker process, with the reconciler beside it.

A worker that takes the GPU queue owns one GPU (``--gpu N`` sets ``CUDA_VISIBLE_DEVICES``), loads the
model once before taking work and runs the *solo* pool: one study at a time, prefetch 1. A worker on
the dispatch queue alone runs a thread pool. The reconciler runs in a daemon thread of every worker:
its start-up pass rings everything due, later passes what is overdue (duplicates are harmless).

Weights that are there but cannot be loaded (:class:`~radtrace.errors.ModelFilesError`: a truncated file, a
configuration that does not fit them) are said once, naming the fault, and the worker waits for the files in the
model directory to change before it loads again (:func:`warm_when_loadable`); it takes no work meanwhile, so studies
wait in ``queued``. Before, it exited, and ``serve`` restarted it with backoff for ever, loading the model each time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from radtrace.config import Settings
from radtrace.config_reference import mask_url_password
from radtrace.errors import ConfigError, ModelFilesError

if TYPE_CHECKING:
    from radtrace.worker.tasks import WorkerRuntime

__all__ = ["QUEUE_ROLES", "WEIGHTS_RECHECK_S", "queue_names", "run_worker", "warm_when_loadable"]

log = logging.getLogger(__name__)

QUEUE_ROLES = ("gpu", "dispatch")
#: How often a worker waiting for weights that cannot be loaded looks whether their directory changed.
WEIGHTS_RECHECK_S = 10.0
#: How long a stopped worker waits for its reconciler's pass under way before it exits. A pass cut there loses nothing:
#: each release of a dead claim is its own transaction (rolled back when cut), and a row released but not rung yet is
#: overdue at the next pass of any reconciler.
RECONCILER_JOIN_S = 1.0


def queue_names(settings: Settings, roles: Sequence[str]) -> list[str]:
    """The broker queue names for ``roles`` (``gpu``, ``dispatch``; ``io`` is an alias of ``dispatch``), in the
    order they are taken: ``gpu`` is the STAT queue, then the routine one."""
    broker = settings.broker
    names = {"gpu": [broker.stat_queue, broker.gpu_queue], "dispatch": [broker.dispatch_queue],
             "io": [broker.dispatch_queue]}  # fmt: skip
    unknown = [role for role in roles if role not in names]
    if unknown or not roles:
        raise ConfigError(f"--queues must name gpu and/or dispatch, not {', '.join(unknown) or 'nothing'}")
    return list(dict.fromkeys(name for role in roles for name in names[role]))


def run_worker(
    settings: Settings,
    *,
    roles: Sequence[str] = QUEUE_ROLES,
    gpu: int | None = None,
    concurrency: int = 4,
    reconcile: bool = True,
    metrics_offset: int = 0,
) -> None:
    """Run a worker until SIGTERM (Celery's warm shutdown finishes the study in hand).

    With ``broker.metrics_port`` set, its Prometheus metrics are on that port plus ``metrics_offset``.
    """
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)  # before torch is imported: cuda:0 is this GPU
    from radtrace.limits import apply_memory_ceiling

    apply_memory_ceiling(settings.model.worker_memory_limit_bytes)  # one bomb fails one study, not the host
    from radtrace.worker.app import create_app
    from radtrace.worker.reconciler import Reconciler

    queues = queue_names(settings, roles)
    app = create_app(settings)
    runtime: WorkerRuntime = app.conf.radtrace_runtime
    takes_gpu = settings.broker.gpu_queue in queues
    if takes_gpu and not _warm_until_stopped(runtime):
        return  # stopped (SIGTERM) while waiting for loadable weights: nothing was taken
    reconciler = Reconciler(settings, runtime.pipeline.store).start() if reconcile else None
    if settings.broker.metrics_port is not None:
        from radtrace.worker.metrics import serve_metrics

        serve_metrics(settings, runtime.pipeline.store, runtime.metrics, settings.broker.metrics_port + metrics_offset)
    name = f"radtrace-{'gpu' if takes_gpu else 'dispatch'}{'' if gpu is None else gpu}@{socket.gethostname()}"
    pool, workers = ("solo", 1) if takes_gpu else ("threads", concurrency)
    argv = [
        "--quiet",  # celery's own option: no banner (40 lines that pushed serve's next steps off the screen)
        "worker",
        f"--queues={','.join(queues)}",
        f"--pool={pool}",
        f"--concurrency={workers}",
        f"--hostname={name}-{os.getpid()}",
        f"--loglevel={settings.logging.level}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    log.info("worker %s taking %s (%s pool of %d; broker %s)", name, ", ".join(queues), pool, workers,
             mask_url_password(settings.broker_url))  # fmt: skip
    app.worker_main(argv)  # returns once Celery's warm shutdown has finished what was in hand
    # The caller ends the process without the interpreter's teardown (radtrace.process_exit): stop and close first.
    if reconciler is not None:
        thread, stop = reconciler
        stop.set()
        thread.join(timeout=RECONCILER_JOIN_S)
    runtime.pipeline.store.dispose()


def _warm_until_stopped(runtime: WorkerRuntime) -> bool:
    """:func:`warm_when_loadable`, its wait (only the wait: Ctrl-C during a load still interrupts it) ended by
    SIGTERM or SIGINT; Celery installs its own handlers afterwards."""
    return warm_when_loadable(runtime, threading.Event(), catch_signals=True)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def warm_when_loadable(runtime: WorkerRuntime, stop: threading.Event, *, catch_signals: bool = False) -> bool:
    """Load the model; while its files are there but cannot be loaded, say why once (each distinct fault) and wait
    for the model directory to change (names, sizes, modification times), then load again. True once loaded; False
    when ``stop`` is set first (with ``catch_signals``, by SIGTERM or SIGINT during the wait; main thread only). Any
    other failure (missing weights, no such CUDA device) is raised as before.
    """
    from radtrace.model.loading import checkpoint_fingerprint

    said = ""
    while True:
        try:
            runtime.warm()
        except ModelFilesError as exc:
            fingerprint = checkpoint_fingerprint(exc.directory)
            if exc.reason != said:
                log.error(
                    "%s. This worker takes no studies (they wait in 'queued') until the files in %s change: replace "
                    "the damaged file (it is checked every %.0f s)", exc.reason, exc.directory, WEIGHTS_RECHECK_S,
                )  # fmt: skip
                said = exc.reason
            with _stop_on_signals(stop) if catch_signals else contextlib.nullcontext():
                while checkpoint_fingerprint(exc.directory) == fingerprint:
                    if stop.wait(WEIGHTS_RECHECK_S):
                        log.info("stopped while waiting for model weights that can be loaded")
                        return False
            log.info("the files in %s changed: loading the model again", exc.directory)
            continue
        if said:
            log.info("model loaded: this worker takes studies now")
        return True
