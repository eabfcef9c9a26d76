"""The upper layer protocol fuzzed against a ``radtrace listen`` process, with the invariants checked after each case.

Cases start from valid PDUs (A-ASSOCIATE-RQ, P-DATA-TF carrying a real chest film, A-RELEASE-RQ)
and break them: systematically (:func:`systematic_cases`: wrong and huge lengths, truncated items,
duplicate or missing presentation contexts, unknown item types, tiny maximum PDU lengths, unnegotiated
context IDs, commands and data sets that never end or overlap, A-RELEASE and A-ABORT mid-transfer,
bytes after the release, interleaved associations from one host) and with hypothesis (random
sequences of mutated PDUs). Hostile connections come from 127.0.0.2 and up; the real sender is
127.0.0.1.

After each case: the process lives; dcmtk's echoscu from 127.0.0.1 is answered; every instance
the listener acknowledged (0x0000) is still in the spool, byte for byte, with its row and hash; no
other instance has a row (nothing partial was counted); the peer was answered or closed, never left
hanging; no connection is left behind; RSS stays under a bound; and every line of the listener's
log begins with its own timestamp (no line begins with what a peer sent).

The CI sample takes well under a minute. ``RADTRACE_FULL_FUZZ=1`` runs hypothesis for 500 examples
(``RADTRACE_FUZZ_EXAMPLES`` sets another count), with a real store between every case.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid

from dicom_peer_support import (
    ABORT,
    RELEASE_RQ,
    VERIFICATION,
    RawPeer,
    associate_rq,
    command_set,
    echo_rq,
    fragments,
    item,
    p_data,
    pdu,
    pdu_types,
    pdv,
    presentation_context,
    store_rq,
    store_statuses,
    user_information,
)
from listener_support import dataset_bytes
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.dicom_listener.refusals import LIVE_S
from radtrace.testing.abuse import ListenerProcess, echo_seconds
from radtrace.testing.services import free_port

pytestmark = pytest.mark.integration

FULL = os.environ.get("RADTRACE_FULL_FUZZ") == "1"
EXAMPLES = int(os.environ.get("RADTRACE_FUZZ_EXAMPLES", "500" if FULL else "6"))
FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
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


def _film(uid: str) -> bytes:
    """The real film's data set with another SOP Instance UID, as it travels (Implicit VR Little Endian)."""
    dataset = dcmread(FILM)
    dataset.SOPInstanceUID = uid
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, dataset)
    return buffer.getvalue()


FILM_DATA = _film("1.2.826.0.1.3680043.8.498.1")


@dataclass
class Case:
    """Byte strings to send in order (a float: a pause in seconds), on one or more connections."""

    name: str
    steps: list[bytes | float]
    second: list[bytes | float] = field(default_factory=list)
    """Steps for a second connection from the same host, interleaved one for one with the first."""
    stores: list[list[str]] = field(default_factory=list)
    """For each connection, the SOP Instance UIDs it stores whole: each must be answered 0x0000."""


def _store_steps(uid: str, data: bytes, size: int = 16000, *, last: bool = True) -> list[bytes | float]:
    return [
        fragments(3, store_rq(SOP_CLASS, uid), 1000, command=True)[0],
        *fragments(3, data, size, command=False, last=last),
    ]


