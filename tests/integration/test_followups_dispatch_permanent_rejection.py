"""A PACS that rejects the association permanently (A-ASSOCIATE-RJ result 1, PS3.8 9.3.4: an AE title it does not
know) is a configuration to fix, not an outage: the destination is put on hold at the first attempt, with a reason
that says what to change, audited once, shown in ``radtrace status``, and ``radtrace dispatch retry DESTINATION``
lifts it once the configuration is fixed (test_dispatch_destination_hold: a night of drafts, several workers). A
transient rejection (result 2) is still retried with backoff.

Before, every rejection was retried as an outage: at the defaults (dispatch.max_attempts 8, backoff 5 s doubling)
a calling AE title the PACS did not know meant 8 associations, 16 dispatch audit events (8 attempted, 7
retry_scheduled, 1 failed) and about 10.6 minutes before ``failed``; and no command delivered a failed row again
(``radtrace study retry`` queued the revision, whose rows stayed failed).

Peers: a pynetdicom Storage SCP that admits only the calling AE titles it is given (it answers others 1/1/3, as a
PACS does) and whose list is changed while it runs, as the PACS's administrator would; the scripted
dicom_peer_support.rejecting_peer for a transient 2/3/2.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicom_peer_support import AnsweringScp, answering_scp, rejecting_peer
from radtrace.audit.events import EventType
from radtrace.audit.operations import local_operator
from radtrace.config import DicomDestination, DispatchSettings, ReportingSettings, load_settings
from radtrace.reporting.dispatch.outbox import ReportFiles, planned_deliveries
from radtrace.reporting.dispatch.redelivery import RedeliveryError, redeliver_failed
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import DeliveryOutcome, OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.worker.settlement import Deliveries
from reporting_support import sr_cases
from tests_support import radtrace
from worker_support import deliveries_over, payloads_of

pytestmark = pytest.mark.integration


@dataclass
class Site:
    data_dir: Path
    store: Store

    def deliveries(self, settings: DispatchSettings) -> Deliveries:
        return deliveries_over(self.store, settings, self.data_dir / "outbox")

    def events(self, kind: EventType) -> list[dict[str, object]]:
        return payloads_of(self.store, kind.value)

    def cli(self, *args: str, pacs: DicomDestination) -> tuple[int, str, str]:
        env = {"RADTRACE_DATA_DIR": str(self.data_dir),
               "RADTRACE_DISPATCH__PACS": json.dumps([pacs.model_dump(mode="json")])}  # fmt: skip
        result = radtrace(*args, env=env)
        return result.returncode, result.stdout, result.stderr


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = Store.from_url(load_settings(data_dir=data_dir).store_url)
    upgrade(store)
    yield Site(data_dir, store)
    store.dispose()


def _reported_revision(store: Store, accession: str) -> tuple[int, ReportFiles]:
    reading, sources = sr_cases()["typical"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    with store.session() as session:
        study = Study(study_uid=str(sources[0].StudyInstanceUID), study_key=accession.lower()[:16].ljust(16, "k"),
                      accession=accession)  # fmt: skip
        revision = Revision(study=study, number=1, state=RevisionState.REPORTED)
        session.add_all([study, revision])
        session.flush()
        revision_id = revision.id
    return revision_id, ReportFiles(str(sr.SOPInstanceUID), sr_bytes(sr), b"MSH|", b"{}")


@pytest.fixture
def pacs_admitting_others() -> Iterator[AnsweringScp]:
    with answering_scp("PACS", require_calling_aet=["NIGHTSHIFT"]) as scp:
        yield scp


def test_a_calling_ae_the_pacs_does_not_know_holds_it_once_shows_in_status_and_is_delivered_after_the_fix(
    site: Site, pacs_admitting_others: AnsweringScp
) -> None:
    scp = pacs_admitting_others
    pacs = DicomDestination(ae_title="PACS", host="127.0.0.1", port=scp.port)
    settings = DispatchSettings(pacs=[pacs], calling_ae_title="RADTRACE")
    deliveries = site.deliveries(settings)
    revision_id, reports = _reported_revision(site.store, "RTACC000003")
    [outbox_id] = deliveries.outbox.enqueue(revision_id, planned_deliveries(settings, reports))

    started = time.monotonic()
    result = deliveries.dispatch(outbox_id)
    elapsed = time.monotonic() - started
    assert (result.delivery.state, result.delivery.held) == (OutboxState.PENDING, True)  # held: not retried
    assert result.delivery.attempts == 1
    assert result.revision_state is RevisionState.REPORTED  # waiting, not failed
    reason = result.delivery.error or ""
    assert f"PACS@127.0.0.1:{scp.port} rejected the association (A-ASSOCIATE-RJ 1/1/3: rejected permanent by the " \
           "service user: calling AE title not recognised): not retried" in reason  # fmt: skip
    assert "calling AE 'RADTRACE'" in reason
    assert "dispatch.calling_ae_title" in reason
    assert f"radtrace dispatch retry PACS@127.0.0.1:{scp.port}" in reason
    assert elapsed < 10, f"{elapsed:.1f} s"  # a third of the default 30 s timeout waited out (3 s: too close)
    [held] = site.events(EventType.DISPATCH_HELD)
    assert (held["destination"], held["codes"], held["outbox_id"]) == (f"PACS@127.0.0.1:{scp.port}", "1/1/3", outbox_id)
    assert site.events(EventType.DISPATCH_FAILED) == []
    [waits] = site.events(EventType.DISPATCH_RETRY_SCHEDULED)
    assert waits["hold"] == "placed"
    assert scp.received == []

    code, stdout, stderr = site.cli("status", "--json", "--no-broker", pacs=pacs)
    assert code == 0, stderr
    status = json.loads(stdout)
    assert (status["outbox"]["pending"], status["failed"]) == (1, [])
    [held] = status["holds"]
    assert (held["destination"], held["held_deliveries"]) == (f"PACS@127.0.0.1:{scp.port}", 1)
    assert "A-ASSOCIATE-RJ 1/1/3" in held["reason"]
    assert held["again"] == f"radtrace dispatch retry PACS@127.0.0.1:{scp.port}"

    # The PACS's administrator adds our AE title; the operator asks again.
    assert scp.ae is not None
    scp.ae.require_calling_aet = ["NIGHTSHIFT", "RADTRACE"]
    code, stdout, stderr = site.cli("dispatch", "retry", f"PACS@127.0.0.1:{scp.port}", pacs=pacs)
    assert code == 0, stderr
    assert f"1 held deliveries to PACS@127.0.0.1:{scp.port} are due now" in stdout
    [asked] = site.events(EventType.DISPATCH_HOLD_RELEASED)
    assert (asked["lifted_by"], asked["hold"], asked["outbox_ids"]) == ("operator", "lifted", [outbox_id])
    assert "A-ASSOCIATE-RJ 1/1/3" in str(asked["hold_reason"])

    result = deliveries.dispatch(outbox_id)
    assert result.delivery.state is OutboxState.DELIVERED
    assert result.revision_state is RevisionState.DISPATCHED
    assert scp.stored == [reports.sr_sop_instance_uid]


def test_a_wrong_pacs_ae_title_fixed_in_the_settings_takes_the_held_rows_to_the_new_name(
    site: Site, pacs_admitting_others: AnsweringScp
) -> None:
    """1/1/7 (called AE title not recognised) is fixed in dispatch.pacs: the destination's name changes with it."""
    scp = pacs_admitting_others
    assert scp.ae is not None
    scp.ae.require_calling_aet = []  # admits any caller; knows itself as PACS only
    wrong = DicomDestination(ae_title="PACS_OLD", host="127.0.0.1", port=scp.port)
    settings = DispatchSettings(pacs=[wrong])
    revision_id, reports = _reported_revision(site.store, "RTACC000004")
    deliveries = site.deliveries(settings)
    [outbox_id] = deliveries.outbox.enqueue(revision_id, planned_deliveries(settings, reports))
    # pynetdicom's SCP checks the called AE title only when asked to
    scp.ae.require_called_aet = True
    held = deliveries.dispatch(outbox_id)
    assert (held.delivery.state, held.delivery.held) == (OutboxState.PENDING, True)
    assert "A-ASSOCIATE-RJ 1/1/7" in (held.delivery.error or "")
    assert "set dispatch.pacs' ae_title" in (held.delivery.error or "")

    right = DicomDestination(ae_title="PACS", host="127.0.0.1", port=scp.port)
    fixed = DispatchSettings(pacs=[right])
    done = redeliver_failed(site.store, fixed, f"PACS_OLD@127.0.0.1:{scp.port}", local_operator())
    assert done.lifted is not None
    assert (done.lifted.released, done.destination, done.readdressed_from) == (
        [outbox_id],
        f"PACS@127.0.0.1:{scp.port}",
        f"PACS_OLD@127.0.0.1:{scp.port}",
    )
    result = site.deliveries(fixed).dispatch(outbox_id)
    assert result.delivery.state is OutboxState.DELIVERED
    assert result.revision_state is RevisionState.DISPATCHED
    with pytest.raises(RedeliveryError, match=r"no failed delivery to .*, and it is not on hold"):
        redeliver_failed(site.store, fixed, f"PACS@127.0.0.1:{scp.port}", local_operator())


def test_a_transient_rejection_is_still_retried_with_backoff(site: Site) -> None:
    with rejecting_peer(2, 3, 2) as port:
        settings = DispatchSettings(pacs=[DicomDestination(ae_title="PACS", host="127.0.0.1", port=port)])
        deliveries = site.deliveries(settings)
        revision_id, reports = _reported_revision(site.store, "RTACC000005")
        [outbox_id] = deliveries.outbox.enqueue(revision_id, planned_deliveries(settings, reports))
        result = deliveries.dispatch(outbox_id)
    assert result.delivery.state is OutboxState.PENDING
    assert result.retry_at is not None
    assert "A-ASSOCIATE-RJ 2/3/2: rejected transient" in (result.delivery.error or "")
    assert "not retried" not in (result.delivery.error or "")
    with site.store.session() as session:  # the PACS answered: nothing was sent (radtrace.reporting.dispatch.outcomes)
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        assert (row.last_outcome, row.reached) == (DeliveryOutcome.REFUSED, False)
    assert len(site.events(EventType.DISPATCH_RETRY_SCHEDULED)) == 1
