"""storescu's own byte stream of a real film, recorded through a proxy, mutated and replayed to ``radtrace listen``.

test_listener_upper_layer_fuzz and test_listener_dimse_fuzz build their PDUs with our own helpers; these cases start
from what a real sender puts on the wire: storescu (dcmtk) sends a real film (tests/data/real-cxr) through a
recording proxy to the listener, and the client's bytes (A-ASSOCIATE-RQ with storescu's presentation contexts, the
C-STORE command and data set in storescu's P-DATA-TFs, A-RELEASE-RQ) are split into PDUs. Each case gives the film a
fresh SOP Instance UID of the same length (lengths unchanged), mutates the stream and replays it from its own source
address:

* refragmented (valid: the film must be stored): the command in 1-byte PDVs, the data set in PDVs of 1 to 16,000
  bytes, one or several PDVs per PDU;
* bit flips in PDU and PDV headers, in the A-ASSOCIATE-RQ, in the command, in the data set's first elements and in
  its pixel data;
* truncations at, just before and just after each PDU boundary, and inside PDUs;
* each PDU's and PDV's length field, and the A-ASSOCIATE-RQ's item lengths, one more, one less, 0, 64 KiB, 4 GiB;
* PDUs swapped, duplicated, dropped, the release first;
* interleaved presentation contexts: data set fragments on another accepted context, a C-ECHO between two fragments;
* the SOP Instance UID (command and data set) replaced by text with a newline or carriage return and a forged log
  line, terminal escapes, NUL, NEL and U+2028, format specifiers.

After each case (upper_layer_fuzz_support's Harness.check): the process lives and answers dcmtk's echoscu; every
instance answered with a success status is in the spool, its file exactly the data set that a strict reading of the
bytes sent yields (an instance acknowledged from bytes that do not read as a whole, well-formed stream fails), with
its row and hash; no other instance has a row and no partial file is left; no connection, descriptor or thread is
left behind (threads are checked here too); RSS stays bounded; every log line begins with the listener's own
timestamp (none begins with a peer's bytes, none with the forged line's timestamp), none is a traceback.

CI runs a seeded sample of each family (:data:`CI_PER_FAMILY`); ``RADTRACE_FULL_FUZZ=1`` runs every case.
"""

from __future__ import annotations

import json
import random
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom import dcmread

from dicom_peer_support import RawPeer, echo_rq, pdu, pdv, store_statuses
from radtrace.dicom_listener.dcmtk import storescu
from upper_layer_fuzz_support import ANSWER_WITHIN_S, FULL, Harness, running_harness

pytestmark = pytest.mark.integration

FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "canine-dx-thorax-lateral-mono1-small.dcm"
#: The recorded film's SOP Instance UID: 64 characters, as each case's (the lengths in the stream stay right).
RECORDED_UID = "2.25." + "1" * 59
SEED = 20261206
#: Cases of each family in CI (seeded sample); ``RADTRACE_FULL_FUZZ=1`` runs them all.
CI_PER_FAMILY = 6
#: Threads the listener may hold past its count after the first store, once a case is over.
THREAD_HEADROOM = 2
#: Statuses that tell the sender its instance is stored (success and the warnings, PS3.4 B.2.3).
ACCEPTED = {0x0000, 0xB000, 0xB006, 0xB007}
_HEADER = struct.Struct(">BBL")


# --- the recording ---------------------------------------------------------------------------------------------------


