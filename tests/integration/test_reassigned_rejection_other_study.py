"""A rejection note naming the OLD study's copy of an image the PACS moved to another study rejects that copy only.

Image X is read in study A (patient P1), re-sent by the PACS under study B (P2, its right place) and read there;
then the PACS rejects A's copy (the note's evidence files X under study A). Before, the note flagged the newest copy
anywhere (B's) and set ``instances.rejected_at`` on every version of X: B's revision was flagged rejected and B's later
readings left out B's own image. Now the copy in the study the evidence names is rejected: A's revision is flagged,
B's is not and B still reads X. Found by review (report-review item 5); real film, in-process listener."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from listener_support import audit_payloads, running
from radtrace.dicom_listener.reassigned import flagged_revisions
from radtrace.store.engine import Store
from radtrace.store.models import Study
from radtrace.worker.read_instances import withdrawn_instances
from reassigned_support import (
    new_pipeline,
    read_then_moved,
    reassigned_settings,
    rejected_for_patient_safety,
)

pytestmark = pytest.mark.integration


def test_a_note_rejecting_the_old_studys_copy_leaves_the_new_studys_copy_read(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = reassigned_settings(tmp_path, store, listener_port)
    study_a, study_b, sop = generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    with running(settings, store):
        film = read_then_moved(tmp_path, pipeline, store, listener_port, study_a=study_a, study_b=study_b, sop=sop)
        # the PACS rejects the wrong-patient copy it had filed under study A (the note's evidence names study A)
        rejected_for_patient_safety(tmp_path, store, listener_port, film)
    with store.session("t") as session:
        rejected = [f.study_uid for f in flagged_revisions(session, mark="rejected_at")]
        b_id = session.scalar(sa.select(Study.id).where(Study.study_uid == study_b))
        b_rejected = withdrawn_instances(session, b_id).rejected
    assert study_b not in rejected, "study B's correctly filed copy was flagged rejected"
    assert sop not in b_rejected, "study B's later readings will leave out its own image"
    assert rejected == [study_a]  # the copy the note named: A's revision read it
    assert [json.loads(p)["revisions"] for p in audit_payloads(store, "instance_rejection_noted")] == [[1]]
