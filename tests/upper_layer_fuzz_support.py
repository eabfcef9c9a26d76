"""A ``radtrace listen`` process fuzzed with raw upper-layer PDUs, and the invariants checked after each case.

Shared by test_listener_upper_layer_fuzz (broken PDU sequences, hypothesis) and test_listener_dimse_fuzz (DIMSE
requests on established associations). After each case (:meth:`Harness.check`): the process lives; dcmtk's echoscu
from 127.0.0.1 is answered; every instance the listener acknowledged (0x0000) is still in the spool, byte for byte,
with its row and hash; no other instance has a row; no partial file is left in the spool's .incoming; no connection
is left behind; RSS and open descriptors stay under their bounds; and every line of the listener's log begins with its
own timestamp, none is a traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid

from dicom_peer_support import (
    RELEASE_RQ,
    VERIFICATION,
    RawPeer,
    associate_rq,
    echo_rq,
    fragments,
    p_data,
    pdv,
    presentation_context,
    store_rq,
    store_statuses,
)
from listener_support import dataset_bytes
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.testing.abuse import ListenerProcess
from radtrace.testing.services import free_port

__all__ = [
    "ANSWER_WITHIN_S",
    "CONTEXTS",
    "ECHO",
    "EXAMPLES",
    "FILM_DATA",
    "FULL",
    "RQ",
    "SOP_CLASS",
    "Case",
    "Harness",
    "film",
    "running_harness",
    "store_steps",
]

FULL = os.environ.get("RADTRACE_FULL_FUZZ") == "1"
EXAMPLES = int(os.environ.get("RADTRACE_FUZZ_EXAMPLES", "500" if FULL else "6"))
FILM = Path(__file__).parent / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
_META = dcmread(FILM, stop_before_pixels=True)
SOP_CLASS, SYNTAX = str(_META.SOPClassUID), str(_META.file_meta.TransferSyntaxUID)
CONTEXTS = [presentation_context(1, VERIFICATION), presentation_context(3, SOP_CLASS, SYNTAX)]
RQ = associate_rq(CONTEXTS)
ECHO = p_data(pdv(1, 0x03, echo_rq()))
RSS_HEADROOM = 150 * 1024 * 1024
#: Descriptors the listener may hold past its count after the first store (its database pool may grow by a few).
FD_HEADROOM = 12
#: A line of the listener's text log: its own timestamp, level and logger, then the message.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.]+: ")
#: Every case ends, one way or the other, within this long after its last byte (negotiation and
#: network timeouts of 1 s, the abort grace of 1 s, and the watchdog's turn).
ANSWER_WITHIN_S = 4.0


def film(uid: str) -> bytes:
    """The real film's data set with another SOP Instance UID, as it travels (Implicit VR Little Endian)."""
    dataset = dcmread(FILM)
    dataset.SOPInstanceUID = uid
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, dataset)
    return buffer.getvalue()


FILM_DATA = film("1.2.826.0.1.3680043.8.498.1")


@dataclass
class Case:
    """Byte strings to send in order (a float: a pause in seconds), on one or more connections."""

    name: str
    steps: list[bytes | float]
    second: list[bytes | float] = field(default_factory=list)
    """Steps for a second connection from the same host, interleaved one for one with the first."""
    stores: list[list[str]] = field(default_factory=list)
    """For each connection, the SOP Instance UIDs it stores whole: each must be answered 0x0000."""


def store_steps(uid: str, data: bytes, size: int = 16000, *, last: bool = True) -> list[bytes | float]:
    return [
        fragments(3, store_rq(SOP_CLASS, uid), 1000, command=True)[0],
        *fragments(3, data, size, command=False, last=last),
    ]


