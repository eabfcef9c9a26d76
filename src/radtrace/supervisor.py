"""``radtrace serve``: every component on one machine, as child processes of one supervisor.

The children are the ordinary commands (``radtrace listen``, ``radtrace worker``, ``radtrace api``),
started with the parent's settings (same config file, same ``RADTRACE_*`` environment, same logging
options) and logging to the parent's stderr:

* ``listener``: the DICOM listener; it rings the doorbell when a study is queued.
* ``worker``: one inference worker on the GPU queue (solo pool: one study at a time, model loaded once).
* ``dispatcher``: one delivery worker on the dispatch queue; the reconciler runs in it (one per service).
  With ``broker.metrics_port`` set, the worker serves its metrics on that port and the dispatcher on the next.
* ``api``: the read-only QA API on ``api.host:api.port``.
* ``atna`` (only with ``atna.enabled``): ``radtrace audit forward``, the audit trail to the audit record repository.

Supervision: a child that exits unexpectedly is logged and restarted with exponential backoff (1 s,
doubling to 60 s; reset once it has run for a minute). A child that exits with status 2 refused its
configuration (for example its port is taken): restarting cannot help, so the supervisor stops the
others and exits 2. SIGTERM or SIGINT stops every child with SIGTERM (a worker finishes the study in
hand), waits up to ``stop_timeout_s``, then kills what is left; the supervisor then exits 0. A supervisor killed
outright (``kill -9``) takes its children with it at once (:mod:`radtrace.parent_death`, SIGKILL): a new serve can
start straight away, and what they had in hand is recovered as after any ``kill -9``.

While it runs, serve is a row of the database's ``nodes`` table (a migration is refused under it) and watches the
database's floor (:class:`radtrace.store.node_watch.NodeWatch`): once a newer radtrace has raised it or migrated the
database, serve stops every child as on SIGTERM and exits 2 with one line naming both versions ("this node runs
radtrace X (schema A); the database needs radtrace >= Y (schema B or newer …): upgrade this node").

Without usable model weights the worker is not started: the listener keeps accepting and studies wait in
``queued`` (the row is the truth). Missing files, and files that are there but cannot be loaded (a truncated
safetensors file, a config.json that is not JSON: :func:`radtrace.model.loading.checkpoint_problem`), are said once
each, naming the file; the weights are checked again only when the model directory changes (names, sizes and
modification times of its files), and the worker starts as soon as they pass. A fault only loading finds (a
configuration that does not fit the weights) the worker itself waits out the same way
(:func:`radtrace.worker.service.warm_when_loadable`), instead of exiting to be restarted for ever.

With ``model.backend = "vllm"`` there are no weights on this machine: the worker waits for the model server at
``model.vllm_url`` instead, until its health check passes (asked every 10 s, as the start-up check asks it), and the
log says so (:func:`waiting_line`, :func:`ready_line`): each distinct reason once, and once when it answers. With
``"onnxruntime"`` it waits for an export at ``model.path`` whose manifest and files are there.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from radtrace.config import Settings
from radtrace.config_reference import mask_url_password
from radtrace.dicom_listener.policy import AssociationRequest, caller_rules
from radtrace.parent_death import ending_with_parent

if TYPE_CHECKING:
    from radtrace.store.node_watch import NodeWatch

__all__ = [
    "Component",
    "Supervisor",
    "describe",
    "next_steps",
    "ready_line",
    "run_serve",
    "serve_components",
    "wait_for_listener",
    "waiting_line",
]

log = logging.getLogger(__name__)

EXIT_CONFIG = 2  # the children's "bad usage or configuration" (radtrace.cli)
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0
HEALTHY_AFTER_S = 60.0
WEIGHTS_RECHECK_S = 10.0
POLL_S = 0.2
STOP_NOTICE_S = 3.0  # after Ctrl-C, say who is still stopping once this long has passed
#: In each child's environment: the child runs under ``radtrace serve``, whose row in ``nodes`` and floor watch
#: (:class:`radtrace.store.node_watch.NodeWatch`) stand for it, so it starts no watch of its own
#: (radtrace.cli.services).
#: Not a ``RADTRACE_`` name: those are settings.
SERVED_CHILD_ENV = "SERVED_BY_RADTRACE"


@dataclass(frozen=True)
class Component:
    """One child: its name in the logs, the ``radtrace`` subcommand that runs it, and whether it needs the model."""

    name: str
    command: tuple[str, ...]
    needs_model: bool = False


def serve_components() -> list[Component]:
    """The children of ``radtrace serve``, in start order."""
    return [
        Component("listener", ("listen",)),
        Component("worker", ("worker", "--queues=gpu", "--no-reconcile"), needs_model=True),
        Component(
            "dispatcher", ("worker", "--queues=dispatch", "--concurrency=4", "--reconcile", "--metrics-offset=1")
        ),
        Component("api", ("api",)),
    ]


@dataclass
class _Child:
    component: Component
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0  # time.monotonic() at which to (re)start it
    backoff_s: float = BACKOFF_INITIAL_S
    restarts: int = 0
    waiting_for_weights: bool = False
    weights_checked_at: float = 0.0
    weights_said: str = ""  # the problem last logged: each distinct one is said once
    weights_fingerprint: str | None = None  # the model directory as it was when last found unusable


class Supervisor:
    """Starts, watches, restarts and stops the children of ``radtrace serve`` (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        components: Sequence[Component],
        *,
        root_args: Sequence[str] = (),
        stop_timeout_s: float = 30.0,
        on_started: Callable[[], None] | None = None,
        watch: NodeWatch | None = None,
        banner: str | None = None,
    ) -> None:
        self.settings = settings
        # Logged once run() has Ctrl-C: before, serve logged it earlier, and Ctrl-C in between printed it followed by
        # "interrupted while starting; nothing was started", as if the listener it names had been up.
        self.banner = banner
        # This service's row in the nodes table and the watch on the database's floor (radtrace.store.node_watch): a
        # newer radtrace that raised the floor or migrated the database stops every child (as on SIGTERM) and serve
        # exits 2, saying so; restarting this version cannot help.
        self.watch = watch
        self.incompatible: str | None = None
        self.on_started = on_started
        self.children = [_Child(component) for component in components]
        self.root_args = list(root_args)
        self.stop_timeout_s = stop_timeout_s
        self._stopping = threading.Event()
        # A supervisor killed outright (kill -9, the OOM killer) cannot stop its children: the kernel kills them.
        # SIGTERM there let a Celery worker's warm shutdown run 5 to 25 s (a study in hand: minutes), holding the GPU
        # and its ports while a new serve started; what they had in hand is taken up again as after any kill -9 (the
        # reconciler releases a dead process's claims at the next start; an unanswered C-STORE is sent again).
        self._follow_supervisor = ending_with_parent(signal.SIGKILL)

    def _weights_ready(self) -> tuple[bool, str]:
        from radtrace.preflight import check_model_weights  # here: 'radtrace send' imports this module for a constant

        check = check_model_weights(self.settings)
        return check.status == "ok", check.detail

    def _weights_fingerprint(self) -> str | None:
        """The model directory's fingerprint (None: no local directory is configured, so check each time)."""
        path = self.settings.model.path
        if path is None or self.settings.model.backend != "transformers":
            return None
        from radtrace.model.loading import checkpoint_fingerprint

        return checkpoint_fingerprint(path)

    def _argv(self, component: Component) -> list[str]:
        return [sys.executable, "-m", "radtrace", *self.root_args, *component.command]

    def _start(self, child: _Child, now: float) -> None:
        if child.component.needs_model:
            if child.waiting_for_weights and now - child.weights_checked_at < WEIGHTS_RECHECK_S:
                return
            child.weights_checked_at = now
            fingerprint = self._weights_fingerprint()
            if child.waiting_for_weights and fingerprint is not None and fingerprint == child.weights_fingerprint:
                return  # the directory has not changed since its weights were found unusable
            ready, detail = self._weights_ready()
            if not ready:
                if detail != child.weights_said:  # each distinct problem once, not at every recheck
                    log.warning("%s", waiting_line(self.settings, detail, child.component.name))
                child.waiting_for_weights, child.weights_said, child.weights_fingerprint = True, detail, fingerprint
                return
            if child.waiting_for_weights:
                log.info("%s", ready_line(self.settings, detail, child.component.name))
            child.waiting_for_weights, child.weights_said, child.weights_fingerprint = False, "", None
        child.process = subprocess.Popen(
            self._argv(child.component),
            env={**os.environ, SERVED_CHILD_ENV: "1"},  # serve's own node watch stands for its children
            stdin=subprocess.DEVNULL,
            process_group=0,  # Ctrl-C reaches the supervisor only; it stops the children in order
            preexec_fn=self._follow_supervisor,  # only prctl and getppid between fork and exec
        )
        child.started_at = now
        log.info("started %s (pid %d): radtrace %s", child.component.name, child.process.pid,
                 " ".join(child.component.command))  # fmt: skip

    def on_incompatible(self, problem: str) -> None:
        """The watch's finding that this code may no longer work on the database: stop every child, exit 2."""
        self.incompatible = problem
        self._stopping.set()

    def _on_exit(self, child: _Child, code: int, now: float) -> int | None:
        """Handle a child that exited by itself; returns an exit status when the whole service must stop."""
        name = child.component.name
        child.process = None
        if self.watch is not None and self.watch.check() is not None:  # its start-up check refused a newer database
            return EXIT_CONFIG
        if code == EXIT_CONFIG:
            log.error("%s refused its configuration (exit %d); stopping radtrace serve", name, code)
            return EXIT_CONFIG
        if now - child.started_at >= HEALTHY_AFTER_S:
            child.backoff_s = BACKOFF_INITIAL_S
        child.restarts += 1
        child.restart_at = now + child.backoff_s
        log.error("%s exited unexpectedly (status %d); restart %d in %.0f s", name, code, child.restarts,
                  child.backoff_s)  # fmt: skip
        child.backoff_s = min(child.backoff_s * 2, BACKOFF_MAX_S)
        return None

    def request_stop(self, signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        """Ask :meth:`run` to stop every child and return (signal-handler signature)."""
        if not self._stopping.is_set():
            log.info("stopping every component on signal %d", signum)
        self._stopping.set()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit status 0) or a child refuses its configuration (2). Blocking."""
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        if self.banner is not None:
            log.info("%s", self.banner)
        status = 0
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                for child in self.children:
                    if child.process is None:
                        if now >= child.restart_at:
                            self._start(child, now)
                        continue
                    code = child.process.poll()
                    if code is not None:
                        failed = self._on_exit(child, code, now)
                        if failed is not None:
                            status = failed
                            self._stopping.set()
                            break
                if self.on_started is not None and not self._stopping.is_set():
                    self.on_started()  # once: after the first pass started every child (or found it waiting)
                    self.on_started = None
                self._stopping.wait(POLL_S)
        finally:
            self._stop_children()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.incompatible is not None:
            log.error("radtrace serve stopped: %s", self.incompatible)
            return EXIT_CONFIG
        return status

    def _stop_children(self) -> None:
        running = {child.component.name: child.process for child in self.children if child.process is not None}
        for process in running.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        deadline, told = started + self.stop_timeout_s, False
        while running and time.monotonic() < deadline:
            running = {name: process for name, process in running.items() if process.poll() is None}
            if running and not told and time.monotonic() - started >= STOP_NOTICE_S:
                # Without this, Ctrl-C was followed by 5 to 20 silent seconds that looked like a hang.
                log.info("waiting for the %s to stop (a worker finishes the study in hand; at most %.0f s more)",
                         " and ".join(running), deadline - time.monotonic())  # fmt: skip
                told = True
            time.sleep(POLL_S / 2)
        for name, process in running.items():
            if process.poll() is None:
                log.warning("%s (pid %d) did not stop within %.0f s; killing it", name, process.pid,
                            self.stop_timeout_s)  # fmt: skip
                process.kill()
                process.wait(timeout=10)
        for child in self.children:
            child.process = None
        log.info("radtrace serve stopped")


def _reason(detail: str) -> str:
    """The start-up check's finding without its own advice (the supervisor's line says what happens next)."""
    for advice in ("; inference waits", "; the GPU worker"):
        detail = detail.split(advice, 1)[0]
    return detail


def waiting_line(settings: Settings, detail: str, name: str) -> str:
    """What serve says when the GPU worker is not started: what it waits for, per backend, and what to do.

    vLLM: a server at ``model.vllm_url`` whose health check passes (there are no weights on this machine);
    transformers and ONNX Runtime: loadable files at ``model.path`` (or the Hugging Face cache)."""
    held = f"the {name} is not started; studies are received and wait in 'queued'"
    if settings.model.backend == "vllm":
        return (
            f"inference is waiting for the model server ({_reason(detail)}): {held}. Start (or restart) the vLLM "
            f"server, or correct model.vllm_url (RADTRACE_MODEL__VLLM_URL) if it runs elsewhere; its GET /health is "
            f"asked again every {WEIGHTS_RECHECK_S:.0f} s and the {name} starts once it answers"
        )
    if "cannot be loaded" in detail:
        return (
            f"inference is waiting for model weights that can be loaded ({_reason(detail)}): {held}. The weights "
            "are checked again when the files in model.path change (RADTRACE_MODEL__PATH)"
        )
    if settings.model.backend == "onnxruntime":
        provide = "Set RADTRACE_MODEL__PATH to the directory that 'radtrace model export-onnx' wrote"
    else:
        provide = (
            "Set RADTRACE_MODEL__PATH to the weights' directory (a demo with random weights: 'radtrace model "
            "make-tiny var/tiny-model', then RADTRACE_MODEL__PATH=var/tiny-model)"
        )
    return (
        f"inference is waiting for model weights ({_reason(detail)}): {held}. {provide}; checking again every "
        f"{WEIGHTS_RECHECK_S:.0f} s"
    )


def ready_line(settings: Settings, detail: str, name: str) -> str:
    """What serve says once what it waited for is there (after :func:`waiting_line`)."""
    if settings.model.backend == "vllm":
        return f"model server answers ({detail}): starting the {name}"
    return f"model weights found ({detail}): starting the {name}"


def describe(settings: Settings) -> str:
    """One line saying where the service listens and keeps its files."""
    listener, api = settings.listener, settings.api
    plain = "" if listener.plain_port is None else f" (TLS) and {listener.host}:{listener.plain_port} (without TLS)"
    return (
        f"DICOM listener {listener.ae_title} on {listener.host}:{listener.port}{plain}; "
        f"QA API on http://{api.host}:{api.port}; data in {Path(settings.data_dir).absolute()}"
    )


# A real chest film (Fuji CR, PA, CHEST, stored without file meta) that ships with the repository's tests.
SAMPLE_FILM = Path("tests/data/real-cxr/fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm")
LOCAL_CALLER = "RADTRACE-SEND"


def _send_port(settings: Settings) -> int | None:
    """The port ``radtrace send`` (no TLS) can send to: ``listener.port``, or with TLS there ``listener.plain_port``;
    None when every port takes TLS only."""
    listener = settings.listener
    return listener.port if not listener.tls.enabled else listener.plain_port


def _local_caller(settings: Settings) -> str | None:
    """An AE title that ``radtrace send`` on this machine may call with on :func:`_send_port`, or None when none is
    admitted there (:func:`radtrace.dicom_listener.policy.caller_rules`: the plain port may have callers of its own)."""
    listener = settings.listener
    plain = listener.tls.enabled
    judged = caller_rules(
        AssociationRequest(LOCAL_CALLER, listener.ae_title, "127.0.0.1", 1, 0, plain_port=plain), listener
    )
    if judged is None:
        return LOCAL_CALLER
    for rule in judged[0]:
        if rule.host is None or ipaddress.ip_address("127.0.0.1") in ipaddress.ip_network(rule.host, strict=False):
            return rule.ae_title
    return None


def wait_for_listener(settings: Settings, *, timeout_s: float) -> bool:
    """Wait until the DICOM listener accepts connections (True), or ``timeout_s`` passes (False)."""
    host = settings.listener.host
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host  # noqa: S104
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError), socket.create_connection((target, settings.listener.port), timeout=1):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _program(cwd: Path) -> str:
    """How to run ``radtrace`` from another terminal: the name when it is on PATH, else this venv's script."""
    script = Path(sys.executable).parent / "radtrace"
    found = shutil.which("radtrace")
    if not script.is_file() or (found is not None and Path(found).absolute() == script.absolute()):
        return "radtrace"
    with contextlib.suppress(ValueError):
        return str(script.absolute().relative_to(cwd.absolute()))
    return str(script)


