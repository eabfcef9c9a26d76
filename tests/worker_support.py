"""Helpers for the worker tests: settings with the tiny model, and a study spooled with its rows."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydicom.dataset import Dataset

from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.config import DispatchSettings, Settings, load_settings
from radtrace.errors import ModelError, RadtraceError
from radtrace.logging import study_key
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import Skipped, StudyImage
from radtrace.reporting.dispatch.outbox import Outbox
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Instance, OutboxMessage, Revision, RevisionState, Study
from radtrace.testing.services import free_port
from radtrace.testing.studies import ImageSpec, StudySpec, make_study, write_study
from radtrace.worker.pipeline import StudyPipeline
from radtrace.worker.settlement import Deliveries


def worker_settings(tmp_path: Path, database_url: str, tiny_model_dir: Path, **overrides: Any) -> Settings:
    """Embedded settings on ``database_url`` with the tiny model on the CPU and a file-drop destination."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "radtrace",
        "store": {"url": database_url},
        "model": {"path": tiny_model_dir, "device": "cpu", "max_new_tokens": 48},
        "dispatch": {"file_drop_dir": tmp_path / "drop"},
        "broker": {"retry_backoff_initial_s": 0.2, "retry_backoff_max_s": 1.0},
    }
    for key, value in overrides.items():
        values[key] = {**values[key], **value} if isinstance(values.get(key), dict) else value
    (tmp_path / "drop").mkdir(exist_ok=True)
    return load_settings(**values)


def vllm_worker_settings(
    tmp_path: Path, port: int, *, batch_size: int, url_path: str = "", **sections: Any
) -> Settings:
    """Embedded settings for a worker reading through a (fake) vLLM on 127.0.0.1:``port``: 1 s requests, probes
    backing off to 0.4 s, two attempts with short backoffs; ``sections`` add to or replace sections (``store``,
    ``broker``...)."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "model": {"backend": "vllm", "vllm_url": f"http://127.0.0.1:{port}{url_path}", "vllm_model": "m",
                  "request_timeout_s": 1.0, "batch_size": batch_size, "batch_wait_ms": 0, "server_probe_max_s": 0.4},
        "broker": {"max_attempts": 2, "retry_backoff_initial_s": 0.1, "retry_backoff_max_s": 0.2},
    }  # fmt: skip
    for key, value in sections.items():
        values[key] = {**values[key], **value} if isinstance(values.get(key), dict) else value
    return load_settings(**values)


@contextlib.contextmanager
def migrated_store(settings: Settings) -> Iterator[Store]:
    """The settings' store, created under its data directory and migrated; disposed after."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    opened = Store.from_url(settings.store_url)
    upgrade(opened)
    try:
        yield opened
    finally:
        opened.dispose()


def spool_study(
    settings: Settings,
    store: Store,
    datasets: Sequence[Dataset],
    state: RevisionState = RevisionState.QUEUED,
    number: int = 1,
) -> tuple[str, int]:
    """Write ``datasets`` to the spool and add the Study (unless it exists), Revision and Instance rows, as the
    listener would; returns (study UID, revision number)."""
    study_uid = str(datasets[0].StudyInstanceUID)
    paths = write_study(datasets, settings.spool_dir / study_uid)
    # The write lock up front, as the listener takes it: a transaction that read could not take it once a worker
    # running beside the test had committed (SQLite: "database is locked" at once; tests/sqlite_upgrade_support.py).
    with store.session("spooling a study", immediate=True) as session:
        study = session.scalar(sa.select(Study).where(Study.study_uid == study_uid)) or Study(
            study_uid=study_uid, study_key=study_key(study_uid), accession=str(datasets[0].AccessionNumber)
        )
        revision = Revision(study=study, number=number, state=state, queued_at=utc_now())
        session.add_all([study, revision])
        session.flush()
        for ds, path in zip(datasets, paths, strict=True):
            data = path.read_bytes()
            session.add(
                Instance(
                    study_id=study.id,
                    revision_id=revision.id,
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                    path=str(path.relative_to(settings.spool_dir)),
                    size_bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            )
    return study_uid, number


def revision_row(store: Store, study_uid: str, number: int = 1) -> Revision:
    """The revision as stored now."""
    with store.session() as session:
        found = session.scalar(
            sa.select(Revision).join(Study).where(Study.study_uid == study_uid, Revision.number == number)
        )
        assert found is not None
        return found


def outbox_rows(store: Store) -> list[OutboxMessage]:
    """Every outbox row, by ID."""
    with store.session() as session:
        return list(session.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.id)))


