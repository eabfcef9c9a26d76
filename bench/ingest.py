"""DICOM ingest: radtrace's listener against dcmtk's storescp, both fed by dcmtk's storescu, same run.

Generates N synthetic 2048x2048 16-bit DX instances (8.4 MB each), then sends them with ``storescu``
to (a) ``radtrace listen`` and (b) ``storescp``, one association; then in ``--parallel`` associations
at once, against ``radtrace listen`` with ``--processes`` processes sharing the port and against
``storescp --fork``. Both sides write every file to disk and run with ``TCP_NODELAY=1`` and a
128 KiB PDU (storescp's largest; radtrace asks for unlimited, storescu then sends 128 KiB).
radtrace runs twice: as configured for production (each file fsynced) and with ``listener.fsync``
off, the durability storescp has (it has no fsync option); either way it commits a database row and
an audit row (SQLite, synchronous=FULL) before answering. Each figure is the median of ``--runs``
runs, each into an empty directory. Beside files/s: the CPU time the receiver's processes used per
file (user + system, from /proc, all processes of its session), which says where a gap comes from
on a machine whose cores the sender shares.

Before the first run, as much page cache as one run fills is written and dropped: on a virtual
machine the first write to never-touched guest memory is several times slower, and without this
whichever receiver runs first pays for it.

    .venv/bin/python bench/ingest.py [--instances 200] [--runs 3] [--parallel 4] [--processes 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from radtrace.dicom_listener.dcmtk import dcmtk_env, echoscu, storescu
from radtrace.testing.services import free_port
from radtrace.testing.studies import ImageSpec, StudySpec, make_image

STUDY_UID = "1.2.826.0.1.3680043.8.498.424242"
Peer = Callable[[Path, int], contextlib.AbstractContextManager["Receiver"]]
PDU = "131072"


def generate(directory: Path, count: int, size: int) -> list[Path]:
    """``count`` DX instances of one study, ``size``² 16-bit, differing only in their UIDs."""
    directory.mkdir(parents=True, exist_ok=True)
    ds = make_image(StudySpec(study_uid=STUDY_UID), ImageSpec(rows=size, columns=size, bits_stored=16))
    paths = []
    for index in range(1, count + 1):
        uid = f"{STUDY_UID}.1.{index}"
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.InstanceNumber = index
        path = directory / f"{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def warm_page_cache(directory: Path, size: int) -> None:
    """Write ``size`` bytes to a file and delete it, so the runs get memory the guest has touched before."""
    chunk = b"\0" * (8 << 20)
    path = directory / "warm-up"
    with open(path, "wb") as handle:
        for _ in range(0, size, len(chunk)):
            handle.write(chunk)
    path.unlink()


def session_cpu_seconds(session: int) -> float:
    """User + system CPU of every process in ``session``, with their reaped children (Linux /proc)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[3]) == session:  # field 6 of stat: the session id
            ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _wait_ready(port: int, process: subprocess.Popen[bytes], called: str) -> None:
    deadline = time.monotonic() + 60
    while echoscu(port, calling="BENCH", called=called).returncode != 0:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"peer on port {port} did not start (exit {process.poll()})")
        time.sleep(0.2)


@dataclass(frozen=True)
class Receiver:
    """A running receiver: how many files it has stored, and the CPU its processes have used."""

    stored: Callable[[], int]
    cpu_seconds: Callable[[], float]


@contextlib.contextmanager
def _process(command: Sequence[str], env: dict[str, str], port: int, called: str) -> Iterator[Callable[[], float]]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        _wait_ready(port, process, called)
        yield lambda: session_cpu_seconds(process.pid)  # the leader of a new session: its pid is the sid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def radtrace_listener(out: Path, port: int, processes: int, fsync: bool = True) -> Iterator[Receiver]:
    """``radtrace listen`` writing under ``out``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {
        "RADTRACE_DATA_DIR": str(out),
        "RADTRACE_LISTENER__HOST": "127.0.0.1",
        "RADTRACE_LISTENER__PORT": str(port),
        "RADTRACE_LISTENER__ACCEPT_UNKNOWN_CALLERS": "true",
        "RADTRACE_LISTENER__SETTLE_SECONDS": "3600",
        "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
        "RADTRACE_LISTENER__MAX_ASSOCIATIONS": "64",
        "RADTRACE_LISTENER__PROCESSES": str(processes),
        "RADTRACE_LISTENER__FSYNC": "true" if fsync else "false",
        "RADTRACE_LOGGING__LEVEL": "WARNING",
    }
    with _process([sys.executable, "-m", "radtrace", "listen"], env, port, "RADTRACE") as cpu:
        yield Receiver(lambda: sum(1 for _ in (out / "spool" / STUDY_UID).glob("*.dcm")), cpu)


@contextlib.contextmanager
def dcmtk_listener(out: Path, port: int, fork: bool) -> Iterator[Receiver]:
    """dcmtk ``storescp`` (bit-preserving, 128 KiB PDU) writing into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    command = ["storescp", *(["--fork"] if fork else []), "-od", str(out), "-pdu", PDU, "+B", "-aet", "RADTRACE"]
    with _process([*command, str(port)], dcmtk_env(), port, "RADTRACE") as cpu:
        yield Receiver(lambda: sum(1 for _ in out.glob("*.dcm")) + sum(1 for _ in out.glob("DX.*")), cpu)