class Harness:
    """The listener process, what it acknowledged, and the invariants."""

    def __init__(self, listener: ListenerProcess) -> None:
        self.listener = listener
        self.acknowledged: dict[str, bytes] = {}
        self.rss_bound = listener.rss_bytes() + RSS_HEADROOM
        self.fd_bound = _descriptors(listener.pid) + FD_HEADROOM
        self.case_index = 0
        self.engine = sa.create_engine(listener.database_url)

    def source(self) -> str:
        self.case_index += 1
        return f"127.0.0.{2 + self.case_index % 8}"

    def play(self, case: Case) -> list[bytes]:
        """Run the case; what each connection received."""
        source = self.source()
        peers = [RawPeer(self.listener.port, source)]
        if case.second:
            peers.append(RawPeer(self.listener.port, source))
        try:
            plans = [case.steps, case.second] if case.second else [case.steps]
            for index in range(max(len(plan) for plan in plans)):
                for peer, plan in zip(peers, plans, strict=True):
                    if index < len(plan):
                        step = plan[index]
                        if isinstance(step, float):
                            peer.read(step)
                        else:
                            peer.send(step)
                            peer.read(0.01)
            for peer in peers:  # then no more bytes: the listener must answer or close, on its own
                peer.wait_closed(ANSWER_WITHIN_S)
                assert peer.closed, f"{case.name}: connection still open {ANSWER_WITHIN_S} s after the last byte"
            return [peer.received for peer in peers]
        finally:
            for peer in peers:
                peer.close()

    def store(self, uid: str) -> int | None:
        """A real sender's C-STORE of the film under ``uid`` from 127.0.0.1; remembered when acknowledged."""
        data = film(uid)
        with RawPeer(self.listener.port) as peer:
            peer.send(RQ)
            peer.read(3, until_types=1)
            peer.send(*store_steps(uid, data))
            peer.read(10, until_types=2)
            statuses = store_statuses(peer.received)
            peer.send(RELEASE_RQ)
            peer.read(2, until_types=3)
        status = statuses[0] if statuses else None
        if status == 0x0000:
            self.acknowledged[uid] = data
        return status

    def check(self, where: str) -> None:
        listener = self.listener
        assert listener.alive(), f"{where}: the listener process died\n{listener.log.read_text()[-3000:]}"
        answered = echoscu(listener.port, timeout=10)
        assert answered.returncode == 0, f"{where}: echoscu failed: {answered.stdout[-500:]}{answered.stderr[-500:]}"
        rss = listener.rss_bytes()
        assert rss < self.rss_bound, f"{where}: RSS {rss} over {self.rss_bound}"
        self._check_spool(where)
        self._check_connections(where)
        self._check_descriptors(where)
        self._check_log(where)

    def _check_descriptors(self, where: str) -> None:
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while (held := _descriptors(self.listener.pid)) > self.fd_bound and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held <= self.fd_bound, f"{where}: {held} descriptors open, over {self.fd_bound}"

    def _check_spool(self, where: str) -> None:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT sop_instance_uid, path, sha256 FROM instances")).all()
        stored = {uid: (path, sha) for uid, path, sha in rows}
        unacknowledged = sorted(set(stored) - set(self.acknowledged))
        lost = sorted(set(self.acknowledged) - set(stored))
        assert not unacknowledged, f"{where}: rows of instances never acknowledged: {unacknowledged}"
        assert not lost, f"{where}: acknowledged instances without a row: {lost}"
        for uid, sent in self.acknowledged.items():
            path, sha = stored[uid]
            file = self.listener.data_dir / "spool" / path
            assert file.is_file(), f"{where}: {uid} acknowledged but its file is gone"
            assert hashlib.sha256(file.read_bytes()).hexdigest() == sha, f"{where}: {uid} changed on disk"
            assert dataset_bytes(file) == sent, f"{where}: {uid} is not what was sent"
        deadline = time.monotonic() + ANSWER_WITHIN_S
        incoming = self.listener.data_dir / "spool" / ".incoming"
        while any(incoming.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(incoming.iterdir()), f"{where}: partial files left: {list(incoming.iterdir())}"

    def _check_connections(self, where: str) -> None:
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while (left := _established_to(self.listener.port)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"{where}: {left} connection(s) left open"

    def _check_log(self, where: str) -> None:
        text = self.listener.log.read_text(encoding="utf-8", errors="replace")
        strays = [line for line in text.splitlines() if not LOG_LINE.match(line)]
        assert strays == [], f"{where}: log lines not begun by the listener: {strays[:5]}"
        assert "Traceback" not in text, f"{where}: a traceback in the log"


def _descriptors(pid: int) -> int:
    """Open file descriptors of the process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def _established_to(port: int) -> int:
    """Established TCP connections whose local end is ``port`` (the listener's side), from /proc/net/tcp."""
    count = 0
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            if local_port == port and fields[3] == "01":
                count += 1
    return count


@contextlib.contextmanager
def running_harness(directory: Path) -> Iterator[Harness]:
    """A listener process under ``directory`` with short timeouts, checked once after a first store."""
    options = {
        "fsync": "false",
        "negotiation_timeout_s": "1",
        "network_timeout_s": "1",
        "pdu_grace_s": "1",
        "max_image_pixels": "2000000",  # a data set may be 4 x 2 MP + 64 MiB: a flood is cut at that
    }
    with ListenerProcess(directory / "radtrace", free_port(), log_level="INFO", **options) as listener:
        harness = Harness(listener)
        assert harness.store(generate_uid()) == 0x0000
        harness.fd_bound = _descriptors(listener.pid) + FD_HEADROOM
        harness.check("start")
        yield harness
        harness.engine.dispose()
