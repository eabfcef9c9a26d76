"""``radtrace status`` names the command that helps: for a revision whose delivery failed (a PACS that refused the SR
for good, C-STORE status 0xA900; one that rejects the association is put on hold instead, test_dispatch_destination_
hold) ``radtrace dispatch retry DESTINATION``, for a reading that failed
``radtrace study retry UID``. And ``radtrace study retry UID`` on a revision that failed for a delivery delivers it
again (audited as ``radtrace dispatch retry`` does), instead of reading nothing again and failing the same way.

Before: the failed list said "again: radtrace study retry UID" for both, and that command queued the revision; the
pipeline found its outbox rows, left the failed one failed, and the revision failed again with the same reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicom_peer_support import AnsweringScp, answering_scp
from radtrace.audit.events import EventType
from radtrace.config import DicomDestination, DispatchSettings, ReportingSettings, load_settings
from radtrace.reporting.dispatch.outbox import ReportFiles, planned_deliveries
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.worker.settlement import Deliveries
from reporting_support import sr_cases
from tests_support import radtrace
from worker_support import deliveries_over, payloads_of

pytestmark = pytest.mark.integration

READING_FAILED_UID = "1.2.826.0.1.3680043.8.498.77001"
READING_REASON = "model error after 3 attempts: CUDA out of memory while generating"


@dataclass
class Site:
    data_dir: Path
    store: Store
    pacs: DicomDestination

    @property
    def env(self) -> dict[str, str]:
        return {"RADTRACE_DATA_DIR": str(self.data_dir), "COLUMNS": "200",
                "RADTRACE_DISPATCH__PACS": json.dumps([self.pacs.model_dump(mode="json")])}  # fmt: skip

    def deliveries(self) -> Deliveries:
        settings = DispatchSettings(pacs=[self.pacs], calling_ae_title="RADTRACE")
        return deliveries_over(self.store, settings, self.data_dir / "outbox")

    def events(self, kind: EventType) -> list[dict[str, object]]:
        return payloads_of(self.store, kind.value)

    def states(self, outbox_id: int) -> tuple[OutboxState, int, RevisionState]:
        with self.store.session() as session:
            row = session.get(OutboxMessage, outbox_id)
            assert row is not None
            return row.state, row.attempts, row.revision.state


@pytest.fixture
def pacs() -> Iterator[AnsweringScp]:
    with answering_scp("PACS") as scp:
        yield scp


@pytest.fixture
def site(tmp_path: Path, pacs: AnsweringScp) -> Iterator[Site]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = Store.from_url(load_settings(data_dir=data_dir).store_url)
    upgrade(store)
    yield Site(data_dir, store, DicomDestination(ae_title="PACS", host="127.0.0.1", port=pacs.port))
    store.dispose()


def _failed_on_delivery(site: Site, pacs: AnsweringScp) -> tuple[str, int, str]:
    """A reported revision whose SR the PACS refuses for good (0xA900, once); returns its Study UID, outbox id and SR
    UID."""
    pacs.statuses.append(0xA900)
    reading, sources = sr_cases()["typical"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    study_uid = str(sources[0].StudyInstanceUID)
    with site.store.session() as session:
        study = Study(study_uid=study_uid, study_key="deliveryfailed01", accession="ACC-DELIVERY-1")
        revision = Revision(study=study, number=1, state=RevisionState.REPORTED)
        session.add_all([study, revision])
        session.flush()
        revision_id = revision.id
    reports = ReportFiles(str(sr.SOPInstanceUID), sr_bytes(sr), b"MSH|", b"{}")
    deliveries = site.deliveries()
    settings = DispatchSettings(pacs=[site.pacs])
    [outbox_id] = deliveries.outbox.enqueue(revision_id, planned_deliveries(settings, reports))
    result = deliveries.dispatch(outbox_id)
    assert (result.delivery.state, result.revision_state) == (OutboxState.FAILED, RevisionState.FAILED)
    return study_uid, outbox_id, reports.sr_sop_instance_uid


def _failed_reading(site: Site) -> None:
    with site.store.session() as session:
        study = Study(study_uid=READING_FAILED_UID, study_key="readingfailed001", accession="ACC-READING-2")
        session.add_all([study, Revision(study=study, number=1, state=RevisionState.FAILED, reason=READING_REASON,
                                         attempts=3, finished_at=utc_now())])  # fmt: skip


def _block(stdout: str, study_uid: str) -> list[str]:
    """The lines ``radtrace status`` prints for one failed revision: its UID line to the next UID line."""
    lines = stdout.splitlines()
    start = lines.index(study_uid)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


def test_status_names_dispatch_retry_for_a_failed_delivery_and_study_retry_for_a_failed_reading(
    site: Site, pacs: AnsweringScp
) -> None:
    delivery_uid, _, _ = _failed_on_delivery(site, pacs)
    _failed_reading(site)
    destination = f"PACS@127.0.0.1:{site.pacs.port}"

    shown = radtrace("status", "--no-broker", env=site.env)
    assert shown.returncode == 0, shown.stderr
    assert "failed (newest first; details: radtrace study show UID)" in shown.stdout
    delivered = _block(shown.stdout, delivery_uid)
    again = [line.strip() for line in delivered if line.strip().startswith("again:")]
    assert again == [f"again: radtrace dispatch retry {destination} (after fixing what the reason says)"], delivered
    assert "radtrace study retry" not in "\n".join(delivered)
    read = _block(shown.stdout, READING_FAILED_UID)
    assert [line.strip() for line in read if line.strip().startswith("again:")] == [
        f"again: radtrace study retry {READING_FAILED_UID}"
    ], read

    as_json = radtrace("status", "--json", "--no-broker", env=site.env)
    assert as_json.returncode == 0, as_json.stderr
    failed = {entry["study_uid"]: entry for entry in json.loads(as_json.stdout)["failed"]}
    assert failed[delivery_uid]["failed_deliveries"] == [destination]
    assert failed[delivery_uid]["again"] == [f"radtrace dispatch retry {destination}"]
    assert failed[READING_FAILED_UID]["failed_deliveries"] == []
    assert failed[READING_FAILED_UID]["again"] == [f"radtrace study retry {READING_FAILED_UID}"]


def test_study_retry_of_a_revision_failed_on_delivery_delivers_it_again_without_reading_it(
    site: Site, pacs: AnsweringScp
) -> None:
    study_uid, outbox_id, sr_uid = _failed_on_delivery(site, pacs)
    destination = f"PACS@127.0.0.1:{site.pacs.port}"

    retried = radtrace("study", "retry", study_uid, env=site.env)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.splitlines()[:2] == [
        f"revision 1 of study {study_uid} was failed for a delivery; not read again (its draft is kept)",
        f"pending again: sr {destination}",
    ], retried.stdout
    assert site.states(outbox_id) == (OutboxState.PENDING, 0, RevisionState.REPORTED)  # not queued to be read
    [asked] = site.events(EventType.DISPATCH_RETRY_SCHEDULED)
    assert (asked["outbox_id"], asked["destination"], asked["requested_by"]) == (outbox_id, destination, "operator")
    assert "status 0xA900" in str(asked["previous_error"])
    [event] = site.events(EventType.STUDY_RETRIED)
    assert (event["previous_state"], event["redelivery"]) == ("failed", [destination])
    assert "status 0xA900" in str(event["previous_reason"])

    result = site.deliveries().dispatch(outbox_id)
    assert (result.delivery.state, result.revision_state) == (OutboxState.DELIVERED, RevisionState.DISPATCHED)
    assert pacs.stored == [sr_uid]
    again = radtrace("study", "retry", study_uid, env=site.env)  # dispatched now: nothing to ask for
    assert again.returncode == 1
    assert "no failed or skipped revision" in again.stderr
