"""DIMSE requests on established associations, fuzzed against a ``radtrace listen`` process, invariants after each.

Requests the listener does not serve (C-FIND, C-MOVE, C-GET, N-*), commands that break their rules (an Affected SOP
Class UID not the context's, no data set, no Message ID, missing elements, a response sent to the SCP), PDUs the
association's state does not allow (P-DATA before the AC or after A-RELEASE-RQ, release collisions), and
negotiation items the listener ignores (a 60 kB user identity, 200 SOP class extended negotiation items, an
asynchronous operations window, a maximum PDU length of 2^32-1, 128 presentation contexts). Each case checks the
answers, that every refusal is in the audit log from its source, upper_layer_fuzz_support's invariants, and that a
real sender's C-ECHO and C-STORE each complete in under 1 s. CI runs :data:`CI_DIMSE_CASES`;
``RADTRACE_FULL_FUZZ=1`` all of them.
"""

from __future__ import annotations

import json
import struct
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from dicom_peer_support import (
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
    store_statuses,
)
from radtrace.dicom_listener.contexts import SERVICES_NOT_OFFERED
from radtrace.dicom_listener.refusals import LIVE_S
from radtrace.testing.abuse import echo_seconds
from upper_layer_fuzz_support import (
    ANSWER_WITHIN_S,
    CONTEXTS,
    ECHO,
    FILM_DATA,
    FULL,
    SOP_CLASS,
    Harness,
    running_harness,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_harness(tmp_path_factory.mktemp("dimse-fuzz")) as harness:
        yield harness


FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root C-FIND: proposed, refused at negotiation
CT = "1.2.840.10008.5.1.4.1.1.2"
DIMSE_RQ = associate_rq([*CONTEXTS, presentation_context(5, FIND)])
REQUEST_REFUSED = "DIMSE request refused"
VIOLATION = "association aborted: protocol violation"
#: the C-FIND context, refused at negotiation: another service than storage (no instance refused), audited apart
CONTEXTS_REFUSED = SERVICES_NOT_OFFERED


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
    requests, ``violations`` as protocol violations; ``pipelined``: the first step goes in one write with the
    A-ASSOCIATE-RQ, so the listener holds it before it can send its AC. (Sent after the RQ as a second write it could
    arrive after the AC went out, and then it is a request inside the association, rightly answered: PDU types [2, 4,
    7] in a CI run. Over TCP the listener cannot tell a PDU sent before the AC from one sent after.)"""

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
            "C-STORE without an Affected SOP Instance UID",  # named in the audit: dimse_guard.command_problem
            _store(3, "2.25.45", FILM_DATA, AffectedSOPInstanceUID=None),
            [],
            aborted=True,
            violations=1,
        ),
        DimseCase(
            "twenty C-FINDs", [_command(1, **on_verification | {"MessageID": n}) for n in range(20)], [0x0211] * 20, 20
        ),
        DimseCase(
            "a C-STORE command set sent as data",
            [p_data(pdv(3, 0x02, _command(3, AffectedSOPClassUID=SOP_CLASS, CommandField=0x0001, MessageID=8)[12:]))],
            [],
            aborted=True,
            violations=1,
        ),
        DimseCase(
            "C-ECHO on the context refused at negotiation",
            [p_data(pdv(5, 0x03, echo_rq()))],
            [],
            0,
            aborted=True,
            violations=1,
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
        steps = list(case.steps)
        if case.pipelined:
            first = steps.pop(0)
            assert isinstance(first, bytes), case.name
            peer.send(case.rq + first)
        else:
            peer.send(case.rq)
            peer.read(3, until_types=1)
            assert pdu_types(peer.received) == [0x02], case.name
        for step in steps:
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
    if case.rq == DIMSE_RQ:  # its C-FIND context, not offered at negotiation (the AC sent or not)
        expected[CONTEXTS_REFUSED] = 1
    deadline = time.monotonic() + LIVE_S + 1  # the first of a source's interval at once, the rest LIVE_S later
    while (audited := _refusals(harness, source)) != +expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert audited == +expected, case.name
    harness.check(case.name)
    assert echo_seconds(harness.listener.port) is not None, case.name  # then a real sender is served
    assert harness.store(generate_uid()) == 0x0000, case.name
