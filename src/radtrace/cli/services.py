"""The long-running commands: ``serve``, ``listen``, ``worker``, ``api`` (``send``, a client, is in send_command)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from radtrace.cli.common import EXIT_FAILED, EXIT_USAGE, app, fail, open_store, out, settings_of
from radtrace.cli.interrupt import EXIT_INTERRUPTED, hand_over
from radtrace.cli.startup import say_checks
from radtrace.errors import ConfigError, ModelLoadError, RadtraceError
from radtrace.process_exit import end_process

# The start-up checks (radtrace.preflight) and each service are imported by the command that runs them: importing
# them here cost every radtrace command, 'radtrace --help' included, their imports (SQLAlchemy, TLS, metrics).
if TYPE_CHECKING:
    from radtrace.config import Settings
    from radtrace.http_limits import PeerLimits
    from radtrace.preflight import Check, Service
    from radtrace.store.engine import Store

log = logging.getLogger(__name__)


def _watch_this_node(settings: Settings, service: Service) -> None:
    """After the start-up checks passed: this process's row in ``nodes`` (a migration is refused while it runs) and
    the watch that stops it, as on SIGTERM, once a newer radtrace has raised the database's floor or migrated it
    (:func:`radtrace.preflight.start_node_watch`). Under ``radtrace serve`` none: serve's own watch stands for it."""
    from radtrace.preflight import start_node_watch
    from radtrace.supervisor import SERVED_CHILD_ENV

    if not os.environ.get(SERVED_CHILD_ENV):
        start_node_watch(settings, service)


@app.command()
def serve(ctx: typer.Context) -> None:
    """Run the whole service on this machine until SIGTERM or Ctrl-C (embedded defaults: SQLite, embedded broker).

    After the start-up checks: the DICOM listener, one inference worker, one dispatcher (with the
    reconciler) and the QA API, as supervised child processes logging to stderr; one that dies is
    restarted with backoff. Without model weights the worker waits for them; studies stay queued.
    """
    from radtrace.preflight import check_ports, failed_checks, for_serve, run_preflight
    from radtrace.supervisor import next_steps, run_serve, wait_for_listener

    settings = settings_of(ctx)
    with _ctrl_c_before_start():
        checks = for_serve(run_preflight(settings))
        if not failed_checks(checks):
            checks += check_ports(settings)
    say_checks(ctx, checks, service="serve")
    # The children load the same settings: the same config file, environment and logging options; the warnings of
    # their own checks were in the table above.
    config = ctx.find_root().params.get("config")
    root_args = ["--config", str(config)] if config is not None else []
    root_args += ["--log-format", settings.logging.format, "--log-level", settings.logging.level, "--started-by-serve"]

    def what_next() -> None:  # once the listener answers; one unwrapped line each: the commands must copy whole
        if not wait_for_listener(settings, timeout_s=120):
            log.warning("the DICOM listener does not answer on port %d yet; see its log", settings.listener.port)
        out.rule("radtrace serve: what next")
        for line in next_steps(settings, config=config):
            out.print(line, soft_wrap=True, highlight=False, markup=False)
        out.rule()

    def start_what_next() -> None:
        threading.Thread(target=what_next, name="radtrace-what-next", daemon=True).start()

    # Until the supervisor installs its own handler nothing is started: Ctrl-C is still one line and status 130.
    code = run_serve(settings, root_args=root_args, on_started=start_what_next)
    hand_over()
    end_process(code)  # its children have stopped: without the interpreter's teardown (about 3 s of CPU)


@contextlib.contextmanager
def _ctrl_c_before_start() -> Iterator[None]:
    """Ctrl-C during the start-up checks ends ``serve`` there, with one line and nothing started.

    Python's own handler raises KeyboardInterrupt wherever the main thread is; raised inside a garbage-collector
    callback (SQLAlchemy and Celery imports run some) it is printed as "Exception ignored" and lost, and serve
    went on to start every child. This handler also remembers the signal, so it is honoured after the checks.
    """
    pressed = threading.Event()

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        pressed.set()
        raise KeyboardInterrupt

    previous_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:  # a KeyboardInterrupt lost in a GC callback: said once below, no traceback
        if info.exc_type is KeyboardInterrupt:
            pressed.set()
            return
        previous_hook(info)

    previous = signal.signal(signal.SIGINT, interrupt)
    sys.unraisablehook = unraisable
    try:
        yield
    except KeyboardInterrupt:
        pressed.set()
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook
    if pressed.is_set():
        fail("interrupted (Ctrl-C) during the start-up checks; nothing was started", EXIT_INTERRUPTED)


def _port_check(name: str, problem: str | None) -> list[Check]:
    """A port this command binds, as a start-up check: nothing when it is free, else a configuration error."""
    from radtrace.preflight import Check

    return [] if problem is None else [Check(name, "failed", problem, config_error=True)]