def systematic_cases() -> list[Case]:
    """One case per rule of PS3.8 broken, each from the valid PDUs."""
    body = RQ[6:]
    cases = [
        Case("RQ length one more than sent", [pdu(0x01, body, length=len(body) + 1)]),
        Case("RQ length ten less than sent", [pdu(0x01, body, length=len(body) - 10)]),
        Case("RQ length zero", [pdu(0x01, b"", length=0)]),
        Case("RQ claims 4 GiB", [pdu(0x01, body, length=0xFFFFFFFF)]),
        Case("RQ cut in the middle of an item", [pdu(0x01, body[:90])]),
        Case("presentation context item longer than the PDU", [RQ.replace(b"\x20\x00\x00", b"\x20\x00\xff", 1)]),
        Case("duplicate presentation context IDs", [associate_rq([*CONTEXTS, presentation_context(1, SOP_CLASS)])]),
        Case("no presentation context", [associate_rq([])]),
        Case("even presentation context ID", [associate_rq([presentation_context(2, VERIFICATION)]), ECHO]),
        Case("unknown item type in the RQ", [associate_rq(CONTEXTS, extra=item(0x99, b"\x00" * 12)), ECHO]),
        Case(
            "unknown sub-item in user information",
            [associate_rq(CONTEXTS, user_info=item(0x50, item(0x5F, b"?"))), ECHO],
        ),
        Case("no user information item", [associate_rq(CONTEXTS, user_info=b""), ECHO]),
        Case("protocol version 0", [RQ[:6] + b"\x00\x00" + RQ[8:]]),
        Case("empty calling AE title", [associate_rq(CONTEXTS, calling=b" " * 16)]),
        Case("calling AE title with a newline and a log line", [associate_rq(CONTEXTS, calling=b"X\n2026-01-01 00:")]),
        Case("max PDU length 0 (unlimited)", [associate_rq(CONTEXTS, user_info=user_information(0)), ECHO]),
        Case("max PDU length 1", [associate_rq(CONTEXTS, user_info=user_information(1)), ECHO]),
        Case("max PDU length 7", [associate_rq(CONTEXTS, user_info=user_information(7)), ECHO]),
        Case("unknown PDU type first", [pdu(0x09, b"\x00" * 8)]),
        Case("P-DATA before any association", [ECHO]),
        Case("A-RELEASE-RQ before any association", [RELEASE_RQ]),
        Case("second A-ASSOCIATE-RQ", [RQ, RQ]),
        Case("P-DATA length longer than its PDVs", [RQ, pdu(0x04, ECHO[6:] + b"\x00" * 8)]),
        Case("PDV length past the PDU", [RQ, pdu(0x04, struct.pack(">LBB", 5000, 1, 3) + b"\x00" * 20)]),
        Case("PDV of length 0", [RQ, pdu(0x04, struct.pack(">L", 0))]),
        Case("P-DATA claims 4 GiB", [RQ, pdu(0x04, b"\x00" * 64, length=0xFFFFFFFF)]),
        Case("P-DATA on an unnegotiated context", [RQ, p_data(pdv(9, 0x03, echo_rq()))]),
        Case("command that never completes", [RQ, *fragments(1, echo_rq(), 8, command=True, last=False), RELEASE_RQ]),
        Case("command set that is noise", [RQ, p_data(pdv(1, 0x03, bytes(range(256)) * 4))]),
        Case(
            "unknown command field",
            [RQ, p_data(pdv(1, 0x03, command_set(AffectedSOPClassUID=VERIFICATION, CommandField=0x0FF0, MessageID=1)))],
        ),
        Case("data fragments never marked last", [RQ, *_store_steps("2.25.1", FILM_DATA[:200000], last=False), 0.3]),
        Case(
            "second command before the data set ends",
            [RQ, *_store_steps("2.25.2", FILM_DATA[:60000], last=False), ECHO],
        ),
        Case("data set for a C-ECHO", [RQ, ECHO, *fragments(1, FILM_DATA[:3000], 1000, command=False)]),
        Case("A-RELEASE-RQ mid data set", [RQ, *_store_steps("2.25.3", FILM_DATA[:60000], last=False), RELEASE_RQ]),
        Case(
            "bytes after the release", [RQ, ECHO, RELEASE_RQ, 0.2, ECHO, b"\n2026-01-01 00:00:00,000 ERROR forged: x"]
        ),
        Case("A-RELEASE-RP never asked for", [RQ, pdu(0x06, bytes(4))]),
        Case("A-ASSOCIATE-AC sent to the acceptor", [RQ, pdu(0x02, RQ[6:])]),
        Case(
            "interleaved associations from one host, both complete",
            [RQ, 0.2, *_store_steps("2.25.4", _film("2.25.4"))],
            second=[RQ, 0.2, *_store_steps("2.25.5", _film("2.25.5"))],
            stores=[["2.25.4"], ["2.25.5"]],
        ),
        Case(
            "interleaved associations from one host, one aborts",
            [RQ, 0.2, *_store_steps("2.25.6", _film("2.25.6"))],
            second=[RQ, 0.2, *_store_steps("2.25.7", FILM_DATA[:50000], last=False), ABORT],
            stores=[["2.25.6"], []],
        ),
    ]
    steps = [RQ, 0.2, *_store_steps("2.25.8", FILM_DATA)]
    cases += [Case(f"A-ABORT after step {n} of {len(steps)}", [*steps[:n], ABORT]) for n in range(0, len(steps), 9)]
    return cases


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
        data = _film(uid)
        with RawPeer(self.listener.port) as peer:
            peer.send(RQ)
            peer.read(3, until_types=1)
            peer.send(*_store_steps(uid, data))
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
        assert set(stored) == set(self.acknowledged), f"{where}: rows {sorted(stored)} != acknowledged"
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


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    directory = tmp_path_factory.mktemp("upper-layer-fuzz")
    options = {
        "fsync": "false",
        "negotiation_timeout_s": "1",
        "network_timeout_s": "1",
        "pdu_grace_s": "1",
        "max_image_pixels": "2000000",  # a data set may be 4 x 2 MP + 64 MiB: the flood below is cut at that
    }
    with ListenerProcess(directory / "radtrace", free_port(), log_level="INFO", **options) as listener:
        harness = Harness(listener)
        assert harness.store(generate_uid()) == 0x0000
        harness.fd_bound = _descriptors(listener.pid) + FD_HEADROOM
        harness.check("start")
        yield harness
        harness.engine.dispose()


