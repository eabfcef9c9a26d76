"""A wrong-patient correction at the PACS: the same image re-sent under another study and patient.

Found trying radtrace from outside: an image of patient P2 was filed under patient P1's study A, radtrace read it
and made A's draft; the PACS then corrected it, re-sending the same SOP Instance UID under study B and Patient ID P2.
radtrace kept the corrected copy as ``instance_new_version`` in study B and read it for B, but study A stayed
"reported" with nothing in ``radtrace status``, ``radtrace study show A``, the audit log or the review console saying
that A's draft was read from an image that now belongs to another patient: a radiologist could sign A's draft on
P2's lungs. Now the correction is still stored and answered 0x0000, an ``instance_reassigned`` event is written on
study A (the SOP Instance UID, the new Study UID, what changed), A's revision is marked, ``radtrace status`` counts
it, ``radtrace study show A`` says so, and the console flags A's worklist row (added before the correction) and
warns on its page. Real film (tests/data/real-cxr, NIH ChestX-ray14), in-process listener, demo pipeline, both stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from console_support import study_path
from listener_support import audit_payloads
from radtrace.audit.schema import AuditEventRow
from radtrace.dicom_listener.reassigned import flagged_revisions
from radtrace.store.engine import Store
from radtrace.store.models import Revision
from reassigned_support import (
    cli_env,
    film_as,
    first_read,
    read_first,
    revision_states,
    send,
    worklist_row,
)
from tests_support import radtrace
from worker_support import wait_until

pytestmark = pytest.mark.integration

WARNING = "an image of this draft was re-sent by the PACS under another patient/study: do not sign before checking"
FLAG_LABEL = "image re-sent under another patient/study"


def test_an_image_re_sent_under_another_patient_and_study_flags_the_old_studys_draft(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    with first_read(tmp_path, store, listener_port, accession="ACCA", radiologist="rad.one") as site:
        settings, pipeline, client = site.settings, site.pipeline, site.console
        study_a, study_b, sop = site.study_uid, generate_uid(), site.sop_uid
        page_a = study_path(store, study_a)
        before = client.get("/console/worklist?filter=all")
        assert before.status_code == 200
        assert FLAG_LABEL not in worklist_row(before.text, page_a)  # the row exists before the correction
        assert WARNING not in client.get(page_a).text

        # the PACS's correction: the same image, now study B of patient P2
        moved = film_as(
            tmp_path / "b.dcm", study_uid=study_b, sop_uid=sop, patient_id="P2", name="TWO^PAT", accession="ACCB"
        )
        read_first(pipeline, store, listener_port, moved, study_b)
        assert revision_states(store, study_a) == [(1, "reported")]

        with store.session() as session:
            events = session.execute(
                sa.select(AuditEventRow.study_uid, AuditEventRow.patient_id, AuditEventRow.payload).where(
                    AuditEventRow.event_type == "instance_reassigned"
                )
            ).all()
        assert len(events) == 1
        old_study, old_patient, payload = events[0]
        assert (old_study, old_patient) == (study_a, "P1")
        event = json.loads(payload)
        assert event["sop_instance_uid"] == sop
        assert event["new_study_uid"] == study_b
        assert event["changed"] == ["patient", "study"]
        assert event["revisions"] == [1]
        assert [json.loads(p)["sop_instance_uid"] for p in audit_payloads(store, "instance_new_version")] == [sop]

        # the console: the row added before the correction now carries the flag; the page warns in red (role=alert)
        after = client.get("/console/worklist?filter=all").text
        assert FLAG_LABEL in worklist_row(after, page_a)
        flagged = client.get("/console/worklist?filter=flagged").text
        assert page_a in flagged
        study_page = client.get(page_a).text
        assert 'data-testid="image-reassigned"' in study_page
        assert WARNING in study_page

    env = cli_env(settings, store)
    status = radtrace("status", "--no-broker", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "reassigned images: 1 study(ies), 1 revision(s)" in " ".join(status.stdout.split())
    assert study_a in status.stdout
    shown = radtrace("status", "--no-broker", "--json", env=env)
    assert json.loads(shown.stdout)["reassigned_images"] == {"studies": [study_a], "revisions": 1, "checked": 0}
    show = radtrace("study", "show", study_a, env=env)
    assert show.returncode == 0, show.stdout + show.stderr
    assert "revision 1: an image it read was re-sent by the PACS under another patient/study" in " ".join(
        show.stdout.split()
    )
    show_b = radtrace("study", "show", study_b, env=env)
    assert "re-sent by the PACS" not in show_b.stdout  # the corrected study's own reading is not flagged


def test_a_corrected_image_in_the_same_study_and_patient_flags_nothing(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """A new version that keeps its study and patient (a corrected description) is no reassignment."""
    with first_read(tmp_path, store, listener_port, accession="ACCA") as site:
        sop = site.sop_uid
        ds = pydicom.dcmread(site.film)
        ds.StudyDescription = "CHEST PA (corrected)"
        ds.save_as(tmp_path / "again.dcm", enforce_file_format=True)
        assert send([tmp_path / "again.dcm"], listener_port) == [0x0000]
        wait_until(
            lambda: [json.loads(p)["sop_instance_uid"] for p in audit_payloads(store, "instance_new_version")] == [sop]
        )
    assert audit_payloads(store, "instance_reassigned") == []
    with store.session() as session:
        assert session.scalar(sa.select(sa.func.count()).where(Revision.reassigned_at.is_not(None))) == 0


def test_an_image_re_sent_in_the_same_study_under_another_patient_flags_it_as_a_patient_change(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """The PACS merges the image's patient (P1 -> P9) and keeps the study: ``changed`` names the patient only."""
    with first_read(tmp_path, store, listener_port, accession="A") as site:
        study, sop = site.study_uid, site.sop_uid
        other = film_as(
            tmp_path / "b.dcm", study_uid=study, sop_uid=sop, patient_id="P9", name="NINE^PAT", accession="A"
        )
        assert send([other], listener_port) == [0x0000]
        wait_until(lambda: len(audit_payloads(store, "instance_reassigned")) == 1)
        wait_until(lambda: revision_states(store, study) == [(1, "reported"), (2, "queued")])
    [event] = [json.loads(p) for p in audit_payloads(store, "instance_reassigned")]
    assert (event["changed"], event["new_study_uid"], event["revisions"]) == (["patient"], study, [1])
    with store.session() as session:  # revision 2 reads the corrected version: its draft will be of patient P9's image
        assert [(r.study_uid, r.revision) for r in flagged_revisions(session)] == [(study, 1)]