def send(files: Sequence[Path], port: int, parallel: int) -> float:
    """Send with ``parallel`` storescu processes at once; returns the wall time."""
    groups = [list(files[i::parallel]) for i in range(parallel)]
    started = time.perf_counter()
    if parallel == 1:
        results = [storescu(files, port, calling="BENCH", options=["-pdu", PDU], timeout=3600)]
    else:
        procs = [
            subprocess.Popen(
                ["storescu", "-aet", "BENCH", "-aec", "RADTRACE", "-pdu", PDU, "127.0.0.1", str(port), *map(str, g)],
                env=dcmtk_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for g in groups
        ]
        results = []
        for proc in procs:
            _, stderr = proc.communicate(timeout=3600)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr.decode()))
    elapsed = time.perf_counter() - started
    for result in results:
        if result.returncode != 0:
            raise RuntimeError(f"storescu failed: {result.stderr[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=200, help="instances per run")
    parser.add_argument("--size", type=int, default=2048, help="image rows and columns")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration; the median is shown")
    parser.add_argument("--parallel", type=int, default=4, help="associations at once in the parallel case")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="radtrace listener processes")
    args = parser.parse_args()

    console = Console(width=max(Console().width, 110))
    with tempfile.TemporaryDirectory(prefix="radtrace-bench-ingest-") as workspace:
        root = Path(workspace)
        with console.status(f"generating {args.instances} instances of {args.size}² …"):
            files = generate(root / "source", args.instances, args.size)
        total_bytes = sum(f.stat().st_size for f in files)
        with console.status("warming the page cache …"):
            warm_page_cache(root, total_bytes * 3 // 2)
        processes, parallel = args.processes, args.parallel
        configs: list[tuple[str, int, Peer]] = [
            ("radtrace, 1 association", 1, lambda out, port: radtrace_listener(out, port, 1)),
            ("radtrace no fsync, 1 association", 1, lambda out, port: radtrace_listener(out, port, 1, False)),
            ("dcmtk storescp, 1 association", 1, lambda out, port: dcmtk_listener(out, port, False)),
            (
                f"radtrace x{processes} processes, {parallel} associations",
                parallel,
                lambda out, port: radtrace_listener(out, port, processes),
            ),
            (
                f"radtrace x{processes} no fsync, {parallel} associations",
                parallel,
                lambda out, port: radtrace_listener(out, port, processes, False),
            ),
            (
                f"dcmtk storescp --fork, {parallel} associations",
                parallel,
                lambda out, port: dcmtk_listener(out, port, True),
            ),
        ]
        timings: dict[str, list[float]] = {name: [] for name, _, _ in configs}
        cpu: dict[str, list[float]] = {name: [] for name, _, _ in configs}
        for run in range(args.runs):
            for name, parallel, peer in configs:
                out = root / f"run{run}-{len(timings[name])}-{name.split()[0]}-{parallel}"
                port = free_port()
                with console.status(f"run {run + 1}/{args.runs}: {name} …"), peer(out, port) as receiver:
                    before = receiver.cpu_seconds()
                    timings[name].append(send(files, port, parallel))
                    cpu[name].append(receiver.cpu_seconds() - before)
                    if receiver.stored() != len(files):
                        raise RuntimeError(f"{name}: {receiver.stored()} of {len(files)} files on disk")
                subprocess.run(["rm", "-rf", str(out)], check=True)

    table = Table(
        "receiver", "files/s", "MB/s", "ratio radtrace/dcmtk", "receiver CPU ms/file",
        title=f"ingest: {args.instances} x {total_bytes / len(files) / 1e6:.1f} MB DX, median of {args.runs} runs",
        title_justify="left",
    )  # fmt: skip
    dcmtk_rate = {
        parallel: len(files) / statistics.median(timings[name])
        for name, parallel, _ in configs
        if name.startswith("dcmtk")
    }
    for name, parallel, _ in configs:
        seconds = statistics.median(timings[name])
        rate = len(files) / seconds
        ratio = "" if name.startswith("dcmtk") else f"{rate / dcmtk_rate[parallel]:.2f}"
        cpu_ms = statistics.median(cpu[name]) / len(files) * 1000
        table.add_row(name, f"{rate:.1f}", f"{total_bytes / seconds / 1e6:.0f}", ratio, f"{cpu_ms:.1f}")
    console.print(table)
    console.print(
        "radtrace: database and audit rows committed (SQLite, synchronous=FULL) before each answer, and each file"
        " fsynced unless 'no fsync'; storescp: no fsync (it has no option for it)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