class Unobserved:
    """A stage observer (radtrace.worker.settlement.StageObserver) that records nothing."""

    def observe(self, stage: str, seconds: float) -> None:
        pass

    def finished_in(self, state: str) -> None:
        pass


def deliveries_over(store: Store, settings: DispatchSettings, outbox_dir: Path) -> Deliveries:
    """The worker's delivery step over ``store`` with its own outbox (payloads under ``outbox_dir``), unobserved."""
    recorder = AuditRecorder(store)
    return Deliveries(store, Outbox(store, recorder, settings, outbox_dir), recorder, Unobserved(), utc_now)


def payloads_of(store: Store, kind: str) -> list[dict[str, Any]]:
    """The payload of every audit row of type ``kind``, in order."""
    return [payload for event_type, _, payload in audit_events(store) if event_type == kind]


def readings_after(store: Store, seq: int) -> dict[str, datetime]:
    """When each study was first read after audit row ``seq`` (its ``inference_completed``): study UID -> when."""
    first: dict[str, datetime] = {}
    with store.session() as session:
        for uid, recorded_at in session.execute(
            sa.select(AuditEventRow.study_uid, AuditEventRow.recorded_at)
            .where(AuditEventRow.seq > seq, AuditEventRow.event_type == "inference_completed")
            .order_by(AuditEventRow.seq)
        ):
            first.setdefault(uid, recorded_at)
    return first


def audit_events(store: Store) -> list[tuple[str, str, dict[str, Any]]]:
    """(event type, outcome, payload) of every audit row, in order."""
    with store.session() as session:
        rows = session.execute(
            sa.select(AuditEventRow.event_type, AuditEventRow.outcome, AuditEventRow.payload).order_by(
                AuditEventRow.seq
            )
        )
        return [(kind, outcome, json.loads(payload)) for kind, outcome, payload in rows]


def study_events(store: Store, study_uid: str) -> list[tuple[str, dict[str, Any]]]:
    """(event type, payload) of the study's audit events, in order."""
    with store.session() as session:
        rows = session.execute(
            sa.select(AuditEventRow.event_type, AuditEventRow.payload)
            .where(AuditEventRow.study_uid == study_uid)
            .order_by(AuditEventRow.seq)
        ).all()
    return [(kind, json.loads(payload)) for kind, payload in rows]


def attempt_events(store: Store, study_uid: str) -> list[tuple[str, int, bool | None]]:
    """(kind, attempt, attempt_counted) of the study's attempt events, in order."""
    kinds = {"inference_started", "inference_completed", "inference_failed", "report_failed"}
    return [
        (kind, p["attempt"], p.get("attempt_counted")) for kind, p in study_events(store, study_uid) if kind in kinds
    ]


def model_outage_events(store: Store) -> list[tuple[str, dict[str, Any]]]:
    """(event type, payload) of the audit rows that open or close a hold of reading (a model-server outage, a
    garbage-output stop), in order."""
    return [(kind, payload) for kind, _, payload in audit_events(store) if payload.get("component") == "model reading"]


def reading_flags(store: Store) -> list[list[str]]:
    """The flags of each recorded reading (``inference_completed``), in order."""
    return [payload["reading"]["flags"] for kind, _, payload in audit_events(store) if kind == "inference_completed"]


def wait_until(check: Callable[[], bool], timeout_s: float = 30) -> float:
    """Poll ``check`` every 50 ms until it holds (the seconds it took), failing after ``timeout_s``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, "timed out"
        time.sleep(0.05)
    return time.monotonic() - started


def reading_pipeline(
    settings: Settings, store: Store, worker: str = "w1", *, stopping: Callable[[], bool] = lambda: False
) -> StudyPipeline:
    """A GPU worker's pipeline over ``store`` with the configured model (a fake vLLM in these tests)."""
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    return StudyPipeline(settings, store, reader, worker=worker, stopping=stopping)