def _state_variables(settings: Settings, data_dir: Path, cwd: Path) -> list[str]:
    """The variables another terminal needs to reach this service's state (no config file): the data directory
    where it is not ./var, and the database and broker URLs where they are set (a URL's password masked: the
    command then says where to put it). Without the database's URL, 'radtrace status' looked for SQLite in the
    data directory and said no radtrace database was there."""
    variables = []
    if data_dir != (cwd / "var").absolute():
        variables.append(f"RADTRACE_DATA_DIR={shlex.quote(str(data_dir))}")
    for name, url in (("RADTRACE_STORE__URL", settings.store.url), ("RADTRACE_BROKER__URL", settings.broker.url)):
        if url is not None:
            variables.append(f"{name}={shlex.quote(mask_url_password(url))}")
    return variables


def next_steps(settings: Settings, *, config: Path | None = None, cwd: Path | None = None) -> list[str]:
    """What ``radtrace serve`` prints once it has started: who may send, where drafts go, what to run next."""
    cwd = cwd or Path.cwd()
    listener, dispatch = settings.listener, settings.dispatch
    data_dir = Path(settings.data_dir).absolute()
    prefix = shlex.quote(_program(cwd))
    if config is not None:
        prefix = f"{prefix} --config {shlex.quote(str(config))}"
    else:
        prefix = " ".join([*_state_variables(settings, data_dir, cwd), prefix])
    steps = [f"Data directory: {data_dir}"]
    if listener.accept_unknown_callers:
        steps.append("Callers allowed: ANY calling AE (listener.accept_unknown_callers = true; first setup only)")
    elif listener.allowed_callers:
        shown = ", ".join(
            f"{rule.ae_title}" + (f" from {rule.host}" if rule.host else "") for rule in listener.allowed_callers
        )
        steps.append(f"Callers allowed (listener.allowed_callers): {shown}")
    else:
        example = json.dumps([{"ae_title": LOCAL_CALLER, "host": "127.0.0.1"}])
        steps.append(
            "Callers allowed: NONE - every association is refused until listener.allowed_callers is set, e.g. "
            f"RADTRACE_LISTENER__ALLOWED_CALLERS='{example}' (or [[listener.allowed_callers]] in the config file)"
        )
    destinations = [f"PACS {pacs.ae_title}@{pacs.host}:{pacs.port}" for pacs in dispatch.pacs]
    if dispatch.ris is not None:
        destinations.append(f"RIS {dispatch.ris.host}:{dispatch.ris.port} (HL7 over MLLP)")
    if dispatch.file_drop_dir is not None:
        destinations.append(f"file drop {Path(dispatch.file_drop_dir).absolute()}")
    steps.append(f"Drafts (SR, HL7, FHIR) are kept in {data_dir / 'drafts'}/<Study UID>/<revision>/")
    steps.append(
        "Delivered to: " + "; ".join(destinations)
        if destinations
        else "Delivered to: nowhere else (no dispatch.pacs, dispatch.ris or dispatch.file_drop_dir set)"
    )
    if settings.model.demo:
        steps.append("Model: DEMO replay of recorded model texts - every draft is marked DEMO - NOT A MODEL READING")
    port, caller = _send_port(settings), _local_caller(settings)
    film = shlex.quote(str(SAMPLE_FILM)) if (cwd / SAMPLE_FILM).is_file() else "PATH/TO/CHEST-XRAY.dcm"
    if port is None:
        steps.append(
            f"Send a test study: port {listener.port} takes TLS only and radtrace send has none: use dcmtk's "
            f"storescu +tls (docs/operations.md, 'TLS with the PACS'), or set listener.plain_port"
        )
    elif caller is not None:
        steps.append(
            f"Send a test study: {prefix} send --port {port} --called-ae {shlex.quote(listener.ae_title)} "
            f"--calling-ae {shlex.quote(caller)} {film}"
        )
    else:
        steps.append(f"Send a test study: first allow a caller (above), then: {prefix} send --calling-ae AE PATH")
    steps.append(f"Follow it: {prefix} status; then read the draft: {prefix} drafts show <Study UID>")
    if ":***@" in prefix:
        steps.append("(the database or broker URL's password is shown as ***: give the real one in its place)")
    steps.append(f"QA API: http://{settings.api.host}:{settings.api.port}/docs")
    if settings.console.enabled:
        steps.append(
            f"Review console: http://{settings.api.host}:{settings.api.port}/console "
            f"(first: {prefix} user create NAME --role radiologist)"
        )
    return steps


def run_serve(
    settings: Settings, *, root_args: Sequence[str] = (), on_started: Callable[[], None] | None = None
) -> int:
    """Run every component under one :class:`Supervisor`; returns the exit status.

    ``on_started`` is called once every child has been started (``serve`` prints :func:`next_steps` there).
    """
    components = serve_components()
    if settings.atna.enabled:  # the audit trail to the hospital's audit record repository (radtrace.audit.atna)
        components.append(Component("atna", ("audit", "forward")))
    from radtrace.store.node_watch import NodeWatch

    watch = NodeWatch(
        settings.store_url, "serve", interval_s=settings.store.node_watch_interval_s,
        stale_after_s=settings.store.node_stale_after_s, connect_timeout_s=settings.store.connect_timeout_s,
    )  # fmt: skip
    banner = f"radtrace serve (pid {os.getpid()}): {describe(settings)}"
    supervisor = Supervisor(
        settings, components, root_args=root_args, on_started=on_started, watch=watch, banner=banner
    )
    watch.on_incompatible = supervisor.on_incompatible
    watch.start()
    try:
        return supervisor.run()
    finally:
        watch.stop()