@app.command()
def listen(ctx: typer.Context) -> None:
    """Run the DICOM listener (C-ECHO / C-STORE SCP) alone, until SIGTERM or Ctrl-C.

    Runs the start-up checks first (the embedded SQLite database is migrated; an out-of-date
    PostgreSQL schema is refused), then listener.processes processes sharing listener.port (and
    listener.plain_port, when set).
    """
    from radtrace.dicom_listener.service import run_listener_processes
    from radtrace.listener_lock import listener_locks, listener_ports
    from radtrace.preflight import (
        failed_checks,
        listener_port_problem,
        metrics_port_problem,
        metrics_ports,
        run_preflight,
    )
    from radtrace.worker.space_at_start import start_checks

    settings = settings_of(ctx)
    # Below listener.min_free_bytes: started, refusing associations (transient) as when the disk fills while it runs
    # (exit 1 was a systemd restart every 5 s); on a disk too full for its checks it waits there, the port closed.
    checks = start_checks(settings, partial(run_preflight, service="listener"), service="listener")
    if not failed_checks(checks):
        checks += _port_check("DICOM port", listener_port_problem(settings))
        # A metrics port another program holds was an EADDRINUSE blamed on listener.port below.
        listener_metrics = [(port, name) for port, name in metrics_ports(settings) if name.startswith("listener.")]
        checks += _port_check("metrics ports", metrics_port_problem(settings, listener_metrics))
    say_checks(ctx, checks, service="listener")
    _watch_this_node(settings, "listener")
    try:
        with listener_locks(settings):
            code = run_listener_processes(settings)
    except RadtraceError as exc:
        fail(exc.reason, EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        ports = " or ".join(f"port {port} ({setting})" for port, setting in listener_ports(settings))
        fail(f"{ports} is already in use", EXIT_USAGE)
    # Stopped, its locks released: without the interpreter's teardown of pynetdicom, pydicom and SQLAlchemy (0.5 to
    # 0.8 s of CPU, most of an idle listener's stop). An association thread still storing an instance is a daemon
    # thread, which Python's own exit did not wait for either: what it had not committed it had not acknowledged.
    end_process(code)


@app.command()
def worker(
    ctx: typer.Context,
    gpu: Annotated[int | None, typer.Option("--gpu", help="The GPU index this worker owns (one per GPU).")] = None,
    queues: Annotated[
        str, typer.Option("--queues", help="Comma-separated roles to take: gpu (inference), dispatch (deliveries).")
    ] = "gpu,dispatch",
    concurrency: Annotated[int, typer.Option(help="Threads of a dispatch-only worker.", min=1, max=64)] = 4,
    reconcile: Annotated[bool, typer.Option(help="Re-ring overdue rows (at start and periodically).")] = True,
    metrics_offset: Annotated[
        int, typer.Option(help="Serve metrics on broker.metrics_port plus this (several workers on one host).", min=0)
    ] = 0,
) -> None:
    """Run a Celery worker: inference (one GPU, model loaded once) and/or report delivery, until SIGTERM.

    Runs the start-up checks first (the embedded SQLite database is migrated; an out-of-date
    PostgreSQL schema is refused).
    """
    from radtrace.preflight import failed_checks, metrics_port_problem, run_preflight
    from radtrace.worker.service import queue_names, run_worker
    from radtrace.worker.space_at_start import worker_start_checks

    settings = settings_of(ctx)
    roles = [role.strip() for role in queues.split(",") if role.strip()]
    try:
        queue_names(settings, roles)
    except ConfigError as exc:
        fail(exc.reason, EXIT_USAGE)
    service: Service = "worker" if "gpu" in roles else "dispatcher"
    checks = worker_start_checks(settings, partial(run_preflight, service=service))  # a full disk: waits, no restarts
    if settings.broker.metrics_port is not None and not failed_checks(checks):  # taken: an OSError traceback, and
        plus = f" + {metrics_offset} (--metrics-offset)" if metrics_offset else ""  # serve restarted it for ever
        setting = f"broker.metrics_port{plus}, RADTRACE_BROKER__METRICS_PORT"
        port = settings.broker.metrics_port + metrics_offset
        checks += _port_check("metrics ports", metrics_port_problem(settings, [(port, setting)]))
    say_checks(ctx, checks, service=service)
    _watch_this_node(settings, service)
    _quiet_celery_root_warning()
    _quiet_celery_connection_loss_warning()
    try:
        run_worker(
            settings, roles=roles, gpu=gpu, concurrency=concurrency, reconcile=reconcile, metrics_offset=metrics_offset
        )
    except ModelLoadError as exc:  # the loader's words name the directory or repository, not the settings
        fail(
            f"{exc.reason}; set model.path (RADTRACE_MODEL__PATH) to the weights' directory, or try radtrace "
            "without weights: model.backend = demo (make run DEMO=1)"
        )
    except RadtraceError as exc:
        fail(exc.reason, EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED)
    end_process(0)  # stopped: without the interpreter's teardown of torch and the rest (seconds of CPU)


def _quiet_celery_root_warning() -> None:
    """Celery warns on every start as root (the usual container user); say it once, in our words, instead.

    Celery's concern is pickle: a root worker that unpickles broker messages runs whatever the broker holds.
    radtrace's workers accept JSON only (radtrace.worker.app), and Celery itself refuses pickle as root.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    log.info("worker running as root; it accepts JSON messages only (run it as a service user where you can)")
    warnings.filterwarnings("ignore", message="You're running the worker with superuser privileges")


def _quiet_celery_connection_loss_warning() -> None:
    """Celery warns on every lost broker connection, whatever worker_cancel_long_running_tasks_on_connection_loss
    says, that a future release may cancel tasks in hand then: six lines (escaped into one) about Celery 5.1 under
    its own "Connection to broker lost. Trying to re-establish the connection..." warning, each time Redis goes.
    radtrace keeps Celery's behaviour (a reading in hand is finished: its claim is in the database, not the broker),
    so the warning says nothing an operator can act on. Filtered from the log (``logging.captureWarnings`` routes it
    to ``py.warnings``): Celery's worker puts ``always`` in front of any warnings filter set before it starts."""
    logging.getLogger("py.warnings").addFilter(_not_celery_connection_loss_notice)


def _not_celery_connection_loss_notice(record: logging.LogRecord) -> bool:
    return "In Celery 5.1 we introduced an optional breaking change" not in record.getMessage()


# --- QA API ------------------------------------------------------------------------------------


@app.command()
def api(ctx: typer.Context) -> None:
    """Run the read-only QA HTTP API on api.host:api.port (OpenAPI documentation at /docs).

    With api.bootstrap_admin_token set, an admin token with that secret is created first if missing.
    """
    from radtrace.audit.api import create_api
    from radtrace.audit.checkpoints import CheckpointSource
    from radtrace.audit.operations import local_operator
    from radtrace.audit.tokens import ensure_bootstrap_admin
    from radtrace.http_limits import PeerLimits
    from radtrace.http_server import serve_http
    from radtrace.preflight import api_bind_problem, bind_api_socket, failed_checks, run_preflight
    from radtrace.reporting.draft_store import drafts_root

    settings = settings_of(ctx)
    host, port = settings.api.host, settings.api.port
    checks = run_preflight(settings, service="api")
    # Bound here, not by uvicorn: its bind error is a log line and exit 3, which serve took for a crash and
    # restarted for ever; a port another program holds is a configuration error (exit 2, naming api.port).
    listening = None
    if not failed_checks(checks):
        try:
            listening = bind_api_socket(settings)
        except OSError as exc:
            checks += _port_check("QA API port", api_bind_problem(host, port, exc))
    say_checks(ctx, checks, service="api")
    _watch_this_node(settings, "api")
    if listening is None:  # pragma: no cover - say_checks has refused the start
        raise typer.Exit(EXIT_FAILED)
    with listening, open_store(settings, too_old_exit=EXIT_USAGE) as store:  # a floor raised since the checks
        bootstrap = settings.api.bootstrap_admin_token
        if bootstrap is not None:
            token = ensure_bootstrap_admin(store, bootstrap.get_secret_value(), local_operator())
            log.info("bootstrap admin token is %r", token.name)
        log.info("QA API on http://%s:%d (documentation at /docs)", settings.api.host, settings.api.port)
        # uvicorn logs through radtrace's handler; its access log is off because it prints query strings
        # (patient IDs); the API logs requests by route template instead. Every peer is bounded (http_server).
        application = create_api(
            store, drafts_dir=drafts_root(settings), checkpoints=CheckpointSource.for_settings(settings)
        )
        if settings.console.enabled:
            from radtrace.console.web import mount_console

            mount_console(application, store, settings)
            log.info("review console on http://%s:%d/console", settings.api.host, settings.api.port)
        limits = PeerLimits.for_settings(settings.api)
        serve_http(application, listening, limits=limits, on_throttled=_recorder_of_throttles(store, limits))


def _recorder_of_throttles(store: Store, limits: PeerLimits) -> Callable[[str, int], None]:
    """Records each address the HTTP server starts refusing after repeated failed authentications (one event per
    episode: the attempts it refuses are not recorded one by one, so a stranger cannot fill the audit log)."""
    from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
    from radtrace.audit.recorder import AuditRecorder

    pause_s = limits.failed_auth_pause_s

    def record(host: str, failures: int) -> None:
        reason = f"throttled: {failures} failed authentications from this address; refused for {pause_s:.0f} s"
        payload = {"reason": reason, "failures": failures, "refused_s": pause_s}
        AuditRecorder(store).record(
            AuditEvent(EventType.API_AUTHENTICATION_FAILED, Actor(host=host), Outcome.SERIOUS_FAILURE, payload=payload)
        )

    return record