def worker_env(settings: Settings) -> dict[str, str]:
    """``RADTRACE_*`` variables that give a subprocess the same settings (the parts the worker tests set)."""
    env = {
        "RADTRACE_DATA_DIR": str(settings.data_dir),
        "RADTRACE_STORE__URL": settings.store_url,
        "RADTRACE_MODEL__PATH": str(settings.model.path),
        "RADTRACE_MODEL__DEVICE": settings.model.device,
        "RADTRACE_MODEL__MAX_NEW_TOKENS": str(settings.model.max_new_tokens),
        "RADTRACE_DISPATCH__FILE_DROP_DIR": str(settings.dispatch.file_drop_dir),
        "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    for name, value in settings.broker.model_dump(mode="json").items():
        if value is not None:
            env[f"RADTRACE_BROKER__{name.upper()}"] = str(value)
    if settings.dispatch.ris is not None:
        env["RADTRACE_DISPATCH__RIS"] = json.dumps(settings.dispatch.ris.model_dump(mode="json"))
    if settings.model.backend == "vllm":  # a model server instead of weights
        del env["RADTRACE_MODEL__PATH"]
        model = settings.model
        env.update({
            "RADTRACE_MODEL__BACKEND": "vllm", "RADTRACE_MODEL__VLLM_URL": str(model.vllm_url),
            "RADTRACE_MODEL__VLLM_MODEL": str(model.vllm_model), "RADTRACE_MODEL__BATCH_SIZE": str(model.batch_size),
            "RADTRACE_MODEL__REQUEST_TIMEOUT_S": str(model.request_timeout_s),
            "RADTRACE_MODEL__SERVER_PROBE_MAX_S": str(model.server_probe_max_s),
        })  # fmt: skip
        if model.vllm_api_key is not None:
            env["RADTRACE_MODEL__VLLM_API_KEY"] = model.vllm_api_key.get_secret_value()
    return env


@contextlib.contextmanager
def running_worker(
    settings: Settings, *args: str, log_file: Path, prefix: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """``radtrace worker`` in a subprocess with ``settings``, in its own session (after ``prefix``, e.g. unshare:
    another PID namespace); stopped afterwards (SIGTERM, then SIGKILL to its process group: what it started too).

    With a ``prefix`` the SIGTERM goes to the process group: unshare(1) --fork blocks SIGTERM and forwards nothing,
    and the namespace's init (sh) ignores it, so the worker inside (and what it started) gets it; sent to unshare
    alone, nothing stopped and the teardown waited the whole 20 s for the SIGKILL."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    environment.update(worker_env(settings))
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "radtrace", "worker", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                if prefix:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGTERM)
                else:
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


def wait_for_state(
    store: Store, study_uid: str, states: set[RevisionState], *, timeout: float, log_file: Path | None = None
) -> Revision:
    """Poll the revision until it is in one of ``states``; fail with the worker's log after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        rev = revision_row(store, study_uid)
        if rev.state in states:
            return rev
        if time.monotonic() > deadline:
            log = log_file.read_text(errors="replace")[-4000:] if log_file and log_file.exists() else ""
            raise AssertionError(f"revision still {rev.state} after {timeout} s; worker log:\n{log}")
        time.sleep(0.2)


def queue_studies(wsettings: Settings, store: Store, count: int, *, seed: int = 40) -> list[str]:
    """``count`` one-image frontal studies queued in this order (oldest first)."""
    uids = []
    for i in range(count):
        uid, _ = spool_study(wsettings, store, make_study(StudySpec(seed=seed + i), [ImageSpec(view="PA")]))
        uids.append(uid)
        time.sleep(0.002)  # distinct queued_at: oldest first is an order, not a tie
    return uids


#: The states a revision's processing ends in.
FINAL = {RevisionState.REPORTED, RevisionState.FAILED, RevisionState.SKIPPED, RevisionState.DISPATCHED}


def ring_until_settled(pipeline: StudyPipeline, store: Store, uids: list[str], timeout_s: float) -> None:
    """What the worker does with its doorbells: process each revision not yet final, again after its backoff."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        waiting = [uid for uid in uids if revision_row(store, uid).state not in FINAL]
        if not waiting:
            return
        for uid in waiting:
            pipeline.process_batch(uid, 1)
        time.sleep(0.1)


class CountingReader:
    """The real reader, counting the size of each batched call; optionally out of memory above a size."""

    def __init__(self, reader: StudyReader, *, fail_above: int | None = None) -> None:
        self.reader, self.fail_above = reader, fail_above
        self.batches: list[int] = []

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | RadtraceError]:
        self.batches.append(len(studies))
        if self.fail_above is not None and len(studies) > self.fail_above:
            raise ModelError(f"out of memory generating a batch of {len(studies)}")
        return self.reader.read_each(studies)


# --- a vLLM-like server -----------------------------------------------------------------------------


@dataclass
class Reply:
    """One answer of :class:`FakeVllm`."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeVllm:
    """A vLLM-like server: ``answer`` decides each chat completion (None: never answer); it counts requests.

    ``engine_dead``: what vLLM does once its engine process died and its API process lives on (V0, or V1 with
    ``VLLM_KEEP_ALIVE_ON_ENGINE_DEATH``): ``/v1/models`` still lists the model, ``/health`` answers 503 and each
    completion 500. ``has_health``: False for an OpenAI-compatible server without ``/health`` (404 there).
    ``wedged``: an engine that hangs (a GPU hang, a stuck scheduler): ``/health`` and the model list answer, every
    completion (reads and probes) hangs until the client gives up or the engine is unwedged. ``empty``: an engine
    that answers every completion at once with nothing (no text, no token).

    A completion asking for one token (``max_tokens`` 1) is the worker's completion probe: counted in ``probes``, not
    ``requests``, and answered with one token (not by ``answer``) unless the engine is dead or wedged.
    """

    url: str
    answer: Callable[[dict[str, Any]], Reply | None]
    requests: int = 0
    released: threading.Event = field(default_factory=threading.Event)
    engine_dead: bool = False
    has_health: bool = True
    health_checks: int = 0
    wedged: bool = False
    empty: bool = False
    probes: int = 0
    #: When each completion that is not a probe arrived (``time.monotonic`` once its head was read), in order; one
    #: whose body the client's deadline cut short (a loaded machine) is counted in ``requests`` too.
    arrivals: list[float] = field(default_factory=list)
    #: Whether ``/health`` answers a client 503 as if its engine were dead, by its ``Authorization`` header ("" when
    #: none): lets a test decide which worker's probe finds the server back (each worker its own ``vllm_api_key``).
    dead_to: Callable[[str], bool] = lambda authorization: False
    #: The handler threads count under it: ``requests += 1`` from four at once lost one now and then under load.
    counting: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


#: What vLLM answers a completion once its engine is dead (status 500).
ENGINE_DEAD_BODY = json.dumps(
    {"object": "error", "message": "EngineCore encountered an issue. See stack trace for the root cause.",
     "type": "InternalServerError", "code": 500}
).encode()  # fmt: skip


def completion(text: str, *, tokens: int = 400, finish: str = "stop") -> Reply:
    """A chat completion whose content is ``text``."""
    body = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 300, "completion_tokens": tokens},
    }
    return Reply(200, json.dumps(body).encode())