def _proxy(target_port: int, recorded: bytearray) -> tuple[int, threading.Thread]:
    """A one-connection TCP proxy to the listener that keeps what the client sends; its port and thread."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with server:
            server.settimeout(60)
            client, _ = server.accept()
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=60)
            with client, upstream:
                ends = {client: upstream, upstream: client}
                while ends:
                    readable, _, _ = select.select(list(ends), [], [], 60)
                    if not readable:
                        return
                    for end in readable:
                        data = end.recv(65536)
                        if not data:
                            other = ends.pop(end)
                            ends.pop(other, None)
                            break
                        if end is client:
                            recorded.extend(data)
                        ends[end].sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return int(server.getsockname()[1]), thread


def split_pdus(stream: bytes) -> list[bytes]:
    """The PDUs of a well-formed stream, each with its header."""
    pdus, offset = [], 0
    while offset < len(stream):
        _, _, length = _HEADER.unpack_from(stream, offset)
        pdus.append(stream[offset : offset + 6 + length])
        offset += 6 + length
    assert offset == len(stream)
    return pdus


def pdvs_of(body: bytes) -> list[tuple[int, int, bytes]]:
    """``(context ID, control header, fragment)`` of each PDV in a P-DATA-TF body (well-formed)."""
    items, offset = [], 0
    while offset < len(body):
        (length,) = struct.unpack_from(">L", body, offset)
        items.append((body[offset + 4], body[offset + 5], body[offset + 6 : offset + 4 + length]))
        offset += 4 + length
    return items


@dataclass(frozen=True)
class Recording:
    """storescu's PDUs for one C-STORE of the film, and what they carry."""

    pdus: list[bytes]
    context_id: int
    """The presentation context ID the command and data set went on."""
    other_context_ids: list[int]
    """Other context IDs storescu proposed (the listener accepts some of them)."""
    command: bytes
    data: bytes

    @property
    def stream(self) -> bytes:
        return b"".join(self.pdus)

    def with_uid(self, uid: str) -> list[bytes]:
        """The PDUs with the film's SOP Instance UID replaced by ``uid`` (as long)."""
        assert len(uid) == len(RECORDED_UID)
        pdus = [p.replace(RECORDED_UID.encode(), uid.encode()) for p in self.pdus]
        assert b"".join(pdus).count(uid.encode()) == 2  # the command's and the data set's
        return pdus


def record(harness: Harness, directory: Path) -> Recording:
    """Send the film with storescu through the proxy; the recording (its instance acknowledged in the harness)."""
    dataset = dcmread(FILM)
    dataset.SOPInstanceUID = RECORDED_UID
    dataset.file_meta.MediaStorageSOPInstanceUID = RECORDED_UID
    film = directory / "film.dcm"
    dataset.save_as(film, enforce_file_format=True)
    recorded = bytearray()
    port, thread = _proxy(harness.listener.port, recorded)
    sent = storescu([film], port)
    thread.join(30)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    pdus = split_pdus(bytes(recorded))
    assert pdus[0][0] == 0x01
    assert pdus[-1][0] == 0x05
    command, data, context_ids = b"", b"", set()
    for p in pdus:
        if p[0] == 0x04:
            for context_id, control, fragment in pdvs_of(p[6:]):
                context_ids.add(context_id)
                if control & 1:
                    command += fragment
                else:
                    data += fragment
    assert len(context_ids) == 1
    [context_id] = context_ids
    proposed = _proposed_context_ids(pdus[0])
    recording = Recording(pdus, context_id, [c for c in proposed if c != context_id], command, data)
    harness.acknowledged[RECORDED_UID] = data
    return recording


def _proposed_context_ids(rq: bytes) -> list[int]:
    """The presentation context IDs an A-ASSOCIATE-RQ proposes."""
    ids, offset = [], 6 + 68
    while offset + 4 <= len(rq):
        item_type, _, length = struct.unpack_from(">BBH", rq, offset)
        if item_type == 0x20:
            ids.append(rq[offset + 4])
        offset += 4 + length
    return ids


# --- a strict reading of what was sent -------------------------------------------------------------------------------


