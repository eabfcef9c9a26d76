"""An IHE IOCM Rejection Note from the PACS naming an image radtrace read flags the draft read from it.

A PACS rejects an image (here "Rejected for Patient Safety Reasons", DCM 113037) by sending a Key Object Selection
Document titled with the rejection code, naming the image in its Current Requested Procedure Evidence Sequence.
Before, radtrace stored the note as one more instance it does not read and the study stayed "reported" with nothing
saying its draft was read from a withdrawn image. Now the note is stored and answered 0x0000 as before, the
revision that read the image is marked, ``instance_rejection_noted`` is audited on its study, ``radtrace status``
counts it, ``radtrace study show`` says so, and the console flags the worklist row and warns on the study page. A KOS
with another title (key images "Of Interest", DCM 113000) changes nothing. Real film (tests/data/real-cxr, NIH
ChestX-ray14), in-process listener, demo pipeline, console through the ASGI app, CLI as a subprocess; both stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from console_support import study_path
from listener_support import audit_payloads, running
from radtrace.dicom_listener.reassigned import flagged_revisions
from radtrace.store.engine import Store
from reassigned_support import (
    cli_env,
    first_read,
    rejected_for_patient_safety,
    rejection_note,
    revision_states,
    send,
    worklist_row,
)
from tests_support import radtrace
from worker_support import wait_until

pytestmark = pytest.mark.integration

WARNING = "an image of this draft was rejected by the PACS (IHE rejection note): do not sign before checking"
FLAG_LABEL = "image rejected by the PACS"


def test_a_rejection_note_naming_a_read_image_flags_its_draft(tmp_path: Path, store: Store, listener_port: int) -> None:
    with first_read(tmp_path, store, listener_port, accession="A1", radiologist="rad.one") as site:
        settings, client, study, sop = site.settings, site.console, site.study_uid, site.sop_uid
        page = study_path(store, study)
        assert FLAG_LABEL not in worklist_row(client.get("/console/worklist?filter=all").text, page)

        rejected_for_patient_safety(tmp_path, store, listener_port, site.film)
        [event] = [json.loads(p) for p in audit_payloads(store, "instance_rejection_noted")]
        assert event["title"] == {"code": "113037", "scheme": "DCM", "meaning": "Rejected for Patient Safety Reasons"}
        assert event["sop_instance_uids"] == [sop]
        assert event["revisions"] == [1]
        assert revision_states(store, study) == [(1, "reported")]  # the note opens no revision (it is not read)

        assert FLAG_LABEL in worklist_row(client.get("/console/worklist?filter=all").text, page)
        shown = client.get(page).text
        assert 'data-testid="image-rejected"' in shown
        assert WARNING in shown

    env = cli_env(settings, store)
    status = radtrace("status", "--no-broker", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "rejected images: 1 study(ies), 1 revision(s)" in " ".join(status.stdout.split())
    show = radtrace("study", "show", study, env=env)
    assert "revision 1: an image it read was rejected by the PACS" in " ".join(show.stdout.split())


def test_a_key_object_selection_with_another_title_flags_nothing(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    with first_read(tmp_path, store, listener_port, accession="A1") as site:
        note = rejection_note(tmp_path / "key.dcm", site.film, "113000", "Of Interest")
        assert send([note], listener_port) == [0x0000]
        wait_until(lambda: len(audit_payloads(store, "instance_received")) == 2)
    assert audit_payloads(store, "instance_rejection_noted") == []
    with store.session() as session:
        assert flagged_revisions(session, mark="rejected_at") == []


def test_a_rejection_note_is_heard_when_the_listener_refuses_other_classes(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """With ``listener.non_chest_policy = reject`` only radiographs were offered: the PACS's rejection note (a KOS)
    was refused at negotiation and the draft read from the withdrawn image stayed unflagged. Now the KOS class is
    offered under either policy."""
    # the NIH film is a Secondary Capture: read under the default policy
    with first_read(tmp_path, store, listener_port, accession="A1") as site:
        settings, study, film = site.settings, site.study_uid, site.film
    rejecting = settings.model_copy(
        update={"listener": settings.listener.model_copy(update={"non_chest_policy": "reject"})}
    )
    with running(rejecting, store):
        note = rejection_note(tmp_path / "note.dcm", film, "113001", "Rejected for Quality Reasons")
        assert send([note], listener_port) == [0x0000]  # before: refused at negotiation
        wait_until(lambda: len(audit_payloads(store, "instance_rejection_noted")) == 1)
    with store.session() as session:
        assert [(r.study_uid, r.revision) for r in flagged_revisions(session, mark="rejected_at")] == [(study, 1)]
