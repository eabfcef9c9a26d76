"""A hostile network peer for tests and bench/abuse.py: a listener process under attack, and the invariants.

Everything here talks to 127.0.0.1 only (hostile connections come from other loopback source
addresses, 127.0.0.2 and up, so that the per-source limits of the legitimate sender at 127.0.0.1
are not the ones filled). Inputs are seeded: a run can be repeated exactly.

- :class:`ListenerProcess`: ``python -m radtrace listen`` on SQLite, with its RSS and peak RSS;
- :func:`mutated_datasets`, :func:`mutated_pdus`: seeded mutations of real instances and PDUs;
- :class:`Fuzzer`: sends them in batches and checks the invariants after each batch: the process
  lives, its RSS stays under a bound, a legitimate C-ECHO is answered within 2 s, every instance got
  a status, every instance answered 0x0000 is in the spool with the hash its row records.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid
from pynetdicom import AE, _config
from pynetdicom.presentation import build_context

from radtrace.testing.studies import ImageSpec, make_study, write_study

__all__ = [
    "FuzzReport",
    "Fuzzer",
    "ListenerProcess",
    "associate_rq",
    "echo_seconds",
    "hostile_sources",
    "mutated_datasets",
    "mutated_pdus",
    "store_files",
]

_VERIFICATION = "1.2.840.10008.1.1"


def hostile_sources(count: int = 8) -> list[str]:
    """Loopback source addresses for hostile connections (127.0.0.2 …)."""
    return [f"127.0.0.{n}" for n in range(2, 2 + count)]


def _status_kib(pid: int, field_name: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


class ListenerProcess:
    """``radtrace listen`` on 127.0.0.1:port with SQLite under ``data_dir``; a context manager."""

    def __init__(self, data_dir: Path, port: int, *, log_level: str = "WARNING", **listener: str) -> None:
        self.data_dir = data_dir
        self.port = port
        self.env = {
            "RADTRACE_DATA_DIR": str(data_dir),
            "RADTRACE_LISTENER__HOST": "127.0.0.1",
            "RADTRACE_LISTENER__PORT": str(port),
            "RADTRACE_LISTENER__ALLOWED_CALLERS": '[{"ae_title": "PACS"}]',
            "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
            "RADTRACE_LISTENER__SETTLE_SECONDS": "3600",  # no completion work in the way
            "RADTRACE_LOGGING__LEVEL": log_level,
        } | {f"RADTRACE_LISTENER__{key.upper()}": value for key, value in listener.items()}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "listener.log"

    def __enter__(self) -> ListenerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | self.env
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "radtrace", "listen"], env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while not _listening(self.port) or echo_seconds(self.port, timeout=2) is None:
            if not self.alive() or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"listener did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory now."""
        return _status_kib(self.pid, "VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        """Highest resident memory since start (the kernel's high-water mark)."""
        return _status_kib(self.pid, "VmHWM") * 1024

    @property
    def database_url(self) -> str:
        return f"sqlite:///{(self.data_dir / 'radtrace.db').resolve()}"


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def echo_seconds(port: int, *, timeout: float = 2.0) -> float | None:
    """Seconds a legitimate C-ECHO from 'PACS' at 127.0.0.1 took, or ``None`` when it failed."""
    ae = AE(ae_title="PACS")
    ae.add_requested_context(_VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    started = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title="RADTRACE", bind_address=("127.0.0.1", 0))
    try:
        if not assoc.is_established:
            return None
        status = assoc.send_c_echo()
        ok = status is not None and getattr(status, "Status", None) == 0
        return time.monotonic() - started if ok else None
    finally:
        if assoc.is_established:
            assoc.release()


def store_files(files: list[Path], port: int, *, timeout: float = 10.0) -> dict[Path, int | None]:
    """C-STORE each file's bytes as they are on disk (the data set is not parsed on the way), over one
    association from 'PACS' at 127.0.0.1; each file's status, ``None`` when none came back."""
    metas = {path: read_file_meta_info(path) for path in files}
    pairs = sorted({(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas.values()})
    ae = AE(ae_title="PACS")
    ae.requested_contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in pairs]
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    answered: dict[Path, int | None] = dict.fromkeys(files)
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="RADTRACE", bind_address=("127.0.0.1", 0))
        if not assoc.is_established:
            return answered
        for path in files:
            if not assoc.is_established:
                break
            response = assoc.send_c_store(path)
            answered[path] = int(response.Status) if response is not None and "Status" in response else None
        if assoc.is_established:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return answered


def associate_rq(calling: str = "PACS", called: str = "RADTRACE") -> bytes:
    """The bytes of a real A-ASSOCIATE-RQ (pynetdicom's), captured from a socket that answers nothing."""
    server = socket.create_server(("127.0.0.1", 0))
    captured: list[bytes] = []

    def capture() -> None:
        client, _ = server.accept()
        with client:
            client.settimeout(5)
            data = b""
            while len(data) < 6 or len(data) < 6 + struct.unpack(">L", data[2:6])[0]:
                chunk = client.recv(65536)
                if not chunk:
                    break
                data += chunk
            captured.append(data)

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    ae = AE(ae_title=calling)
    ae.add_requested_context(_VERIFICATION)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.1.1")  # DX for presentation
    ae.acse_timeout = ae.network_timeout = 1
    ae.associate("127.0.0.1", server.getsockname()[1], ae_title=called)
    thread.join(5)
    server.close()
    return captured[0]


# --- mutations ---------------------------------------------------------------------------------


def _mutate(data: bytes, rng: random.Random, *, keep: int = 0) -> bytes:
    """One to three random mutations of ``data`` after its first ``keep`` bytes."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        span = max(len(buffer) - keep, 1)
        at = keep + rng.randrange(span)
        kind = rng.randrange(7)
        if kind == 0:  # flip bits
            for _ in range(rng.randint(1, 8)):
                spot = keep + rng.randrange(span)
                if spot < len(buffer):
                    buffer[spot] ^= 1 << rng.randrange(8)
        elif kind == 1:  # truncate
            del buffer[at:]
        elif kind == 2:  # a 32-bit length-like field set to an extreme
            value = rng.choice([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF, rng.randrange(1 << 32)])
            buffer[at : at + 4] = struct.pack("<L" if rng.random() < 0.5 else ">L", value)
        elif kind == 3:  # a 16-bit field
            buffer[at : at + 2] = struct.pack("<H", rng.choice([0, 0xFFFF, rng.randrange(1 << 16)]))
        elif kind == 4:  # insert junk
            buffer[at:at] = rng.randbytes(rng.randint(1, 64))
        elif kind == 5:  # duplicate a slice
            width = rng.randint(1, 256)
            buffer[at:at] = buffer[at : at + width]
        else:  # control characters and separators where text is
            buffer[at : at + 3] = rng.choice([b"\n\x00\r", b"\\\\\\", b"\x1b[2", b"../", b"\xff\xfe\x00"])
    return bytes(buffer)


def _base_instances(directory: Path) -> list[Path]:
    specs = [
        ImageSpec(rows=64, columns=64),
        ImageSpec(rows=48, columns=40, modality="CR"),
        ImageSpec(rows=64, columns=48, transfer_syntax=JPEG2000Lossless),
        ImageSpec(rows=32, columns=32, transfer_syntax=RLELossless),
    ]
    return [write_study(make_study(images=[spec]), directory / str(n))[0] for n, spec in enumerate(specs)]


def mutated_datasets(directory: Path, count: int, seed: int) -> list[Path]:
    """``count`` Part 10 files: real instances with a fresh SOP Instance UID and a mutated data set.

    The file meta is left intact (it is what the sender reads to pick a presentation context); the
    data set after it, which travels over the network, is mutated.
    """
    rng = random.Random(seed)
    bases = _base_instances(directory / "base")
    out = directory / "mutated"
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        ds = dcmread(bases[index % len(bases)])
        uid = generate_uid(entropy_srcs=[str(seed), str(index)])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        path = out / f"{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
        path.write_bytes(data[:meta_end] + _mutate(data[meta_end:], rng, keep=0 if index % 5 else 64))
        files.append(path)
    return files


def mutated_pdus(count: int, seed: int) -> list[list[bytes]]:
    """``count`` byte sequences, each for one connection: a mutated A-ASSOCIATE-RQ, or a valid one and then
    mutated PDUs (P-DATA-TF, release, abort, unknown types, absurd lengths)."""
    rng = random.Random(seed)
    rq = associate_rq()
    release = struct.pack(">BBL", 0x05, 0, 4) + b"\x00" * 4
    abort = struct.pack(">BBL", 0x07, 0, 4) + b"\x00\x00\x02\x00"
    pdata = struct.pack(">BBL", 0x04, 0, 12) + struct.pack(">L", 8) + b"\x01\x03" + b"\x00" * 6
    sequences = []
    for index in range(count):
        kind = index % 4
        if kind == 0:
            sequences.append([_mutate(rq, rng)])
        elif kind == 1:
            sequences.append([_mutate(rq, rng, keep=6)])  # the header kept: the body is what is wrong
        elif kind == 2:
            follow = [_mutate(rng.choice([pdata, release, abort, rq]), rng) for _ in range(rng.randint(1, 4))]
            sequences.append([rq, *follow])
        else:
            header = struct.pack(">BBL", rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 0x41, 0xFF]), 0, rng.randrange(1 << 32))
            sequences.append([header + rng.randbytes(rng.randint(0, 32))])
    return sequences


# --- the fuzzer --------------------------------------------------------------------------------


@dataclass
class FuzzReport:
    """What a fuzz run sent, what came back, and whether any invariant broke."""

    datasets: int = 0
    pdu_sequences: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    without_status: int = 0
    acknowledged: int = 0
    acknowledged_but_lost: int = 0
    crashes: int = 0
    slowest_echo_s: float = 0.0
    peak_rss_bytes: int = 0
    broken: list[str] = field(default_factory=list)


class Fuzzer:
    """Sends seeded hostile input to a :class:`ListenerProcess` in batches, checking invariants after each."""

    def __init__(self, listener: ListenerProcess, *, rss_bound_bytes: int, echo_bound_s: float = 2.0) -> None:
        self.listener = listener
        self.rss_bound = rss_bound_bytes
        self.echo_bound = echo_bound_s
        self.report = FuzzReport()
        self._sources = hostile_sources()

    def check(self, where: str) -> None:
        """The invariants: alive, RSS under the bound, a legitimate C-ECHO within the bound."""
        report = self.report
        if not self.listener.alive():
            report.crashes += 1
            report.broken.append(f"{where}: the listener process died")
            return
        rss = self.listener.rss_bytes()
        report.peak_rss_bytes = max(report.peak_rss_bytes, self.listener.peak_rss_bytes())
        if rss > self.rss_bound:
            report.broken.append(f"{where}: listener RSS {rss} over {self.rss_bound}")
        took = echo_seconds(self.listener.port, timeout=self.echo_bound)
        if took is None or took > self.echo_bound:
            report.broken.append(f"{where}: no C-ECHO answered within {self.echo_bound} s")
        else:
            report.slowest_echo_s = max(report.slowest_echo_s, took)

    def send_datasets(self, files: list[Path], batch: int = 100) -> None:
        """C-STORE the files, ``batch`` per association, checking the invariants after each batch."""
        for start in range(0, len(files), batch):
            part = files[start : start + batch]
            answered = store_files(part, self.listener.port)
            self.report.datasets += len(part)
            for path in part:
                status = answered.get(path)
                if status is None:
                    self.report.without_status += 1
                    continue
                key = f"0x{status:04X}"
                self.report.statuses[key] = self.report.statuses.get(key, 0) + 1
            self._check_acknowledged([path for path, status in answered.items() if status == 0x0000])
            self.check(f"datasets {start}-{start + len(part) - 1}")
        if self.report.without_status:
            self.report.broken.append(f"{self.report.without_status} instance(s) got no status")

    def _check_acknowledged(self, acknowledged: list[Path]) -> None:
        """Every instance answered 0x0000 has its row, its file in the spool, and that file's hash."""
        if not acknowledged:
            return
        engine = sa.create_engine(self.listener.database_url)
        try:
            with engine.connect() as connection:
                for path in acknowledged:
                    uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
                    rows = connection.execute(
                        sa.text("SELECT path, sha256 FROM instances WHERE sop_instance_uid = :uid"), {"uid": uid}
                    ).all()
                    self.report.acknowledged += 1
                    stored = [self.listener.data_dir / "spool" / row[0] for row in rows]
                    if not any(p.is_file() and _sha256(p) == row[1] for p, row in zip(stored, rows, strict=True)):
                        self.report.acknowledged_but_lost += 1
                        self.report.broken.append(f"acknowledged but lost: {path.name}")
        finally:
            engine.dispose()

    def send_pdus(self, sequences: list[list[bytes]], batch: int = 100, parallel: int = 16) -> None:
        """Play each byte sequence on its own connection (from a hostile source), checking after each batch."""
        for start in range(0, len(sequences), batch):
            part = sequences[start : start + batch]
            with ThreadPoolExecutor(parallel) as pool:
                list(pool.map(self._play, range(start, start + len(part)), part))
            self.report.pdu_sequences += len(part)
            self.check(f"PDU sequences {start}-{start + len(part) - 1}")

    def _play(self, index: int, sequence: list[bytes]) -> None:
        source = self._sources[index % len(self._sources)]
        with contextlib.suppress(OSError), _connected(self.listener.port, source) as sock:
            for pdu in sequence:
                sock.sendall(pdu)
                _drain(sock, 0.05)


@contextlib.contextmanager
def _connected(port: int, source: str) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(source, 0))
    try:
        yield sock
    finally:
        sock.close()


def _drain(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    received = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
