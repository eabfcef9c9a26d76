"""For the destination-hold tests: a real pynetdicom Storage SCP that admits only the calling AE titles it is given
(any other gets A-ASSOCIATE-RJ 1/1/3 from pynetdicom itself, as a PACS answers) and counts every connection made to
it, so a test can say how many associations radtrace opened; and reported revisions with their drafts enqueued."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from pydicom.uid import Comprehensive3DSRStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt

from radtrace.config import DicomDestination, DispatchSettings, ReportingSettings
from radtrace.reporting.dispatch.holds import DestinationHold
from radtrace.reporting.dispatch.outbox import Outbox, ReportFiles, planned_deliveries
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, Revision, RevisionState, Study
from radtrace.testing.services import free_port
from reporting_support import sr_cases


@dataclass
class CountingPacs:
    """Where the SCP listens, the connections made to it, and the SR instances it stored."""

    ae_title: str
    port: int
    ae: AE
    connections: int = 0
    stored: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def destination(self) -> DicomDestination:
        return DicomDestination(ae_title=self.ae_title, host="127.0.0.1", port=self.port)

    @property
    def name(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def admit(self, *calling: str) -> None:
        """As the PACS's administrator does: these calling AE titles are admitted from now on."""
        self.ae.require_calling_aet = list(calling)


@contextmanager
def counting_pacs(ae_title: str = "PACS", *, admits: Sequence[str] = ()) -> Iterator[CountingPacs]:
    """The SCP on a free local port for the block; ``admits``: the calling AE titles it admits (empty: any)."""
    ae = AE(ae_title=ae_title)
    ae.require_calling_aet = list(admits)
    ae.add_supported_context(Comprehensive3DSRStorage, ExplicitVRLittleEndian)
    pacs = CountingPacs(ae_title, free_port(), ae)

    def opened(_: evt.Event) -> None:
        with pacs.lock:
            pacs.connections += 1

    def stored(event: evt.Event) -> int:
        with pacs.lock:
            pacs.stored.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    handlers = [(evt.EVT_CONN_OPEN, opened), (evt.EVT_C_STORE, stored)]
    server = ae.start_server(("127.0.0.1", pacs.port), block=False, evt_handlers=handlers)
    try:
        yield pacs
    finally:
        server.shutdown()


def reported_revisions(store: Store, outbox: Outbox, settings: DispatchSettings, count: int, *, first: int = 1,
                       study_uid: str | None = None) -> tuple[str, list[int]]:  # fmt: skip
    """``count`` reported revisions (numbered from ``first``) of one study, each with its drafts (the SR, an ORU and a
    FHIR bundle) enqueued for every configured destination; returns the Study UID and the outbox ids."""
    reading, sources = sr_cases()["typical"]
    study_uid = study_uid or str(sources[0].StudyInstanceUID)
    ids: list[int] = []
    for number in range(first, first + count):
        sr = build_sr(reading, sources, settings=ReportingSettings(), revision=number)
        with store.session() as session:
            study = session.scalar(sa.select(Study).where(Study.study_uid == study_uid))
            if study is None:
                study = Study(study_uid=study_uid, study_key="heldnight0000001", accession="RTACC-HOLD")
            revision = Revision(study=study, number=number, state=RevisionState.REPORTED)
            session.add_all([study, revision])
            session.flush()
            revision_id = revision.id
        reports = ReportFiles(str(sr.SOPInstanceUID), sr_bytes(sr), b"MSH|^~\\&|RADTRACE\r", b"{}")
        ids += outbox.enqueue(revision_id, planned_deliveries(settings, reports))
    return study_uid, ids


def rows_to(store: Store, destination: str) -> list[OutboxMessage]:
    """The outbox rows for one destination, oldest first."""
    with store.session() as session:
        return list(
            session.scalars(
                sa.select(OutboxMessage).where(OutboxMessage.destination == destination).order_by(OutboxMessage.id)
            )
        )


def holds(store: Store) -> list[DestinationHold]:
    """Every destination on hold."""
    with store.session() as session:
        return list(session.scalars(sa.select(DestinationHold).order_by(DestinationHold.destination)))
