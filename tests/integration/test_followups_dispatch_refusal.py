"""Dispatch to a PACS that refuses the association: the A-ASSOCIATE-RJ's codes, read from the association, are in the
outbox's reason at once, whatever the codes.

Before, the C-STORE client read the rejection from pynetdicom's A-ASSOCIATE primitive only. A reason the standard
reserves (a PACS answering 1/1/5, say) made pynetdicom's reader thread die with a ValueError traceback, and each
delivery attempt waited out the ACSE timeout (30 s by default) before "no association ... (refused, aborted or timed
out)". It now goes through :class:`radtrace.dicom_listener.scu.PeerAnswer`, as ``radtrace send`` does.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_peer_support import rejecting_peer
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DicomDestination, DispatchSettings, ReportingSettings
from radtrace.errors import PeerUnavailableError, RadtraceError
from radtrace.reporting.dispatch.cstore import AssociationRejectedError, store_instance
from radtrace.reporting.dispatch.outbox import Outbox, ReportFiles, planned_deliveries
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.store.engine import Store
from radtrace.store.models import OutboxState, Revision, RevisionState, Study
from reporting_support import sr_cases

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def rejecting(result: int, source: int, reason: int) -> Iterator[DicomDestination]:
    """A PACS that answers each A-ASSOCIATE-RQ with an A-ASSOCIATE-RJ of these codes."""
    with rejecting_peer(result, source, reason) as port:
        yield DicomDestination(ae_title="PACS", host="127.0.0.1", port=port)


def _sr() -> bytes:
    reading, sources = sr_cases()["normal"]
    return sr_bytes(build_sr(reading, sources, settings=ReportingSettings(), revision=1))


@pytest.mark.parametrize(
    ("codes", "words"),
    [
        ((1, 1, 5), "1/1/5: rejected permanent by the service user: reason 5 (reserved)"),
        ((2, 3, 0), "2/3/0: rejected transient by the service provider (presentation related function): reason 0"),
        ((1, 1, 7), "1/1/7: rejected permanent by the service user: called AE title not recognised"),
    ],
)
def test_a_store_says_the_rejection_as_the_pacs_sent_it_at_once(
    codes: tuple[int, int, int], words: str, capfd: pytest.CaptureFixture[str]
) -> None:
    payload = _sr()
    with rejecting(*codes) as pacs:
        started = time.monotonic()
        with pytest.raises(RadtraceError) as raised:
            store_instance(payload, pacs, calling_ae_title="RADTRACE", timeout_s=30)
        elapsed = time.monotonic() - started
    assert f"PACS@127.0.0.1:{pacs.port} rejected the association (A-ASSOCIATE-RJ {words}" in raised.value.reason
    # a permanent rejection (result 1) is not retried; a transient one (2) is (test_followups_dispatch_permanent_...)
    assert raised.value.retryable is (codes[0] == 2)
    assert isinstance(raised.value, AssociationRejectedError if codes[0] == 1 else PeerUnavailableError)
    assert elapsed < 10, f"{elapsed:.1f} s"  # a third of the 30 s timeout waited out (3 s: too close on a busy machine)
    assert "Unknown A_ASSOCIATE" not in capfd.readouterr().err  # pynetdicom's reader thread did not die


def test_the_outbox_records_a_reserved_rejection_at_once_and_holds_it(sqlite_store: Store, tmp_path: Path) -> None:
    """Through the real sender, with its default 30 s timeout: before, this delivery took 30 s. 1/1/5 is a permanent
    rejection (result 1) with a reason the standard reserves: held at once (its destination on hold), not retried."""
    reading, sources = sr_cases()["typical"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    reports = ReportFiles(str(sr.SOPInstanceUID), sr_bytes(sr), b"MSH|", json.dumps({}).encode())
    with sqlite_store.session() as session:
        study = Study(study_uid=str(sources[0].StudyInstanceUID), study_key="k" * 16, accession="RTACC000001")
        revision = Revision(study=study, number=1, state=RevisionState.REPORTED)
        session.add_all([study, revision])
        session.flush()
        revision_id = revision.id
    with rejecting(1, 1, 5) as pacs:
        settings = DispatchSettings(pacs=[pacs])
        outbox = Outbox(sqlite_store, AuditRecorder(sqlite_store), settings, tmp_path / "payloads")
        [outbox_id] = outbox.enqueue(revision_id, planned_deliveries(settings, reports))
        started = time.monotonic()
        result = outbox.deliver(outbox_id)
        elapsed = time.monotonic() - started
    assert (result.state, result.held) == (OutboxState.PENDING, True)  # permanent: held, not retried (2/3/0 is)
    assert result.attempts == 1
    assert result.error is not None
    assert "rejected the association (A-ASSOCIATE-RJ 1/1/5: rejected permanent by the service user" in result.error
    assert elapsed < 10, f"{elapsed:.1f} s"  # a third of the default 30 s timeout waited out (3 s: too close)
