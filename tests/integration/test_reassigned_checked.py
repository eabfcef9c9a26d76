"""A draft read from an image the PACS moved to another patient cannot be accepted until a radiologist checked it.

Before, the study page warned "do not sign before checking", but nothing stopped a radiologist accepting the draft
(a finding, the impression, the whole draft), and nothing could record that it had been checked. Now, before a
check, accepting or modifying answers 422 with the reason (the page shows it back; rejecting is still taken); the
study page has a "Checked" form (a required reason, CSRF-checked, radiologists only) that stores who, when and why
on the revision and audits ``image_flags_checked``; after it, accepting is allowed and ``radtrace study show`` says
who checked it. A check sent from a page loaded before a new mark (a rejection note came meanwhile) is refused (409):
it would cover a flag the radiologist never saw (report-review item 4). Real film (tests/data/real-cxr, NIH
ChestX-ray14), in-process listener, demo pipeline, console through the ASGI app, CLI as a subprocess; both stores.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from console_support import add_user, console_client, csrf_of, sign_in, study_path
from listener_support import audit_payloads, running
from radtrace.store.engine import Store
from radtrace.store.models import Revision, Study
from radtrace.worker.pipeline import Result
from reassigned_support import (
    cli_env,
    film_as,
    marks_shown,
    new_pipeline,
    read_first,
    reassigned_settings,
    received,
    rejected_for_patient_safety,
    send,
)
from tests_support import radtrace

pytestmark = pytest.mark.integration


def _checked(store: Store, study_uid: str) -> tuple[str | None, str | None, bool]:
    with store.session() as session:
        by, reason, at = session.execute(
            sa.select(Revision.flags_checked_by, Revision.flags_checked_reason, Revision.flags_checked_at)
            .join(Study)
            .where(Study.study_uid == study_uid, Revision.number == 1)
        ).one()
    return by, reason, at is not None


def test_a_flagged_draft_is_accepted_only_after_a_radiologist_recorded_the_check(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = reassigned_settings(tmp_path, store, listener_port)
    study_a, study_b, sop = generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    add_user(store, "rad.one", "radiologist")
    add_user(store, "qa.one", "qa")
    with running(settings, store), console_client(store, settings) as client:
        film = film_as(tmp_path / "a.dcm", study_uid=study_a, sop_uid=sop, patient_id="P1", name="ONE^PAT",
                       accession="A")  # fmt: skip
        own = film_as(tmp_path / "a2.dcm", study_uid=study_a, sop_uid=generate_uid(), patient_id="P1",
                      name="ONE^PAT", accession="A")  # fmt: skip
        assert send([film, own], listener_port) == [0x0000, 0x0000]  # one association: one revision
        received(store, study_a, [(1, "queued")])
        assert pipeline.process(study_a, 1).result is Result.REPORTED
        moved = film_as(tmp_path / "b.dcm", study_uid=study_b, sop_uid=sop, patient_id="P2", name="TWO^PAT",
                        accession="B")  # fmt: skip
        read_first(pipeline, store, listener_port, moved, study_b)

        post = functools.partial(client.post, follow_redirects=False)
        sign_in(client, "qa.one")
        page = study_path(store, study_a)
        shown = client.get(page).text
        assert 'data-testid="flags-unchecked"' in shown
        refused = post(f"{page}/flags-checked", data={"csrf_token": csrf_of(shown), "reason": "seen"})
        assert refused.status_code == 403  # only a radiologist checks
        client.post("/console/logout", data={"csrf_token": csrf_of(shown)})

        sign_in(client, "rad.one")
        shown = client.get(page).text
        token = csrf_of(shown)
        assert 'id="flags-check-form"' in shown
        label = re.findall(r'data-label="([^"(][^"]*)"', shown)[0]

        accept = post(f"{page}/findings", data={"csrf_token": token, "label": label, "decision": "accept"})
        assert accept.status_code == 422
        assert "Accepting " + label + " is refused" in accept.text
        assert "re-sent by the PACS under another patient/study" in accept.text
        draft = post(f"{page}/draft", data={"csrf_token": token, "decision": "accept", "reason": "RT-A1"})
        assert draft.status_code == 422
        assert "Accepting the whole draft is refused" in draft.text
        rejected = post(f"{page}/findings", data={"csrf_token": token, "label": label, "decision": "reject"})
        assert rejected.status_code == 303  # a rejection is always taken

        assert post(f"{page}/flags-checked", data={"csrf_token": token, "reason": "  "}).status_code == 422
        assert post(f"{page}/flags-checked", data={"reason": "checked"}).status_code == 403  # no CSRF token
        assert _checked(store, study_a) == (None, None, False)
        assert audit_payloads(store, "image_flags_checked") == []
        reason = "PACS: film is P2's; A's own PA is still pending, draft kept for the record"
        assert post(f"{page}/flags-checked", data={"csrf_token": token, "reason": reason}).status_code == 422
        done = post(f"{page}/flags-checked", data={"csrf_token": token, "reason": reason,
                                                   "marks_shown": marks_shown(shown)})  # fmt: skip
        assert done.status_code == 303, done.text
        assert _checked(store, study_a) == ("rad.one", reason, True)
        [event] = [json.loads(p) for p in audit_payloads(store, "image_flags_checked")]
        assert (event["revision"], event["flags"], event["reason"]) == (1, ["image-reassigned"], reason)

        again = post(f"{page}/findings", data={"csrf_token": token, "label": label, "decision": "accept"})
        assert again.status_code == 303
        draft = post(f"{page}/draft", data={"csrf_token": token, "decision": "accept", "reason": "RT-A1"})
        assert draft.status_code == 303, draft.text
        shown = client.get(page).text
        assert 'data-testid="image-reassigned"' in shown  # the warning stays
        assert "Checked by rad.one" in shown  # and says who checked it

        # the PACS then rejects A's other film: a mark the check did not cover clears it
        rejected_for_patient_safety(tmp_path, store, listener_port, own)
        assert _checked(store, study_a) == (None, None, False)
        refused = post(f"{page}/findings", data={"csrf_token": token, "label": label, "decision": "accept"})
        assert refused.status_code == 422
        assert _checked(store, study_a) == (None, None, False)
        # Checked from the page loaded before the note: it did not show the rejection, the check would cover it
        stale = post(f"{page}/flags-checked", data={"csrf_token": token, "reason": reason,
                                                    "marks_shown": marks_shown(shown)})  # fmt: skip
        assert stale.status_code == 409, stale.text
        assert "since this page was loaded" in stale.text
        assert _checked(store, study_a) == (None, None, False)
        assert [json.loads(p)["flags"] for p in audit_payloads(store, "image_flags_checked")] == [["image-reassigned"]]
        shown = client.get(page).text  # reloaded: both warnings
        assert 'data-testid="image-rejected"' in shown
        checked = post(f"{page}/flags-checked", data={"csrf_token": token, "reason": reason,
                                                      "marks_shown": marks_shown(shown)})  # fmt: skip
        assert checked.status_code == 303, checked.text

    show = radtrace("study", "show", study_a, env=cli_env(settings, store))
    assert show.returncode == 0, show.stdout + show.stderr
    assert "checked by rad.one" in " ".join(show.stdout.split())