#: A reading that parses (a bare "normal" is unparseable: four in a row stop reading, radtrace.worker.output_guard).
NORMAL_READING = "<think>Lungs clear. Heart size normal.</think><answer>No Finding</answer>"


@contextlib.contextmanager
def fake_vllm_server(port: int | None = None) -> Iterator[FakeVllm]:
    """A vLLM-like server on ``port`` (default a free local one; the answer: :data:`NORMAL_READING` until a test sets
    another)."""
    port = port or free_port()
    server = FakeVllm(f"http://127.0.0.1:{port}", lambda request: completion(NORMAL_READING))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # /v1/models (radtrace's preflight, a health check's fallback) and /health
            if self.path == "/health":
                with server.counting:
                    server.health_checks += 1
                dead = server.dead_to(self.headers.get("Authorization", "")) or server.engine_dead  # asked at each
                status = 404 if not server.has_health else 503 if dead else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = json.dumps({"object": "list", "data": [{"id": "m"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            arrived = time.monotonic()  # its head read: the client's deadline may cut its body (a busy machine)
            try:
                request: dict[str, Any] | None = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            except (OSError, ValueError):
                request = None  # cut short by the client: still a completion it asked for
            probe = request is not None and request.get("max_tokens") == 1
            with server.counting:
                if probe:
                    server.probes += 1
                else:
                    server.requests += 1
                    server.arrivals.append(arrived)
            if request is None:
                return
            if server.wedged:  # hangs until the client gives up (or the engine is unwedged: then no answer either)
                deadline = time.monotonic() + 30
                while server.wedged and not server.released.is_set() and time.monotonic() < deadline:
                    time.sleep(0.02)
                return
            if server.engine_dead:
                reply: Reply | None = Reply(500, ENGINE_DEAD_BODY)
            elif server.empty:
                reply = completion("", tokens=0)
            else:
                reply = completion("Normal", tokens=1, finish="length") if probe else server.answer(request)
            if reply is None:  # hang: the client's deadline ends the request
                server.released.wait(30)
                return
            self.send_response(reply.status)
            for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