def strict_data_set(stream: bytes) -> bytes | None:
    """The data set of the one C-STORE a stream carries when it reads as PS3.8 says, else ``None``.

    An A-ASSOCIATE-RQ first; then whole P-DATA-TFs whose PDVs are well-formed, all on one context, the command's
    fragments first (its last flagged), then the data set's (its last flagged), nothing else in between.
    """
    offset, pdus = 0, []
    while offset + 6 <= len(stream):
        pdu_type, _, length = _HEADER.unpack_from(stream, offset)
        if offset + 6 + length > len(stream):
            break
        pdus.append((pdu_type, stream[offset + 6 : offset + 6 + length]))
        offset += 6 + length
    if not pdus or pdus[0][0] != 0x01:
        return None
    command_done, data, context = False, bytearray(), None
    for pdu_type, body in pdus[1:]:
        if pdu_type != 0x04:
            return None
        at = 0
        while at < len(body):
            if at + 6 > len(body):
                return None
            (length,) = struct.unpack_from(">L", body, at)
            if length < 2 or at + 4 + length > len(body):
                return None
            context_id, control, fragment = body[at + 4], body[at + 5], body[at + 6 : at + 4 + length]
            at += 4 + length
            if context is None:
                context = context_id
            if context_id != context or (control & 1) == command_done:
                return None  # another context, or a command fragment inside the data set (or the reverse)
            if control & 1:
                command_done = bool(control & 2)
                continue
            data += fragment
            if control & 2:
                return bytes(data)
    return None


# --- the cases -------------------------------------------------------------------------------------------------------


@dataclass
class Mutation:
    name: str
    apply: Callable[[list[bytes], Recording], list[bytes]]
    """From the PDUs (with the case's UID), the byte strings to send in order."""
    must_store: bool = False
    """The result is still a valid C-STORE: the film must be acknowledged and stored."""


def _refragmented(command_size: int, data_size: int, per_pdu: int) -> Mutation:
    def apply(pdus: list[bytes], rec: Recording) -> list[bytes]:
        stream = b"".join(pdus)
        data = strict_data_set(stream)
        assert data is not None
        command = b"".join(f for p in pdus if p[0] == 0x04 for _, c, f in pdvs_of(p[6:]) if c & 1)
        items = [
            pdv(
                rec.context_id,
                0x01 | (0x02 if at + command_size >= len(command) else 0),
                command[at : at + command_size],
            )
            for at in range(0, len(command), command_size)
        ]
        items += [
            pdv(rec.context_id, 0x02 if at + data_size >= len(data) else 0, data[at : at + data_size])
            for at in range(0, len(data), data_size)
        ]
        p_datas = [pdu(0x04, b"".join(items[at : at + per_pdu])) for at in range(0, len(items), per_pdu)]
        return [pdus[0], *p_datas, pdus[-1]]

    name = f"refragmented: command in {command_size}-byte PDVs, data set in {data_size}-byte PDVs, {per_pdu} a PDU"
    return Mutation(name, apply, must_store=True)


def _flip(at: int, bit: int, where: str) -> Mutation:
    def apply(pdus: list[bytes], rec: Recording) -> list[bytes]:
        stream = bytearray(b"".join(pdus))
        stream[at] ^= 1 << bit
        return [bytes(stream)]

    return Mutation(f"bit {bit} of byte {at} flipped ({where})", apply)


def _truncated(at: int, where: str) -> Mutation:
    return Mutation(f"cut after {at} bytes ({where})", lambda pdus, rec: [b"".join(pdus)[:at]])


def _length(at: int, size: int, value: int, where: str) -> Mutation:
    def apply(pdus: list[bytes], rec: Recording) -> list[bytes]:
        stream = bytearray(b"".join(pdus))
        stream[at : at + size] = value.to_bytes(size, "big")
        return [bytes(stream)]

    return Mutation(f"{where} length set to {value}", apply)


def _reordered(name: str, order: Callable[[list[bytes]], list[bytes]]) -> Mutation:
    return Mutation(name, lambda pdus, rec: order(list(pdus)))


def _swap(pdus: list[bytes], i: int) -> list[bytes]:
    pdus[i], pdus[i + 1] = pdus[i + 1], pdus[i]
    return pdus


