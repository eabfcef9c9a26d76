"""The upper layer protocol fuzzed against a ``radtrace listen`` process, with the invariants checked after each case.

Cases start from valid PDUs (A-ASSOCIATE-RQ, P-DATA-TF carrying a real chest film, A-RELEASE-RQ)
and break them: systematically (:func:`systematic_cases`: wrong and huge lengths, truncated items,
duplicate or missing presentation contexts, unknown item types, tiny maximum PDU lengths, unnegotiated
context IDs, commands and data sets that never end or overlap, A-RELEASE and A-ABORT mid-transfer,
bytes after the release, interleaved associations from one host) and with hypothesis (random
sequences of mutated PDUs). Hostile connections come from 127.0.0.2 and up; the real sender is
127.0.0.1.

After each case (upper_layer_fuzz_support's Harness.check): the process lives; dcmtk's echoscu
from 127.0.0.1 is answered; every instance the listener acknowledged (0x0000) is still in the spool,
byte for byte, with its row and hash; no other instance has a row (nothing partial was counted); the
peer was answered or closed, never left hanging; no connection is left behind; RSS and descriptors
stay under their bounds; and every line of the listener's log begins with its own timestamp (no line
begins with what a peer sent), none is a traceback.

The CI sample takes well under a minute. ``RADTRACE_FULL_FUZZ=1`` runs hypothesis for 500 examples
(``RADTRACE_FUZZ_EXAMPLES`` sets another count), with a real store between every case.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
from upper_layer_fuzz_support import (
    ANSWER_WITHIN_S,
    CONTEXTS,
    ECHO,
    EXAMPLES,
    FILM_DATA,
    FULL,
    RQ,
    SOP_CLASS,
    Case,
    Harness,
    film,
    running_harness,
    store_steps,
)

pytestmark = pytest.mark.integration


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
        Case("presentation context item without its abstract syntax", [RQ[:102] + b"\x00\x04" + RQ[104:]]),
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
        Case("data fragments never marked last", [RQ, *store_steps("2.25.1", FILM_DATA[:200000], last=False), 0.3]),
        Case(
            "second command before the data set ends",
            [RQ, *store_steps("2.25.2", FILM_DATA[:60000], last=False), ECHO],
        ),
        Case("data set for a C-ECHO", [RQ, ECHO, *fragments(1, FILM_DATA[:3000], 1000, command=False)]),
        Case("A-RELEASE-RQ mid data set", [RQ, *store_steps("2.25.3", FILM_DATA[:60000], last=False), RELEASE_RQ]),
        Case(
            "bytes after the release", [RQ, ECHO, RELEASE_RQ, 0.2, ECHO, b"\n2026-01-01 00:00:00,000 ERROR forged: x"]
        ),
        Case("A-RELEASE-RP never asked for", [RQ, pdu(0x06, bytes(4))]),
        Case("A-ASSOCIATE-AC sent to the acceptor", [RQ, pdu(0x02, RQ[6:])]),
        Case(
            "interleaved associations from one host, both complete",
            [RQ, 0.2, *store_steps("2.25.4", film("2.25.4"))],
            second=[RQ, 0.2, *store_steps("2.25.5", film("2.25.5"))],
            stores=[["2.25.4"], ["2.25.5"]],
        ),
        Case(
            "interleaved associations from one host, one aborts",
            [RQ, 0.2, *store_steps("2.25.6", film("2.25.6"))],
            second=[RQ, 0.2, *store_steps("2.25.7", FILM_DATA[:50000], last=False), ABORT],
            stores=[["2.25.6"], []],
        ),
    ]
    steps = [RQ, 0.2, *store_steps("2.25.8", FILM_DATA)]
    cases += [Case(f"A-ABORT after step {n} of {len(steps)}", [*steps[:n], ABORT]) for n in range(0, len(steps), 9)]
    return cases


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_harness(tmp_path_factory.mktemp("upper-layer-fuzz")) as harness:
        yield harness


@pytest.mark.parametrize("case", systematic_cases(), ids=lambda case: case.name)
def test_a_broken_pdu_sequence_breaks_no_invariant(harness: Harness, case: Case) -> None:
    received = harness.play(case)
    for answer in received:  # whatever came back is whole PDUs of known types
        assert set(pdu_types(answer)) <= {0x02, 0x03, 0x04, 0x06, 0x07}, case.name
    for answer, uids in zip(received, case.stores, strict=False):
        assert store_statuses(answer) == [0x0000] * len(uids), case.name
        harness.acknowledged.update((uid, film(uid)) for uid in uids)
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
