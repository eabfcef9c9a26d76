"""The whole service, study in to SR out: ``radtrace serve`` with the tiny model, per-stage latency, beside a floor.

Starts the service as a user runs it (``radtrace serve``: listener, inference worker, dispatcher, QA API;
embedded defaults, SQLite and the embedded broker under a temporary data directory, or PostgreSQL and
Redis with ``--store-url`` / ``--broker-url``), the TINY random test model on the CPU, and dcmtk
``storescp`` (``TCP_NODELAY=1``) as the PACS that receives the SRs. Then sends ``--studies`` synthetic
two-image studies (PA + lateral, 512x416, 12-bit DX) with dcmtk ``storescu``, **sequentially**: each one
after the previous one's SR is stored at the PACS and a short gap has passed, so every figure is the
latency of one study through an idle service, not a queueing time (``--warmup`` studies first, not counted).

Per study, from the service's own timestamps (instances.received_at, revisions.queued_at / started_at /
reported_at, the ``inference_completed`` audit event with the reading's timings, outbox.delivered_at)
and the PACS's receipt time (the mtime of the SR file ``storescp`` wrote, before it answered):

* ``last image → queued - settle``: the completion timer's lateness (the settle time itself is policy);
* ``queued → worker start``: the doorbell, the broker, the worker's claim;
* ``start → read done - reading``: the worker's own work around the model (spool read, decode, audit);
* ``model reading``: the reading's prepare + generate + parse timings (tiny model: nearly nothing);
* ``read done → reported``: SR, HL7 and FHIR built, outbox rows and payloads written;
* ``reported → SR stored at PACS``: the dispatch doorbell, the broker, the C-STORE of the SR;
* the headline, ``last image → SR stored at PACS - settle - reading``: radtrace's own cost per study.

The peer, measured in the same run and on the same studies, is the floor for the same work done directly
in one process with no service: build the same drafts from the same reading (``build_drafts``, the SR
written to a file) and send the SR with ``storescu`` to a second ``storescp`` with the same options,
until that PACS's file mtime. The study's own transfer is shown too: ``storescu`` wall time of the study
into ``radtrace serve`` against into ``storescp``. Rows with no counterpart in one process (completion,
broker hops) have a peer of 0; the model reading (subtracted) has none. Timestamps come from one machine's
wall clock; file mtimes have the kernel's coarse clock granularity (a few ms).

    .venv/bin/python bench/pipeline.py [--studies 50] [--warmup 2] [--settle 1] [--max-new-tokens 48] [--json] \
        [--log serve.log] [--env NAME=VALUE ...]
    .venv/bin/python bench/pipeline.py --burst 64 [--batch 8] [--draft-processes 1]   # N studies at once: batch 1
                                                                     # against batched, without and with draft processes
    .venv/bin/python bench/pipeline.py --store-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres \
        --broker-url redis://127.0.0.1:6379/0

With ``--store-url`` the database named in the URL is not used: a throwaway database is created on that
server and dropped afterwards; with ``--broker-url`` every key is under a throwaway prefix, deleted
afterwards. ``--env NAME=VALUE`` passes extra settings to the service (e.g.
``RADTRACE_BROKER__EMBEDDED_POLLING_INTERVAL_S=0.02``) to see what a setting is worth.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.table import Table

from radtrace.dicom_listener.dcmtk import dcmtk_env, echoscu, storescu
from radtrace.testing.services import free_port, temporary_postgres_database, temporary_redis_namespace
from radtrace.testing.studies import StudySpec, make_study, write_study

TARGET_MS = 300.0
PACS_AE = "BENCHPACS"
CALLING_AE = "PACS"
STOP_TIMEOUT_S = 30.0


# --- child processes ---------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, from /proc; None when gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[19]))


def _descendants(pid: int) -> dict[int, int]:
    """Every live process below ``pid`` with its start time: serve's children live in their own process groups."""
    stats = {int(entry.name): _stat(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit()}
    live = {p: st for p, st in stats.items() if st is not None}
    found: dict[int, int] = {}
    frontier = {pid}
    while frontier:
        frontier = {p for p, (parent, _) in live.items() if parent in frontier and p not in found}
        found |= {p: live[p][1] for p in frontier}
    return found


@dataclass
class Child:
    """A process we started (in its own session) and every process it was seen to start."""

    process: subprocess.Popen[bytes]
    seen: dict[int, int] = field(default_factory=dict)  # pid -> start time, so a reused pid is never killed

    def note_descendants(self) -> None:
        self.seen |= _descendants(self.process.pid)

    def stop(self) -> None:
        """SIGTERM (the supervisor stops its children in order), then SIGKILL whatever is left.

        The SIGKILL pass runs even when the wait is interrupted (a second Ctrl-C)."""
        try:
            if self.process.poll() is None:
                self.note_descendants()
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(STOP_TIMEOUT_S)
        finally:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            for pid, started in (self.seen | _descendants(self.process.pid)).items():
                stat = _stat(pid)
                if stat is not None and stat[1] == started:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def child(command: Sequence[str], env: dict[str, str], log_file: Path) -> Iterator[Child]:
    """Run ``command`` for the block; always stopped afterwards, also on Ctrl-C or SIGTERM."""
    with log_file.open("wb") as log:
        started = Child(
            subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
        try:
            yield started
        finally:
            started.stop()


def _wait_until(condition: Callable[[], bool], timeout: float, what: str, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = log_file.read_text(errors="replace")[-4000:] if log_file and log_file.exists() else ""
            raise RuntimeError(f"{what}: not within {timeout:.0f} s\n{tail}")
        time.sleep(0.01)


@contextlib.contextmanager
def pacs(directory: Path) -> Iterator[int]:
    """dcmtk ``storescp`` as the PACS, writing into ``directory``; yields its port."""
    directory.mkdir(parents=True)
    port = free_port()
    command = ["storescp", "-aet", PACS_AE, "-od", str(directory), str(port)]
    log_file = directory.parent / f"{directory.name}.log"
    with child(command, dcmtk_env(), log_file) as running:
        _wait_until(
            lambda: running.process.poll() is None and echoscu(port, called=PACS_AE).returncode == 0,
            30, "storescp answering C-ECHO", log_file,
        )  # fmt: skip
        yield port


# --- the measured run --------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """One study on disk, ready to send."""

    study_uid: str
    files: list[Path]


@dataclass
class Measured:
    """Per-study timestamps (seconds since the epoch) and durations (seconds)."""

    study_uid: str
    send_s: float  # storescu wall time of the study into radtrace
    first_received: float = 0.0
    last_received: float = 0.0
    queued: float = 0.0
    started: float = 0.0
    read_done: float = 0.0
    reported: float = 0.0
    stored_at_pacs: float = 0.0
    delivered: float = 0.0
    reading_s: float = 0.0
    generate_s: float = 0.0
    reading: dict[str, Any] = field(default_factory=dict)
    peer_send_s: float = 0.0
    peer_build_s: float = 0.0
    peer_store_s: float = 0.0


def _epoch(value: datetime | None) -> float:
    if value is None:
        raise RuntimeError("a stage timestamp is missing: the study did not go all the way through")
    return value.timestamp()


def prepare_studies(directory: Path, count: int) -> list[Prepared]:
    prepared = []
    for seed in range(count):
        spec = StudySpec(seed=seed, patient_id=f"BENCH{seed:05d}", accession=f"BENCHACC{seed:05d}")
        datasets = make_study(spec)
        prepared.append(Prepared(str(datasets[0].StudyInstanceUID), write_study(datasets, directory / f"{seed:05d}")))
    return prepared


# storescp names each file after its SOP class: "SR3." a Comprehensive 3D SR, "SRc." a Comprehensive SR (the
# TID 1500 drafts), "SRt." a Basic Text SR (the companion document, which is not counted).
DRAFT_SR_PREFIXES = ("SR3.", "SRc.")


def _sr_count(directory: Path) -> int:
    """The TID 1500 draft SRs a storescp PACS holds in ``directory``."""
    with os.scandir(directory) as entries:
        return sum(1 for entry in entries if entry.is_file() and entry.name.startswith(DRAFT_SR_PREFIXES))


def send_sequentially(
    studies: Sequence[Prepared], port: int, pacs_dir: Path, gap_s: float, serve: Child, log_file: Path
) -> list[float]:
    """Send each study, wait until its SR is stored at the PACS, pause ``gap_s``; returns storescu wall times."""
    walls = []
    for study in studies:
        before = _sr_count(pacs_dir)
        started = time.perf_counter()
        sent = storescu(study.files, port, calling=CALLING_AE)
        walls.append(time.perf_counter() - started)
        if sent.returncode != 0:
            raise RuntimeError(f"storescu into radtrace failed: {sent.stderr[-800:]}")
        serve.note_descendants()
        arrived = functools.partial(lambda n: _sr_count(pacs_dir) > n, before)
        _wait_until(arrived, 120, f"the SR of {study.study_uid} at the PACS", log_file)
        time.sleep(gap_s)
    return walls


def read_stages(store_url: str, measured: list[Measured], pacs_dir: Path) -> None:
    """Fill in each study's timestamps from the work tables, the audit log and the PACS's files."""
    import sqlalchemy as sa

    from radtrace.audit.schema import AuditEventRow
    from radtrace.store.engine import Store
    from radtrace.store.models import Instance, OutboxMessage, Revision, Study

    mtimes = {path.name: path.stat().st_mtime_ns / 1e9 for path in pacs_dir.iterdir()}
    store = Store.from_url(store_url)
    try:
        with store.session("reading the benchmark's timestamps") as session:
            for item in measured:
                study = session.scalars(sa.select(Study).where(Study.study_uid == item.study_uid)).one()
                revision = session.scalars(sa.select(Revision).where(Revision.study_id == study.id)).one()
                first, last = session.execute(
                    sa.select(sa.func.min(Instance.received_at), sa.func.max(Instance.received_at)).where(
                        Instance.study_id == study.id
                    )
                ).one()
                event = session.execute(
                    sa.select(AuditEventRow.recorded_at, AuditEventRow.payload).where(
                        AuditEventRow.study_uid == item.study_uid, AuditEventRow.event_type == "inference_completed"
                    )
                ).one()
                delivered = session.scalar(
                    sa.select(sa.func.max(OutboxMessage.delivered_at)).where(OutboxMessage.revision_id == revision.id)
                )
                item.first_received, item.last_received = _epoch(first), _epoch(last)
                item.queued = _epoch(revision.queued_at)
                item.started, item.reported = _epoch(revision.started_at), _epoch(revision.reported_at)
                item.read_done, item.delivered = _epoch(event.recorded_at), _epoch(delivered)
                item.reading = json.loads(event.payload)["reading"]
                timings = item.reading["timings"]
                item.reading_s = timings["prepare_s"] + timings["generate_s"] + timings["parse_s"]
                item.generate_s = timings["generate_s"]
                sr_uid = str(revision.sr_sop_instance_uid)
                [mtime] = [when for name, when in mtimes.items() if name.endswith(sr_uid)]
                item.stored_at_pacs = mtime
    finally:
        store.dispose()


def run_peer(studies: Sequence[Prepared], measured: list[Measured], port: int, pacs_dir: Path, scratch: Path) -> None:
    """The floor: the same study sent to storescp; the same drafts built in process; the SR sent by storescu."""
    import pydicom

    from radtrace.config import ReportingSettings
    from radtrace.model.reading import Reading
    from radtrace.reporting.drafts import build_drafts

    scratch.mkdir()
    first = studies[0]  # warm up: the first build pays for imports and caches
    build_drafts(Reading.from_json(json.dumps(measured[0].reading)), [pydicom.dcmread(p) for p in first.files],
                 settings=ReportingSettings(), revision=1)  # fmt: skip
    for study, item in zip(studies, measured, strict=True):
        started = time.perf_counter()
        sent = storescu(study.files, port, calling=CALLING_AE, called=PACS_AE)
        item.peer_send_s = time.perf_counter() - started
        if sent.returncode != 0:
            raise RuntimeError(f"storescu into storescp failed: {sent.stderr[-800:]}")
        reading = Reading.from_json(json.dumps(item.reading))
        sources = [pydicom.dcmread(path) for path in study.files]
        started = time.perf_counter()
        drafts = build_drafts(reading, sources, settings=ReportingSettings(), revision=1)
        sr_file = scratch / f"{drafts.sr_sop_instance_uid}.dcm"
        sr_file.write_bytes(drafts.sr)
        item.peer_build_s = time.perf_counter() - started
        before = time.time()
        sent = storescu([sr_file], port, calling="RADTRACE", called=PACS_AE, options=["--required"])
        if sent.returncode != 0:
            raise RuntimeError(f"storescu of the SR into storescp failed: {sent.stderr[-800:]}")
        [stored] = [path for path in pacs_dir.iterdir() if path.name.endswith(drafts.sr_sop_instance_uid)]
        item.peer_store_s = stored.stat().st_mtime_ns / 1e9 - before


# --- figures -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the closest ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Stage:
    name: str
    value: Callable[[Measured], float]
    peer: Callable[[Measured], float] | None = None
    headline: bool = False


def stages(settle_s: float) -> list[Stage]:
    return [
        Stage("study C-STORE, storescu wall (not in headline)", lambda m: m.send_s, lambda m: m.peer_send_s),
        Stage("first → last image received (not in headline)", lambda m: m.last_received - m.first_received),
        Stage("last image → queued - settle", lambda m: m.queued - m.last_received - settle_s, lambda m: 0.0),
        Stage("queued → worker start", lambda m: m.started - m.queued, lambda m: 0.0),
        Stage("start → read done - model reading", lambda m: m.read_done - m.started - m.reading_s, lambda m: 0.0),
        Stage("model reading (prepare+generate+parse)", lambda m: m.reading_s),
        Stage("read done → reported", lambda m: m.reported - m.read_done, lambda m: m.peer_build_s),
        Stage("reported → SR stored at PACS", lambda m: m.stored_at_pacs - m.reported, lambda m: m.peer_store_s),
        Stage("SR stored at PACS → outbox delivered", lambda m: m.delivered - m.stored_at_pacs),
        Stage(
            "last image → SR stored at PACS - settle - reading",
            lambda m: m.stored_at_pacs - m.last_received - settle_s - m.reading_s,
            lambda m: m.peer_build_s + m.peer_store_s,
            headline=True,
        ),
    ]


def summarise(measured: list[Measured], settle_s: float) -> list[dict[str, Any]]:
    rows = []
    for stage in stages(settle_s):
        values = [stage.value(m) * 1000 for m in measured]
        row: dict[str, Any] = {
            "stage": stage.name,
            "p50_ms": percentile(values, 50),
            "p95_ms": percentile(values, 95),
            "max_ms": max(values),
            "peer_p50_ms": None,
            "peer_p95_ms": None,
            "headline": stage.headline,
        }
        if stage.peer is not None:
            peer = [stage.peer(m) * 1000 for m in measured]
            row["peer_p50_ms"], row["peer_p95_ms"] = percentile(peer, 50), percentile(peer, 95)
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], title: str, console: Console) -> None:
    table = Table(
        "stage", "p50 ms", "p95 ms", "max ms", "peer p50 ms", "peer p95 ms", title=title, title_justify="left"
    )
    for row in rows:
        peer = ("—", "—") if row["peer_p50_ms"] is None else (f"{row['peer_p50_ms']:.1f}", f"{row['peer_p95_ms']:.1f}")
        style = "bold" if row["headline"] else None
        table.add_row(row["stage"], f"{row['p50_ms']:.1f}", f"{row['p95_ms']:.1f}", f"{row['max_ms']:.1f}", *peer,
                      style=style)  # fmt: skip
    console.print(table)


# --- main --------------------------------------------------------------------------------------


def _serve_env(args: argparse.Namespace, root: Path, model_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RADTRACE_DATA_DIR": str(root / "radtrace"),
        "RADTRACE_LISTENER__HOST": "127.0.0.1",
        "RADTRACE_LISTENER__PORT": str(ports["listener"]),
        "RADTRACE_LISTENER__SETTLE_SECONDS": str(args.settle),
        "RADTRACE_LISTENER__ALLOWED_CALLERS": json.dumps([{"ae_title": CALLING_AE}]),
        "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
        "RADTRACE_API__PORT": str(ports["api"]),
        "RADTRACE_MODEL__PATH": str(model_dir),
        "RADTRACE_MODEL__DEVICE": "cpu",
        "RADTRACE_MODEL__MAX_NEW_TOKENS": str(args.max_new_tokens),
        "RADTRACE_DISPATCH__PACS": json.dumps([{"ae_title": PACS_AE, "host": "127.0.0.1", "port": ports["pacs"]}]),
    }
    if args.store_url:
        env["RADTRACE_STORE__URL"] = args.store_url
    if args.broker_url:
        env["RADTRACE_BROKER__URL"] = args.broker_url
        env["RADTRACE_BROKER__KEY_PREFIX"] = args.key_prefix
    for assignment in args.env:
        name, _, value = assignment.partition("=")
        env[name] = value
    return env


def measure(args: argparse.Namespace, root: Path, console: Console) -> tuple[list[Measured], str]:
    from radtrace.model.tiny_model import build_tiny_model

    with console.status("building the tiny model and the studies …"):
        model_dir = build_tiny_model(root / "tiny-model")
        studies = prepare_studies(root / "studies", args.warmup + args.studies)
    with pacs(root / "pacs") as pacs_port, pacs(root / "peer-pacs") as peer_port:
        ports = {"listener": free_port(), "api": free_port(), "pacs": pacs_port}
        env = _serve_env(args, root, model_dir, ports)
        store_url = args.store_url or f"sqlite:///{(root / 'radtrace' / 'radtrace.db').resolve()}"
        if args.store_url:  # PostgreSQL: the schema is made by the operator, not at start
            upgrade = subprocess.run([sys.executable, "-m", "radtrace", "db", "upgrade"], env=env, capture_output=True,
                                     text=True, check=False)  # fmt: skip
            if upgrade.returncode != 0:
                raise RuntimeError(f"radtrace db upgrade failed: {upgrade.stdout}{upgrade.stderr}")
        log_file = root / "serve.log"
        with contextlib.ExitStack() as keep_log:
            if args.log is not None:  # kept even when the run fails: that is when it is wanted
                keep_log.callback(lambda: log_file.exists() and shutil.copyfile(log_file, args.log))
            serve = keep_log.enter_context(child([sys.executable, "-m", "radtrace", "serve"], env, log_file))
            with console.status("starting radtrace serve …"):
                _wait_until(
                    lambda: serve.process.poll() is None and echoscu(ports["listener"], timeout=10).returncode == 0,
                    90, "radtrace serve answering C-ECHO", log_file,
                )  # fmt: skip
            with console.status(f"{args.warmup} warm-up studies …"):
                send_sequentially(studies[: args.warmup], ports["listener"], root / "pacs", args.gap, serve, log_file)
            measured_studies = studies[args.warmup :]
            with console.status(f"{args.studies} studies, one at a time …"):
                walls = send_sequentially(measured_studies, ports["listener"], root / "pacs", args.gap, serve,
                                          log_file)  # fmt: skip
        measured = [Measured(s.study_uid, wall) for s, wall in zip(measured_studies, walls, strict=True)]
        read_stages(store_url, measured, root / "pacs")
        with console.status("the peer: the same drafts built in process, the same transfers with dcmtk …"):
            run_peer(measured_studies, measured, peer_port, root / "peer-pacs", root / "peer-scratch")
    shape = "PostgreSQL + Redis" if args.store_url and args.broker_url else (
        "PostgreSQL + embedded broker" if args.store_url else
        "Redis + SQLite" if args.broker_url else "embedded: SQLite + embedded broker"
    )  # fmt: skip
    return measured, shape


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every context manager: children are stopped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=50, help="studies measured")
    parser.add_argument("--warmup", type=int, default=2, help="studies sent first and not counted")
    parser.add_argument("--settle", type=float, default=1.0, help="listener.settle_seconds (subtracted)")
    parser.add_argument("--gap", type=float, default=0.3, help="pause after a study's SR is stored, seconds")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--store-url", default=None, help="a PostgreSQL server (a throwaway database is made on it)")
    parser.add_argument("--broker-url", default=None, help="a Redis URL (a throwaway key prefix is used)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra service setting")
    parser.add_argument("--log", type=Path, default=None, help="keep radtrace serve's log in this file")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON (the table goes to stderr)")
    parser.add_argument("--burst", type=int, default=0, metavar="N", help="instead: N studies at once (bench/burst.py)")
    parser.add_argument("--batch", type=int, default=8, help="with --burst: the batched model.batch_size")
    parser.add_argument("--draft-processes", type=int, default=1,
                        help="with --burst: model.draft_processes of the rows beside the ones with none")  # fmt: skip
    args = parser.parse_args()
    if args.studies < 1:
        parser.error("--studies must be at least 1")
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    console = Console(stderr=args.json)
    if not console.is_terminal:
        console.width = 160
    if args.burst:
        from burst import run_burst

        args.store_url = args.broker_url = None
        with tempfile.TemporaryDirectory(prefix="radtrace-bench-burst-") as workspace:
            return run_burst(args, Path(workspace), console)

    with (
        tempfile.TemporaryDirectory(prefix="radtrace-bench-pipeline-") as workspace,
        (
            temporary_postgres_database("radtrace_bench", server_url=args.store_url)
            if args.store_url
            else contextlib.nullcontext(None)
        ) as store_url,
        (
            temporary_redis_namespace("radtrace-bench", url=args.broker_url)
            if args.broker_url
            else contextlib.nullcontext(None)
        ) as namespace,
    ):
        args.store_url, args.key_prefix = store_url, namespace.prefix if namespace else None
        measured, shape = measure(args, Path(workspace), console)

    rows = summarise(measured, args.settle)
    headline = next(row for row in rows if row["headline"])
    met = headline["p50_ms"] <= TARGET_MS
    if args.json:
        document = {
            "benchmark": "pipeline",
            "shape": shape,
            "studies": args.studies,
            "settle_s": args.settle,
            "max_new_tokens": args.max_new_tokens,
            "extra_env": args.env,
            "stages": rows,
            "target": {"headline_p50_ms_max": TARGET_MS, "met": met},
            "per_study_ms": [
                {"study_uid": m.study_uid, **{s.name: round(s.value(m) * 1000, 2) for s in stages(args.settle)}}
                for m in measured
            ],
        }
        print(json.dumps(document, indent=2))
    title = (
        f"pipeline: {args.studies} studies one at a time through radtrace serve ({shape}), TINY model on CPU, "
        f"settle {args.settle:g} s, max_new_tokens {args.max_new_tokens}"
        + (f", {' '.join(args.env)}" if args.env else "")
    )
    print_table(rows, title, console)
    console.print(
        "peer: the same drafts built in one process (build_drafts, SR written to a file) and the SR sent by dcmtk"
        " storescu to a second storescp until its file mtime; 0 where one process has no such step."
    )
    console.print(f"headline p50 ≤ {TARGET_MS:.0f} ms: {'met' if met else 'not met'} ({headline['p50_ms']:.1f} ms)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # the context managers have stopped every child by now
        print("interrupted: every process this benchmark started has been stopped", file=sys.stderr)
        raise SystemExit(130) from None
