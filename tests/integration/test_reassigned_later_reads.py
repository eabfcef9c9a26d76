"""A later reading of a study never reads an image the PACS moved to another study or rejected.

Before, a revision of study A read every instance of A up to it, the one the PACS had since re-sent under study B
(patient P2) or rejected with an IHE IOCM rejection note among them: ``study_reads_reassigned`` flagged the new
revision, and the worker read patient P2's (or the withdrawn) image for patient P1's draft all the same. Now the
worker leaves such an instance out (:mod:`radtrace.worker.read_instances`); a revision with nothing left ends
``failed`` with the reason "every image was moved to another study or rejected by the PACS", and is not flagged
(it read nothing of another's). When the PACS undoes its correction (A -> B -> A) the image is A's own again: A's
next revision reads it, unflagged, and B's revision that read it is flagged (its image went back to A); A's first
revision keeps its flag (the record that it was read while the PACS filed the image elsewhere). Real film
(tests/data/real-cxr, NIH ChestX-ray14), in-process listener, demo pipeline; both stores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from listener_support import audit_payloads, running
from radtrace.dicom_listener.reassigned import flagged_revisions
from radtrace.logging import study_key
from radtrace.store.engine import Store
from radtrace.store.models import Revision, Study
from radtrace.worker.pipeline import Result
from reassigned_support import (
    film_as,
    new_pipeline,
    read_again_after_withdrawal,
    read_first,
    read_inputs,
    read_then_moved,
    reassigned_settings,
    received,
    send,
)

pytestmark = pytest.mark.integration

WITHDRAWN_REASON = "every image was moved to another study or rejected by the PACS"


def _reason(store: Store, study_uid: str, number: int) -> tuple[str, str | None]:
    with store.session() as session:
        state, reason = session.execute(
            sa.select(Revision.state, Revision.reason)
            .join(Study)
            .where(Study.study_uid == study_uid, Revision.number == number)
        ).one()
    return str(state.value), reason


def _flagged(store: Store, mark: str = "reassigned_at") -> list[tuple[str, int]]:
    with store.session() as session:
        return [(r.study_uid, r.revision) for r in flagged_revisions(session, mark=mark)]


def test_a_later_revision_of_the_old_study_does_not_read_the_image_moved_to_another_patient(
    tmp_path: Path, store: Store, listener_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A's PA film (read first by view) moves to B; A's later AP film opens revision 2: it is read from the AP
    film alone (before: from the moved PA film, patient P2's), and is not flagged. The worker's line says so, by the
    study's key (never its UID)."""
    caplog.set_level(logging.WARNING, logger="radtrace.worker.read_instances")
    settings = reassigned_settings(tmp_path, store, listener_port)
    study_a, study_b, moved_sop, later_sop = generate_uid(), generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    with running(settings, store):
        read_again_after_withdrawal(tmp_path, pipeline, store, listener_port, "moved", study_uid=study_a,
                                    first_sop=moved_sop, later_sop=later_sop, other_study_uid=study_b)  # fmt: skip
    assert read_inputs(store, study_a, 1) == [moved_sop]  # what revision 1 read, the record of it
    assert read_inputs(store, study_a, 2) == [later_sop]
    assert _flagged(store) == [(study_a, 1)]
    said = [r.getMessage() for r in caplog.records if r.name == "radtrace.worker.read_instances"]
    assert said == [f"study {study_key(study_a)} revision 2: 1 image(s) moved to another study and 0 rejected by the "
                    "PACS are not read"]  # fmt: skip


def test_a_revision_whose_only_image_moved_before_it_was_read_fails_with_the_reason(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """The correction comes while A's revision waits to be read: it is not read (before: reported, from P2's image)
    and ends failed with the reason; nothing flags it (it read nothing). B's reading of the image is unaffected."""
    settings = reassigned_settings(tmp_path, store, listener_port)
    study_a, study_b, sop = generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    with running(settings, store):
        film = film_as(tmp_path / "a.dcm", study_uid=study_a, sop_uid=sop, patient_id="P1", name="ONE^PAT",
                       accession="A")  # fmt: skip
        assert send([film], listener_port) == [0x0000]
        received(store, study_a, [(1, "queued")])
        moved = film_as(tmp_path / "b.dcm", study_uid=study_b, sop_uid=sop, patient_id="P2", name="TWO^PAT",
                        accession="B")  # fmt: skip
        read_first(pipeline, store, listener_port, moved, study_b)
    assert pipeline.process(study_a, 1).result is Result.FAILED
    assert _reason(store, study_a, 1) == ("failed", WITHDRAWN_REASON)
    assert read_inputs(store, study_a, 1) == []
    assert [json.loads(p)["revisions"] for p in audit_payloads(store, "instance_reassigned")] == [[]]
    assert _flagged(store) == []
    assert read_inputs(store, study_b, 1) == [sop]


def test_a_later_revision_does_not_read_the_image_the_pacs_rejected(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """A rejection note names A's PA film after it was read; A's later AP film opens revision 2: it is read from
    the AP film alone (before: from the rejected PA film, and flagged rejected for it). Revision 1 keeps its flag."""
    settings = reassigned_settings(tmp_path, store, listener_port)
    study, sop, later_sop = generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    with running(settings, store):
        read_again_after_withdrawal(tmp_path, pipeline, store, listener_port, "rejected", study_uid=study,
                                    first_sop=sop, later_sop=later_sop)  # fmt: skip
    assert read_inputs(store, study, 2) == [later_sop]
    assert _flagged(store, "rejected_at") == [(study, 1)]


def test_an_image_moved_away_and_back_is_read_again_by_its_own_study(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """A -> B -> A: the PACS undoes its correction. A's revision 2 (opened by the image's return) reads it and is
    not flagged (before: flagged, as reading a moved image); B's revision that read it is flagged; A's revision 1
    keeps its flag."""
    settings = reassigned_settings(tmp_path, store, listener_port)
    study_a, study_b, sop = generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    with running(settings, store):
        read_then_moved(tmp_path, pipeline, store, listener_port, study_a=study_a, study_b=study_b, sop=sop)
        back = film_as(tmp_path / "back.dcm", study_uid=study_a, sop_uid=sop, patient_id="P1", name="ONE^PAT",
                       accession="A", StudyDescription="CHEST (filed back)")  # fmt: skip
        read_first(pipeline, store, listener_port, back, study_a, revision=2)
    assert read_inputs(store, study_a, 2) == [sop]
    assert _flagged(store) == sorted([(study_a, 1), (study_b, 1)])
    events = [json.loads(p) for p in audit_payloads(store, "instance_reassigned")]
    assert [(e["new_study_uid"], e["revisions"]) for e in events] == [(study_b, [1]), (study_a, [1])]
