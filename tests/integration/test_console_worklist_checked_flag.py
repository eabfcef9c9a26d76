"""A flagged draft a radiologist recorded as checked keeps its flag on the worklist, labelled checked by them.

Before, after the study page's "Checked" (flags-checked) the worklist row kept its red "image rejected by the PACS"
flag exactly as before: nothing told the next radiologist that it had been checked, or by whom. Now the flag stays
(still visible, in the flagged filter) and reads "image rejected by the PACS · checked by rad.one", and the row's
spoken summary says it too. Real film (tests/data/real-cxr, NIH ChestX-ray14), in-process listener, demo
pipeline, console through the ASGI app.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from console_support import add_user, console_client, csrf_of, sign_in, study_path
from listener_support import running
from radtrace.store.engine import Store
from reassigned_support import (
    film_as,
    marks_shown,
    new_pipeline,
    read_first,
    reassigned_settings,
    rejected_for_patient_safety,
    worklist_row,
)

pytestmark = pytest.mark.integration


def test_the_worklist_labels_a_checked_flag_with_who_checked_it(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = reassigned_settings(tmp_path, store, listener_port)
    study, sop = generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    add_user(store, "rad.one", "radiologist")
    with running(settings, store), console_client(store, settings) as client:
        film = film_as(tmp_path / "a.dcm", study_uid=study, sop_uid=sop, patient_id="P1", name="ONE^PAT",
                       accession="A", ViewPosition="PA", BodyPartExamined="CHEST")  # fmt: skip
        read_first(pipeline, store, listener_port, film, study)
        rejected_for_patient_safety(tmp_path, store, listener_port, film)

        sign_in(client, "rad.one")
        page = study_path(store, study)
        row = worklist_row(client.get("/console/worklist?filter=flagged").text, page)
        assert "image rejected by the PACS" in row
        assert "checked by" not in row
        shown = client.get(page).text
        token = csrf_of(shown)
        done = client.post(f"{page}/flags-checked", data={"csrf_token": token, "reason": "PACS: film withdrawn, seen",
                                                          "marks_shown": marks_shown(shown)},
                           follow_redirects=False)  # fmt: skip
        assert done.status_code == 303, done.text

        for which in ("flagged", "unassessed"):
            row = worklist_row(client.get(f"/console/worklist?filter={which}").text, page)
            assert 'data-testid="flag-checked">image rejected by the PACS · checked by rad.one</span>' in row, row
            assert "flagged: image rejected by the PACS (checked by rad.one)" in row  # the row's spoken summary
