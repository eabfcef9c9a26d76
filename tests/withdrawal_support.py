"""What the withdrawal tests share: a demo-model radtrace listening on one port, sending to a real Orthanc as the PACS
and to a test MLLP RIS; its pipeline, a study sent and read, its outbox rows delivered, and one reconciler pass.

Their opening: the module's Orthanc (``from withdrawal_support import orthanc_fixture  # noqa: F401``: pytest knows
it as ``orthanc``, one per module) and :func:`withdrawal_site` (the RIS and the site for the test), whose
:meth:`WithdrawalSite.reading` runs the listener with a film sent and read."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from listener_support import audit_payloads, running
from mllp_support import MllpReceiver, mllp_receiver
from orthanc_support import Orthanc, running_orthanc
from radtrace.config import Settings, load_settings
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, Study
from radtrace.worker.pipeline import Result, StudyPipeline
from radtrace.worker.reconciler import Reconciler
from reassigned_support import SETTLE_S, film_as, revision_states, send
from worker_support import wait_until


@pytest.fixture(name="orthanc", scope="module")
def orthanc_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A real Orthanc as the PACS, one for the module's tests."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def withdrawal_settings(
    tmp_path: Path, store: Store, port: int, orthanc: Orthanc, ris: MllpReceiver, **dispatch: Any
) -> Settings:
    """Settings for ``store``: the listener on ``port`` (calling AE PACS), drafts to ``orthanc`` and ``ris``;
    ``dispatch`` adds to or overrides the dispatch settings."""
    return load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": store.engine.url.render_as_string(hide_password=False)},
        model={"backend": "demo", "demo": True, "device": "cpu"},
        listener={"host": "127.0.0.1", "port": port, "allowed_callers": [{"ae_title": "PACS"}],
                  "settle_seconds": SETTLE_S, "min_free_bytes": 0},
        dispatch={"pacs": [{"ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": orthanc.dicom_port}],
                  "ris": {"host": ris.host, "port": ris.port}, "backoff_initial_s": 0.1, **dispatch},
        console={"sync_interval_s": 0},
    )  # fmt: skip


def outbox_rows(store: Store, study_uid: str) -> list[OutboxMessage]:
    """The study's outbox rows, oldest first."""
    with store.session() as session:
        return list(
            session.scalars(
                sa.select(OutboxMessage).join(Revision).join(Study)
                .where(Study.study_uid == study_uid).order_by(OutboxMessage.id)
            )
        )  # fmt: skip


def pipeline_of(settings: Settings, store: Store) -> StudyPipeline:
    """The demo pipeline that reads the studies and dispatches their drafts (worker ``w``)."""
    return StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w")


def read_study(pipeline: StudyPipeline, store: Store, port: int, film: Path, study_uid: str) -> None:
    """``film`` sent to the listener on ``port``, its revision 1 queued, then read and reported."""
    assert send([film], port) == [0x0000]
    wait_until(lambda: revision_states(store, study_uid) == [(1, "queued")])
    assert pipeline.process(study_uid, 1).result is Result.REPORTED


def read_film(
    pipeline: StudyPipeline,
    store: Store,
    port: int,
    path: Path,
    study_uid: str,
    sop_uid: str,
    patient: tuple[str, str, str] = ("P1", "ONE^PAT", "ACCA"),
) -> Path:
    """The real film at ``path`` as ``sop_uid`` of ``study_uid`` for ``patient`` (ID, name, accession), sent to the
    listener and read (:func:`read_study`): its path."""
    patient_id, name, accession = patient
    film = film_as(path, study_uid=study_uid, sop_uid=sop_uid, patient_id=patient_id, name=name, accession=accession)
    read_study(pipeline, store, port, film, study_uid)
    return film


def re_send_under_another_patient(store: Store, port: int, path: Path, study_uid: str, sop_uid: str) -> None:
    """The PACS's correction: ``sop_uid`` sent again under ``study_uid`` for patient P2, and its revision marked
    (``instance_reassigned`` audited)."""
    moved = film_as(path, study_uid=study_uid, sop_uid=sop_uid, patient_id="P2", name="TWO^PAT", accession="ACCB")
    assert send([moved], port) == [0x0000]
    wait_until(lambda: len(audit_payloads(store, "instance_reassigned")) == 1)


def deliver(pipeline: StudyPipeline, ids: list[int]) -> None:
    """Each outbox row dispatched once, and delivered."""
    for outbox_id in ids:
        assert pipeline.deliveries.dispatch(outbox_id).delivery.state is OutboxState.DELIVERED


def reconcile(settings: Settings, store: Store) -> list[int]:
    """One reconciler pass (its rings answered): the withdrawals it queued."""
    reconciler = Reconciler(settings, store, ring_process=lambda *_: True, ring_dispatch=lambda _: True)
    return reconciler.run_once().withdrawals


@dataclass(frozen=True)
class WithdrawalSite:
    """A demo-model radtrace (:func:`withdrawal_settings`) on ``store`` and listener ``port``, its drafts to the
    module's Orthanc and to ``ris``; its pipeline (:func:`pipeline_of`); ``tmp_path``, where its films are written."""

    settings: Settings
    pipeline: StudyPipeline
    ris: MllpReceiver
    store: Store
    port: int
    tmp_path: Path

    @contextlib.contextmanager
    def reading(
        self, study_uid: str, sop_uid: str, patient: tuple[str, str, str] = ("P1", "ONE^PAT", "ACCA")
    ) -> Iterator[Path]:
        """The listener running for the ``with`` block, the real film (``a.dcm``) as ``sop_uid`` of ``study_uid``
        for ``patient`` sent to it and read (:func:`read_film`): yields the film."""
        with running(self.settings, self.store):
            yield read_film(self.pipeline, self.store, self.port, self.tmp_path / "a.dcm", study_uid, sop_uid, patient)


@contextlib.contextmanager
def withdrawal_site(tmp_path: Path, store: Store, port: int, orthanc: Orthanc) -> Iterator[WithdrawalSite]:
    """An MLLP RIS receiving for the ``with`` block, and the site that sends to it and to ``orthanc``."""
    with mllp_receiver() as ris:
        settings = withdrawal_settings(tmp_path, store, port, orthanc, ris)
        yield WithdrawalSite(settings, pipeline_of(settings, store), ris, store, port, tmp_path)