@pytest.mark.parametrize("case", systematic_cases(), ids=lambda case: case.name)
def test_a_broken_pdu_sequence_breaks_no_invariant(harness: Harness, case: Case) -> None:
    received = harness.play(case)
    for answer in received:  # whatever came back is whole PDUs of known types
        assert set(pdu_types(answer)) <= {0x02, 0x03, 0x04, 0x06, 0x07}, case.name
    for answer, uids in zip(received, case.stores, strict=False):
        assert store_statuses(answer) == [0x0000] * len(uids), case.name
        harness.acknowledged.update((uid, _film(uid)) for uid in uids)
    harness.check(case.name)
    if FULL:
        assert harness.store(generate_uid()) == 0x0000


_pdu_type = st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x00, 0x08, 0xFF])


@st.composite
def _mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "length", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:]
        elif kind == "length":
            data[at : at + 4] = struct.pack(">L", draw(st.sampled_from([0, 1, 6, 7, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


_step = st.one_of(
    _mutated(ECHO),
    _mutated(RELEASE_RQ),
    _mutated(ABORT),
    _mutated(fragments(3, store_rq(SOP_CLASS, "2.25.99"), 1000, command=True)[0]),
    _mutated(p_data(pdv(3, 0x00, FILM_DATA[:4000]))),
    st.builds(lambda t, n, b: pdu(t, b, length=n), _pdu_type, st.integers(0, (1 << 32) - 1), st.binary(max_size=64)),
    st.sampled_from([0.05, 0.3]),
)


@pytest.mark.timeout(7200 if FULL else 300)  # the full run is longer than the suite's 300 s per test
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not FULL,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(first=st.one_of(st.just(RQ), _mutated(RQ)), rest=st.lists(_step, max_size=6))
def test_random_pdu_sequences_break_no_invariant(harness: Harness, first: bytes, rest: list[bytes | float]) -> None:
    case = Case("hypothesis", [first, *rest])
    harness.play(case)
    harness.check(f"hypothesis: {[s[:12] if isinstance(s, bytes) else s for s in case.steps]}")
    if FULL:
        assert harness.store(generate_uid()) == 0x0000


def test_a_flood_of_data_fragments_is_cut_at_the_image_limit_and_memory_stays_bounded(harness: Harness) -> None:
    with RawPeer(harness.listener.port, "127.0.0.9") as peer:
        peer.send(RQ)
        peer.read(3, until_types=1)
        peer.send(fragments(3, store_rq(SOP_CLASS, "2.25.77"), 1000, command=True)[0])
        fragment = p_data(pdv(3, 0x00, bytes(60000)))
        sent = 0
        while sent < 400 * 1024 * 1024 and 0x07 not in pdu_types(peer.received) and not peer.closed:
            peer.send(fragment)
            sent += len(fragment)
            if sent % (1 << 20) < len(fragment):
                peer.read(0.001)
        assert 0x07 in pdu_types(peer.received) or peer.wait_closed(ANSWER_WITHIN_S), f"sent {sent} bytes"
        assert sent < 200 * 1024 * 1024  # the limit is 8 MB + 64 MiB
    harness.check("flood")


# --- DIMSE requests on an established association (radtrace.dicom_listener.served) ---------------------------------

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root C-FIND: proposed, refused at negotiation
CT = "1.2.840.10008.5.1.4.1.1.2"
DIMSE_RQ = associate_rq([*CONTEXTS, presentation_context(5, FIND)])
REQUEST_REFUSED = "DIMSE request refused"
VIOLATION = "association aborted: protocol violation"
CONTEXTS_REFUSED = "presentation contexts refused at negotiation"


def _command(context_id: int, **elements: object) -> bytes:
    return p_data(pdv(context_id, 0x03, command_set(**elements)))


def _store(context_id: int, uid: str, data: bytes, **changes: object) -> list[bytes | float]:
    elements: dict[str, object] = {
        "AffectedSOPClassUID": SOP_CLASS,
        "CommandField": 0x0001,
        "MessageID": 7,
        "Priority": 0,
        "CommandDataSetType": 0x0000,
        "AffectedSOPInstanceUID": uid,
    }
    elements = {key: value for key, value in (elements | changes).items() if value is not None}
    if elements.get("CommandDataSetType") == 0x0101:
        return [_command(context_id, **elements)]
    return [_command(context_id, **elements), *fragments(context_id, data, 16000, command=False)]


def _even(uid: str) -> bytes:
    return uid.encode() + (b"\0" if len(uid) % 2 else b"")


def _user_information(*sub_items: bytes, max_pdu: int = 16384) -> bytes:
    own = item(0x51, struct.pack(">L", max_pdu)) + item(0x52, _even("1.2.826.0.1.3680043.9.7433.1"))
    return item(0x50, own + b"".join(sub_items))


def _rq_with(*sub_items: bytes, max_pdu: int = 16384) -> bytes:
    return associate_rq(CONTEXTS, user_info=_user_information(*sub_items, max_pdu=max_pdu))


@dataclass
class DimseCase:
    """An association (``rq``) whose requests (``steps``) get these statuses; ``refused`` of them audited as refused
    requests, ``violations`` as protocol violations; ``pipelined``: the steps go without waiting for the AC."""

    name: str
    steps: list[bytes | float]
    statuses: list[int]
    refused: int = 0
    rq: bytes = DIMSE_RQ
    aborted: bool = False
    violations: int = 0
    pipelined: bool = False


def dimse_cases() -> list[DimseCase]:
    """Requests the listener does not serve, commands that break their rules, and negotiation items it ignores."""
    find: dict[str, object] = {"AffectedSOPClassUID": SOP_CLASS, "CommandField": 0x0020, "MessageID": 2, "Priority": 0}
    on_verification = find | {"AffectedSOPClassUID": VERIFICATION, "CommandDataSetType": 0x0101}
    no_data = {"CommandDataSetType": 0x0101}
    identifier = command_set(PatientID="*")[12:]  # a data set: the elements after the group length
    rsp = {"CommandField": 0x8001, "MessageIDBeingRespondedTo": 1, "Status": 0} | no_data
    report = {"CommandField": 0x0100, "MessageID": 5, "AffectedSOPInstanceUID": "2.25.33", "EventTypeID": 1} | no_data
    action = {"CommandField": 0x0130, "MessageID": 4, "RequestedSOPInstanceUID": "2.25.32", "ActionTypeID": 1}
    extended = item(0x56, struct.pack(">H", len(_even(SOP_CLASS))) + _even(SOP_CLASS) + b"\x01" * 64)
    identity = item(0x58, b"\x02\x00" + struct.pack(">H", 60000) + b"A" * 60000 + b"\x00\x00")
    many = [presentation_context(2 * n + 1, SOP_CLASS) for n in range(127)] + [presentation_context(255, VERIFICATION)]
    return [
        DimseCase(
            "C-FIND on a storage context",
            [_command(3, **find, CommandDataSetType=0), *fragments(3, identifier, 100, command=False)],
            [0x0211],
            1,
        ),
        DimseCase("C-FIND on the Verification context", [_command(1, **on_verification)], [0x0211], 1),
        DimseCase(
            "C-MOVE", [_command(3, **find | {"CommandField": 0x0021, "MoveDestination": "X"} | no_data)], [0x0211], 1
        ),
        DimseCase("C-GET", [_command(3, **find | {"CommandField": 0x0010} | no_data)], [0x0211], 1),
        DimseCase(
            "N-CREATE on a storage context",
            [_command(3, AffectedSOPClassUID=SOP_CLASS, CommandField=0x0140, MessageID=3, **no_data)],
            [0x0211],
            1,
        ),
        DimseCase("N-ACTION", [_command(1, RequestedSOPClassUID=VERIFICATION, **action, **no_data)], [0x0211], 1),
        DimseCase("N-EVENT-REPORT", [_command(1, AffectedSOPClassUID=VERIFICATION, **report)], [0x0211], 1),
        DimseCase(
            "C-CANCEL, then a C-ECHO",
            [_command(1, CommandField=0x0FFF, MessageIDBeingRespondedTo=1, **no_data), ECHO],
            [0x0000],
        ),
        DimseCase(
            "C-ECHO on a storage context",
            [_command(3, AffectedSOPClassUID=SOP_CLASS, CommandField=0x0030, MessageID=6, **no_data)],
            [0x0122],
            1,
        ),
        DimseCase(
            "C-STORE naming CT on the DX context", _store(3, "2.25.41", FILM_DATA, AffectedSOPClassUID=CT), [0x0122], 1
        ),
        DimseCase(
            "C-STORE on the Verification context",
            _store(1, "2.25.42", FILM_DATA, AffectedSOPClassUID=VERIFICATION),
            [0x0122],
            1,
        ),
        DimseCase("C-STORE without a data set", _store(3, "2.25.43", b"", **no_data), [0xC210], 1),
        DimseCase("C-STORE without a Message ID", _store(3, "2.25.44", FILM_DATA, MessageID=None), [], 1, aborted=True),
        DimseCase("C-STORE-RSP nobody asked for, then a C-ECHO", [_command(3, **rsp), ECHO], [0x0000], 1),
        DimseCase(
            "twenty C-FINDs", [_command(1, **on_verification | {"MessageID": n}) for n in range(20)], [0x0211] * 20, 20
        ),
        # PS3.8 Table 9-10: each is AA-8 (A-ABORT) in its state; before, none was audited
        DimseCase("C-ECHO after A-RELEASE-RQ", [RELEASE_RQ, ECHO], [], aborted=True, violations=1),
        DimseCase("two A-RELEASE-RQs", [RELEASE_RQ, RELEASE_RQ], [], aborted=True, violations=1),
        DimseCase("A-RELEASE-RP nobody asked for", [pdu(0x06, bytes(4))], [], aborted=True, violations=1),
        DimseCase("A-ASSOCIATE-RQ inside the association", [DIMSE_RQ], [], aborted=True, violations=1),
        DimseCase("C-ECHO before the A-ASSOCIATE-AC", [ECHO], [], aborted=True, violations=1, pipelined=True),
        DimseCase("max PDU length 2^32-1", [ECHO], [0x0000], rq=_rq_with(max_pdu=0xFFFFFFFF)),
        DimseCase("user identity of 60 kB", [ECHO], [0x0000], rq=_rq_with(identity)),
        DimseCase("200 SOP class extended negotiation items", [ECHO], [0x0000], rq=_rq_with(*[extended] * 200)),
        DimseCase(
            "asynchronous operations window 65535",
            [ECHO, ECHO],
            [0x0000] * 2,
            rq=_rq_with(item(0x53, struct.pack(">HH", 65535, 65535))),
        ),
        DimseCase("128 presentation contexts", [p_data(pdv(255, 0x03, echo_rq()))], [0x0000], rq=associate_rq(many)),
    ]


def _refusals(harness: Harness, source: str) -> Counter[str]:
    """The refusals the audit log counts from ``source``, per reason."""
    query = sa.text("SELECT payload FROM audit_events WHERE actor_host = :host AND event_type IN "
                    "('instance_rejected', 'association_rejected')")  # fmt: skip
    with harness.engine.connect() as connection:
        payloads = [json.loads(row[0]) for row in connection.execute(query, {"host": source})]
    counted: Counter[str] = Counter()
    for payload in payloads:
        counted[payload["reason"]] += payload["count"]
    return counted


#: The cases CI runs (``RADTRACE_FULL_FUZZ=1``: all): those that broke an invariant before, and two negotiations.
CI_DIMSE_CASES = frozenset(
    {
        "C-FIND on a storage context",
        "N-CREATE on a storage context",
        "N-ACTION",
        "C-ECHO on a storage context",
        "C-STORE naming CT on the DX context",
        "C-STORE without a data set",
        "C-STORE without a Message ID",
        "C-STORE-RSP nobody asked for, then a C-ECHO",
        "user identity of 60 kB",
        "128 presentation contexts",
        "two A-RELEASE-RQs",
        "C-ECHO before the A-ASSOCIATE-AC",
    }
)


@pytest.mark.parametrize(
    "case", [case for case in dimse_cases() if FULL or case.name in CI_DIMSE_CASES], ids=lambda case: case.name
)
def test_a_dimse_request_the_listener_does_not_serve_is_answered_audited_and_breaks_no_invariant(
    harness: Harness, case: DimseCase
) -> None:
    """Before (radtrace.dicom_listener.served): C-FIND, C-MOVE, C-GET on a storage context aborted with an error
    logged and nothing audited; N-CREATE reached the C-STORE handler (a traceback, 0110H); C-FIND and N-ACTION on the
    Verification context were answered 0000H; a C-STORE naming CT on the DX context was stored; one without a data set
    raised (a traceback); one without a Message ID left its data set in .incoming until the next start. A PDU the
    association's state does not allow was aborted by pynetdicom's state machine, unaudited."""
    harness.case_index += 1
    source = f"127.0.1.{harness.case_index % 250 + 1}"  # a new source: its first refusal is audited at once
    with RawPeer(harness.listener.port, source) as peer:
        peer.send(case.rq)
        if not case.pipelined:
            peer.read(3, until_types=1)
            assert pdu_types(peer.received) == [0x02], case.name
        for step in case.steps:
            if isinstance(step, float):
                peer.read(step)
            else:
                peer.send(step)
        if not case.aborted:
            peer.read(ANSWER_WITHIN_S, until_types=1 + len(case.statuses))
            peer.send(RELEASE_RQ)
        assert peer.wait_closed(ANSWER_WITHIN_S), case.name
    types = pdu_types(peer.received)
    assert store_statuses(peer.received) == case.statuses, (case.name, types)
    assert (0x07 in types) == case.aborted, (case.name, types)
    expected = Counter({REQUEST_REFUSED: case.refused, VIOLATION: case.violations})
    if case.rq == DIMSE_RQ:  # its C-FIND context, refused at negotiation (the AC sent or not)
        expected[CONTEXTS_REFUSED] = 1
    deadline = time.monotonic() + LIVE_S + 1  # the first of a source's interval at once, the rest LIVE_S later
    while (audited := _refusals(harness, source)) != +expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert audited == +expected, case.name
    harness.check(case.name)
    echoed, started = echo_seconds(harness.listener.port), time.monotonic()
    assert harness.store(generate_uid()) == 0x0000
    stored = time.monotonic() - started
    assert echoed is not None, case.name
    assert max(echoed, stored) < 1.0, (case.name, echoed, stored)  # a real sender, associations included