def _interleaved(kind: str) -> Mutation:
    def apply(pdus: list[bytes], rec: Recording) -> list[bytes]:
        other = rec.other_context_ids[0] if rec.other_context_ids else rec.context_id + 2
        out, pending = [pdus[0]], True
        for p in pdus[1:-1]:
            items = pdvs_of(p[6:])
            data_pdu = not items[0][1] & 1
            if kind == "echo" and data_pdu and pending and len(out) > 2:  # between two of the data set's PDUs
                out.append(pdu(0x04, pdv(other, 0x03, echo_rq(7))))
                pending = False
            if kind == "alternate" and data_pdu and pending:  # one data set PDU on the other context
                out.append(pdu(0x04, b"".join(pdv(other, c, f) for _, c, f in items)))
                pending = False
                continue
            out.append(p)
        out.append(pdus[-1])
        return out

    names = {
        "alternate": "one data set P-DATA-TF on another presentation context",
        "echo": "a C-ECHO on another presentation context between data set fragments",
    }
    return Mutation(names[kind], apply)


#: A forged log line's start: no line of the listener's log may begin with it.
FORGED = "2026-01-01 00:00:00,000"


def _uid_text(text: str) -> Mutation:
    """The film's SOP Instance UID (command and data set) replaced by ``text``, padded to the UID's length."""
    value = (text.encode() + b"9" * len(RECORDED_UID))[: len(RECORDED_UID)]  # as many bytes: the lengths stay right

    def apply(pdus: list[bytes], rec: Recording) -> list[bytes]:
        [uid] = {m for p in pdus for m in re.findall(rb"2\.25\.\d{59}", p)} - {RECORDED_UID.encode()}
        return [p.replace(uid, value) for p in pdus]

    return Mutation(f"SOP Instance UID {text!r}", apply)


