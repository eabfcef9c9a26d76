"""A draft read from an image the PACS then re-sent under another study and patient (a wrong-patient correction)
leads the radiologist to the draft that now covers the image.

Before, the study page's warning said only that the image "was re-sent by the PACS under another patient/study" and
that ``radtrace study show`` and the audit log name where it went; accepting a finding on it was refused (422) with
a link back to the same study alone. A radiologist on the console cannot run ``radtrace`` nor read the audit log:
the draft they should decide instead was not reachable from either page. Now the warning and the refusal link to
the corrected study's newest read revision (by its console handle, never its UID), or say it is not read yet; a
script's refusal names the address in its reason. Real film (NIH ChestX-ray14), in-process listener, demo pipeline,
console through the ASGI app.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from console_support import add_user, console_client, csrf_of, sign_in, study_path
from listener_support import running
from radtrace.store.engine import Store
from reassigned_support import film_as, new_pipeline, read_first, read_then_moved, reassigned_settings, received, send

pytestmark = pytest.mark.integration

PAGE = {"accept": "text/html"}


def _accept_first_finding(client: object, page: str, shown: str, headers: dict[str, str]) -> object:
    form = re.search(r'<form method="post" action="[^"]+/findings" class="finding-form"[^>]*>(.*?)</form>', shown, re.S)
    assert form is not None
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(1)))
    fields.update(csrf_token=csrf_of(shown), decision="accept")
    return client.post(f"{page}/findings", data=fields, headers=headers, follow_redirects=False)  # type: ignore[attr-defined]


def test_a_draft_whose_image_moved_to_another_study_links_to_that_studys_draft(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = reassigned_settings(tmp_path, store, listener_port)
    study_a, study_b, sop = generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    add_user(store, "rad.one", "radiologist")
    with running(settings, store), console_client(store, settings) as client:
        read_then_moved(tmp_path, pipeline, store, listener_port, study_a=study_a, study_b=study_b, sop=sop)
        sign_in(client, "rad.one")
        page_a, page_b = study_path(store, study_a), study_path(store, study_b)
        shown = client.get(page_a).text
        warning = re.search(r'<section class="card reassigned-warning".*?</section>', shown, re.S)
        assert warning is not None
        assert f'href="{page_b}"' in warning.group(0), warning.group(0)
        assert study_b not in shown  # the studies by their handles only
        assert study_a not in shown

        refused = _accept_first_finding(client, page_a, shown, PAGE)
        assert refused.status_code == 422  # type: ignore[attr-defined]
        body = refused.text  # type: ignore[attr-defined]
        assert "Accepting" in html.unescape(body)
        current = re.search(r'<a class="button" href="([^"]+)" id="problem-current"', body)
        assert current is not None, body
        assert current.group(1) == page_b
        assert study_b not in body

        by_script = _accept_first_finding(client, page_a, shown, {"accept": "application/json"})
        assert by_script.status_code == 422  # type: ignore[attr-defined]
        assert page_b in by_script.json()["detail"]  # type: ignore[attr-defined]


def test_before_the_other_study_is_read_the_warning_says_so(tmp_path: Path, store: Store, listener_port: int) -> None:
    settings = reassigned_settings(tmp_path, store, listener_port)
    study_a, study_b, sop = generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    add_user(store, "rad.one", "radiologist")
    with running(settings, store), console_client(store, settings) as client:
        film = film_as(
            tmp_path / "a.dcm", study_uid=study_a, sop_uid=sop, patient_id="P1", name="ONE^PAT", accession="A"
        )
        read_first(pipeline, store, listener_port, film, study_a)
        moved = film_as(tmp_path / "b.dcm", study_uid=study_b, sop_uid=sop, patient_id="P2", name="TWO^PAT",
                        accession="B")  # fmt: skip
        assert send([moved], listener_port) == [0x0000]
        received(store, study_b, [(1, "queued")])
        sign_in(client, "rad.one")
        shown = client.get(study_path(store, study_a)).text
        warning = re.search(r'<section class="card reassigned-warning".*?</section>', shown, re.S)
        assert warning is not None
        assert "The other study's draft is not read yet" in warning.group(0), warning.group(0)
