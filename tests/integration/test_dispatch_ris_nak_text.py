"""A RIS whose NAK text (MSA-3, or ERR when MSA-3 is empty) echoes the patient's identity with control characters:
the outbox reason (shown in the console, kept in the audit) holds it quoted, escaped and cut, and no log record
of the whole dispatch (the attempt, the revision failed by it) carries the patient's values."""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from private_servers import HostilePeer, hostile_peer, read_mllp_message
from radtrace.config import DispatchSettings, MllpDestination, ReportingSettings
from radtrace.errors import DispatchError
from radtrace.reporting.dispatch.mllp import frame, send_message
from radtrace.reporting.dispatch.outbox import ReportFiles, planned_deliveries
from radtrace.reporting.hl7 import build_oru
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.store.engine import Store
from radtrace.store.models import OutboxState, Revision, RevisionState, Study
from reporting_support import sr_cases
from worker_support import audit_events, deliveries_over, outbox_rows

pytestmark = pytest.mark.integration

# Line and paragraph separators, NEL, FF, ESC, a bidi override and C1: none may reach a reason unescaped.
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _pid(message: bytes) -> tuple[str, str]:
    """(PID-3 first ID, PID-5 family name) of the ORU the RIS received."""
    for segment in message.strip(b"\x0b\x1c\r").split(b"\r"):
        if segment.startswith(b"PID|"):
            fields = segment.decode("utf-8").split("|")
            return fields[3].split("^")[0], fields[5].split("^")[0]
    raise AssertionError("no PID segment")


def _echoing_ris(code: str, where: str) -> Callable[[HostilePeer, socket.socket], None]:
    """A RIS that NAKs with ``code``, echoing the patient's ID and name in MSA-3 or in ERR (MSA-3 empty)."""

    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        message = peer.received[-1]
        control_id = message.split(b"\r")[0].split(b"|")[9].decode()
        patient_id, name = _pid(message)
        said = f"unknown patient {patient_id} {name}\x1b[2J\u202e\u2028\x85\x0c2026-12-05 INFO forged"
        msa = f"MSA|{code}|{control_id}|{said}" if where == "msa" else f"MSA|{code}|{control_id}\rERR||PID^1^3|{said}"
        ack = f"MSH|^~\\&|RIS|H|RADTRACE|H|20261205||ACK^R01|A1|P|2.5.1\r{msa}\r"
        peer.write(connection, frame(ack.encode()))

    return behave


@pytest.mark.parametrize(("code", "where"), [("AR", "msa"), ("AE", "err")])
def test_a_nak_echoing_the_patient_is_quoted_in_the_reason_and_kept_out_of_the_logs(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture, code: str, where: str
) -> None:
    reading, sources = sr_cases()["typical"]
    patient_id, name = str(sources[0].PatientID), str(sources[0].PatientName).split("^")[0]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    oru = build_oru(reading, sources[0], settings=ReportingSettings(), sr_sop_instance_uid=str(sr.SOPInstanceUID))
    reports = ReportFiles(str(sr.SOPInstanceUID), sr_bytes(sr), oru.encode(), json.dumps({}).encode())
    with store.session() as session:
        study = Study(study_uid=str(sources[0].StudyInstanceUID), study_key="k" * 16, accession="RTACC000001")
        revision = Revision(study=study, number=1, state=RevisionState.REPORTED)
        session.add_all([study, revision])
        session.flush()
        revision_id = revision.id

    caplog.set_level(logging.DEBUG)
    with hostile_peer(_echoing_ris(code, where), read=read_mllp_message) as ris:
        settings = DispatchSettings(ris=MllpDestination(host=ris.host, port=ris.port, timeout_s=5), max_attempts=1)
        deliveries = deliveries_over(store, settings, tmp_path / "payloads")
        [outbox_id] = deliveries.outbox.enqueue(revision_id, planned_deliveries(settings, reports))
        result = deliveries.dispatch(outbox_id)
        assert len(ris.received) == 1
    assert patient_id.encode() in ris.received[0]  # the RIS did get the patient, and echoed it

    assert result.delivery.state is OutboxState.FAILED
    assert result.revision_state is RevisionState.FAILED
    [row] = outbox_rows(store)
    reason = row.last_error
    assert reason is not None
    assert RAW_CONTROLS.search(reason) is None, reason
    # the RIS's words, quoted as Python writes a string: what the console shows, one line, left to right
    assert reason.endswith(
        f"unknown patient {patient_id} {name}\\x1b[2J\\u202e\\u2028\\x85\\x0c2026-12-05 INFO forged'"
    )
    assert f"answered {code}: '" in reason or f"rejected the message ({code}): '" in reason
    errors = [payload["error"] for _, _, payload in audit_events(store) if "error" in payload]
    assert errors == [reason]  # dispatch_failed: the same quoted text, no raw control

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "dispatch" in logged or "outbox" in logged  # the attempt was logged
    assert patient_id not in logged
    assert name not in logged


def test_a_nak_text_longer_than_200_characters_is_cut_and_says_so() -> None:
    def behave(peer: HostilePeer, connection: socket.socket) -> None:
        control_id = peer.received[-1].split(b"\r")[0].split(b"|")[9].decode()
        ack = f"MSH|^~\\&|RIS|H|RADTRACE|H|20261205||ACK^R01|A1|P|2.5.1\rMSA|AE|{control_id}|{'y' * 5000}\r"
        peer.write(connection, frame(ack.encode()))

    message = b"MSH|^~\\&|RADTRACE|H|RIS|H|20261205||ORU^R01^ORU_R01|C-1|P|2.5.1\rOBR|1\r"
    with hostile_peer(behave, read=read_mllp_message) as ris, pytest.raises(DispatchError) as raised:
        send_message(message, ris.host, ris.port, timeout_s=5)
    assert raised.value.reason.endswith(": '" + "y" * 200 + "…'")