def mutations(rec: Recording) -> dict[str, list[Mutation]]:
    """Every case, by family."""
    stream = rec.stream
    bounds, at = [], 0
    for p in rec.pdus:
        bounds.append(at)
        at += len(p)
    headers = [(start + i, f"PDU {n} header") for n, start in enumerate(bounds) for i in range(6)]
    pdv_headers = []
    for n, start in enumerate(bounds):
        if rec.pdus[n][0] != 0x04:
            continue
        offset = 6
        body = rec.pdus[n]
        while offset < len(body):
            (length,) = struct.unpack_from(">L", body, offset)
            pdv_headers.append((start + offset, n))
            offset += 4 + length
    rq_items, offset = [], 6 + 68
    while offset + 4 <= len(rec.pdus[0]):
        _, _, length = struct.unpack_from(">BBH", rec.pdus[0], offset)
        rq_items.append(offset)
        offset += 4 + length
    data_start = stream.index(rec.data[:64])
    command_start = stream.index(rec.command[:32])
    flips: list[Mutation] = []
    for byte, where in headers:
        flips += [_flip(byte, bit, where) for bit in range(8)]
    for byte, n in pdv_headers:
        flips += [_flip(byte + i, bit, f"PDV header in PDU {n}") for i in range(6) for bit in range(8)]
    flips += [_flip(6 + i, bit, "A-ASSOCIATE-RQ's fixed fields") for i in range(68) for bit in range(8)]
    flips += [
        _flip(item + i, bit, f"A-ASSOCIATE-RQ item at {item}") for item in rq_items for i in range(4) for bit in (0, 7)
    ]
    flips += [_flip(command_start + i, bit, "command") for i in range(len(rec.command)) for bit in (0, 5)]
    flips += [_flip(data_start + i, bit, "data set's first elements") for i in range(512) for bit in (0, 6)]
    picks = random.Random(SEED)
    flips += [
        _flip(data_start + picks.randrange(len(rec.data)), picks.randrange(8), "data set, anywhere") for _ in range(64)
    ]
    cuts = [_truncated(b + d, f"PDU {n} boundary {d:+d}") for n, b in enumerate(bounds[1:], 1) for d in (-1, 0, 1)]
    cuts += [_truncated(b + len(rec.pdus[n]) // 2, f"middle of PDU {n}") for n, b in enumerate(bounds)]
    lengths: list[Mutation] = []
    for n, start in enumerate(bounds):
        value = len(rec.pdus[n]) - 6
        lengths += [
            _length(start + 2, 4, v, f"PDU {n}'s") for v in (value - 1, value + 1, 0, 0xFFFF, 0xFFFFFFFF) if v >= 0
        ]
    for byte, n in pdv_headers:
        (value,) = struct.unpack_from(">L", stream, byte)
        lengths += [_length(byte, 4, v, f"a PDV in PDU {n}'s") for v in (value - 1, value + 1, 0, 1, 0xFFFFFFFF)]
    for item in rq_items:
        (value,) = struct.unpack_from(">H", rec.pdus[0], item + 2)
        lengths += [
            _length(item + 2, 2, v, f"A-ASSOCIATE-RQ item at {item}'s")
            for v in (value - 1, value + 1, 0, 0xFFFF)
            if v >= 0
        ]
    last = len(rec.pdus) - 1
    reorders = [_reordered(f"PDUs {i} and {i + 1} swapped", lambda p, i=i: _swap(p, i)) for i in range(last)]
    reorders += [_reordered(f"PDU {i} twice", lambda p, i=i: [*p[: i + 1], p[i], *p[i + 1 :]]) for i in range(1, last)]
    reorders += [_reordered(f"PDU {i} dropped", lambda p, i=i: p[:i] + p[i + 1 :]) for i in range(1, last)]
    reorders += [_reordered("A-RELEASE-RQ first", lambda p: [p[-1], *p[:-1]])]
    reorders += [_reordered("A-RELEASE-RQ after the RQ", lambda p: [p[0], p[-1], *p[1:-1]])]
    refragmented = [
        _refragmented(c, d, k)
        for c, d, k in [(1, 16000, 1), (1, 1, 64), (3, 7, 200), (50, 999, 10), (1000, 4093, 3), (1000, 16000, 1)]
    ]
    interleaved = [_interleaved("alternate"), _interleaved("echo")]
    texts = [
        _uid_text(f"1.2\n{FORGED} ERROR    radtrace.forged: F"),
        _uid_text(f"1.2\r{FORGED} ERROR    radtrace.forged: F"),
        _uid_text("1.2\x1b[2J\x1b[H\x00\x85\u2028"),
        _uid_text("1.2 %s %d {0} ${jndi:x}"),
    ]
    return {
        "refragmented": refragmented,
        "flips": flips,
        "truncations": cuts,
        "lengths": lengths,
        "reorderings": reorders,
        "interleaved": interleaved,
        "texts": texts,
    }


def sample(cases: list[Mutation]) -> list[Mutation]:
    if FULL or len(cases) <= CI_PER_FAMILY:
        return cases
    return random.Random(SEED).sample(cases, CI_PER_FAMILY)


# --- the run ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, Recording, int]]:
    directory = tmp_path_factory.mktemp("recorded-stream-fuzz")
    with running_harness(directory) as harness:
        recording = record(harness, directory)
        harness.check("recorded")
        yield harness, recording, _threads(harness.listener.pid)


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def _uids() -> Iterator[str]:
    for n in range(1, 10**9):
        yield f"2.25.{10**58 + n}"


UIDS = _uids()


def _send(harness: Harness, recording: Recording, steps: list[bytes]) -> bytes:
    """Send as storescu does: the first PDU's bytes, then (once answered) the rest PDU by PDU; what came back.

    A mutation that keeps the PDUs apart is sent PDU by PDU; one that made them one byte string is cut where the
    recording's PDUs end (where its lengths say they end is for the listener to find).
    """
    if len(steps) == 1:
        blob, steps, at = steps[0], [], 0
        for p in recording.pdus:
            steps.append(blob[at : at + len(p)])
            at += len(p)
        steps[-1] += blob[at:]
        steps = [s for s in steps if s]
    with RawPeer(harness.listener.port, harness.source()) as peer:
        peer.send(steps[0])
        peer.read(3, until_types=1)  # the A-ASSOCIATE-AC, -RJ or an A-ABORT (or nothing, for a broken RQ)
        for step in steps[1:]:
            if peer.closed:
                break
            peer.send(step)
            peer.read(0.001)
        peer.wait_closed(ANSWER_WITHIN_S)
        assert peer.closed, f"connection still open {ANSWER_WITHIN_S} s after the last byte"
        return peer.received


def play(harness: Harness, recording: Recording, mutation: Mutation, thread_bound: int) -> None:
    uid = next(UIDS)
    steps = mutation.apply(recording.with_uid(uid), recording)
    sent = b"".join(steps)
    received = _send(harness, recording, steps)
    # the association's threads have ended (its handler too: any row it writes is in), none is left behind
    deadline = time.monotonic() + ANSWER_WITHIN_S
    while (threads := _threads(harness.listener.pid)) > thread_bound - THREAD_HEADROOM and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threads <= thread_bound, f"{mutation.name}: {threads} threads, over {thread_bound}"
    statuses = store_statuses(received)
    accepted = [s for s in statuses if s in ACCEPTED]
    log = harness.listener.log.read_text(errors="replace")[-1500:]
    assert len(accepted) <= 1, f"{mutation.name}: {len(accepted)} success statuses for one C-STORE"
    if mutation.must_store:
        assert accepted, f"{mutation.name}: a valid C-STORE was not acknowledged: {statuses}\n{log}"
    with harness.engine.connect() as connection:
        uids = {row[0] for row in connection.execute(sa.text("SELECT sop_instance_uid FROM instances"))}
    new = uids - set(harness.acknowledged)
    assert len(new) <= 1, f"{mutation.name}: {len(new)} new rows for one C-STORE"
    if accepted:
        assert new, f"{mutation.name}: acknowledged ({statuses}), and no row\n{log}"
    if new:  # stored: the sender may not have heard (the connection ended after the answer), but it must be whole
        data = strict_data_set(sent)
        assert data is not None, f"{mutation.name}: stored ({statuses}) from bytes that are not one whole C-STORE"
        harness.acknowledged[new.pop()] = data
    with harness.engine.connect() as connection:  # and nothing comes after
        late = {row[0] for row in connection.execute(sa.text("SELECT sop_instance_uid FROM instances"))}
    assert late <= set(harness.acknowledged), (
        f"{mutation.name}: a row after the case ended ({statuses}, {threads})\n{log}"
    )
    harness.check(mutation.name)
    lines = harness.listener.log.read_text(encoding="utf-8", errors="replace").splitlines()
    assert not [line for line in lines if line.startswith(FORGED)], f"{mutation.name}: a peer's text began a log line"


FAMILIES = ["refragmented", "flips", "truncations", "lengths", "reorderings", "interleaved", "texts"]


@pytest.mark.timeout(7200 if FULL else 300)
@pytest.mark.parametrize("family", FAMILIES)
def test_a_mutated_storescu_stream_breaks_no_invariant(harness: tuple[Harness, Recording, int], family: str) -> None:
    running, recording, threads = harness
    cases = sample(mutations(recording)[family])
    assert cases
    for mutation in cases:
        play(running, recording, mutation, threads + THREAD_HEADROOM)


# --- a data set whose bytes do not walk to their end ----------------------------------------------------------------

#: Cannot understand (radtrace.dicom_listener.policy.STATUS_CANNOT_UNDERSTAND).
CANNOT_UNDERSTAND = 0xC210
_PIXEL_HEADER = re.compile(rb"\xe0\x7f\x10\x00O[BW]\x00\x00")


def _data_pdus(pdus: list[bytes]) -> list[int]:
    """The indexes of the P-DATA-TFs that carry the data set."""
    return [n for n, p in enumerate(pdus) if p[0] == 0x04 and not pdvs_of(p[6:])[0][1] & 1]


def _resent_with_data(pdus: list[bytes], rec: Recording, data: bytes, *, twice: int | None = None) -> list[bytes]:
    """The recording's association and command, with ``data`` as the data set in 16,000-byte PDVs (PDV ``twice``
    sent twice), each in its own P-DATA-TF."""
    command = [p for n, p in enumerate(pdus) if p[0] == 0x04 and n not in _data_pdus(pdus)]
    items = [
        pdu(0x04, pdv(rec.context_id, 0x02 if at + 16000 >= len(data) else 0, data[at : at + 16000]))
        for at in range(0, len(data), 16000)
    ]
    if twice is not None:
        items.insert(twice, items[twice])
    return [pdus[0], *command, *items, pdus[-1]]


def _pixel_data_length(data: bytes, change: int, extra: bytes) -> bytes:
    """The data set with Pixel Data's length field changed by ``change`` and ``extra`` bytes appended."""
    match = _PIXEL_HEADER.search(data)
    assert match is not None
    at = match.end()
    (length,) = struct.unpack_from("<L", data, at)
    return data[:at] + struct.pack("<L", length + change) + data[at + 4 :] + extra


@pytest.mark.parametrize(
    "case",
    [
        "the data set's first PDV twice",
        "the data set's second PDV twice",
        "Pixel Data cut short by 100 bytes",
        "Pixel Data 2 bytes longer than its image",
        "16 zero bytes after Pixel Data",
    ],
)
def test_a_data_set_that_does_not_walk_to_its_end_is_refused_naming_the_element_never_stored(
    harness: tuple[Harness, Recording, int], case: str
) -> None:
    """A P-DATA-TF sent twice (a proxy's retransmission): the data set held 16 KB twice inside Pixel Data and pixel
    bytes read as elements after it; it was stored exactly as sent and answered 0x0000 (the listener reads only the
    header at receive), and the worker would have read the image shifted. Pixel Data cut short, or longer than its
    Rows x Columns x Bits Allocated: the same. Each is now refused with 0xC210 naming the element and its offset,
    quarantined and audited, one log line; never stored."""
    running, recording, threads = harness
    uid = next(UIDS)
    pdus = recording.with_uid(uid)
    data = strict_data_set(b"".join(pdus))
    assert data is not None
    if case.endswith("PDV twice"):
        assert len(data) > 32000  # three PDVs
        steps = _resent_with_data(pdus, recording, data, twice=0 if "first" in case else 1)
    elif case.startswith("Pixel Data cut"):
        steps = _resent_with_data(pdus, recording, data[:-100])
    elif case.startswith("Pixel Data 2"):
        steps = _resent_with_data(pdus, recording, _pixel_data_length(data, 2, b"\x00\x00"))
    else:
        steps = _resent_with_data(pdus, recording, data + b"\x00" * 16)
    log_before = running.listener.log.read_text(errors="replace")
    received = _send(running, recording, steps)
    assert store_statuses(received) == [CANNOT_UNDERSTAND], case
    with running.engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT 1 FROM instances WHERE sop_instance_uid = :u"), {"u": uid}).all()
        payloads = connection.execute(
            sa.text("SELECT payload FROM audit_events WHERE event_type = 'instance_quarantined' ORDER BY seq")
        ).scalars()
        quarantined = [json.loads(p) for p in payloads if json.loads(p).get("sop_instance_uid") == uid]
    assert not stored
    assert len(quarantined) == 1
    reason = quarantined[0]["reason"]
    assert re.search(r"\([0-9A-F]{4},[0-9A-F]{4}\)|data set ends inside an element header at offset", reason), reason
    new_lines = running.listener.log.read_text(errors="replace")[len(log_before) :].splitlines()
    refusals = [line for line in new_lines if "quarantined an unusable instance" in line]
    assert len(refusals) == 1, new_lines
    assert reason in refusals[0], new_lines
    assert list(running.listener.data_dir.rglob(quarantined[0]["quarantine_file"]))
    play_check(running, threads, case)


def play_check(running: Harness, threads: int, case: str) -> None:
    """The listener's invariants after a case, as each fuzz case ends."""
    deadline = time.monotonic() + ANSWER_WITHIN_S
    while _threads(running.listener.pid) > threads and time.monotonic() < deadline:
        time.sleep(0.05)
    running.check(case)
