"""A draft whose image the PACS moved twice leads straight to the draft that covers the image now.

The PACS files an image under study A (patient P1), corrects it to study B (P2), then again to study C (P3). Before,
A's warning and its refusal to accept led to B's draft, withdrawn in turn, whose page led to C: one study at a
time. Now A's page, its refusal and B's page all lead to C's draft. An image filed back (A -> B -> A) leads A's
withdrawn revision 1 to A's revision 2, which read it again: the walk follows each later move of the same image and
ends (each move is a later audit event, so a cycle cannot loop). Real film (NIH ChestX-ray14), in-process listener,
demo pipeline, console through the ASGI app.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from console_support import csrf_of, study_path
from radtrace.store.engine import Store
from reassigned_support import film_as, first_read, read_first

pytestmark = pytest.mark.integration


def _moved_links(client: object, page: str) -> list[str]:
    shown = client.get(page).text  # type: ignore[attr-defined]
    warning = re.search(r'<section class="card reassigned-warning".*?</section>', shown, re.S)
    assert warning is not None, shown
    return re.findall(r'<p data-testid="moved-to">[^<]*<a href="([^"]+)"', warning.group(0))


def test_an_image_moved_twice_leads_straight_to_the_study_it_is_in_now(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    study_b, study_c = generate_uid(), generate_uid()
    with first_read(tmp_path, store, listener_port, accession="A0", radiologist="rad.one") as site:
        client, study_a = site.console, site.study_uid
        for n, (study, patient) in enumerate(((study_b, "P2"), (study_c, "P3")), 1):
            film = film_as(tmp_path / f"{n}.dcm", study_uid=study, sop_uid=site.sop_uid, patient_id=patient,
                           name=f"PAT^{patient}", accession=f"A{n}")  # fmt: skip
            read_first(site.pipeline, store, listener_port, film, study)
        page_a, page_b, page_c = (study_path(store, study) for study in (study_a, study_b, study_c))
        assert _moved_links(client, page_a) == [page_c]
        assert _moved_links(client, page_b) == [page_c]

        shown = client.get(page_a).text
        form = re.search(r'<form method="post" action="[^"]+/findings" class="finding-form"[^>]*>(.*?)</form>', shown,
                         re.S)  # fmt: skip
        assert form is not None
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(1)))
        fields.update(csrf_token=csrf_of(shown), decision="accept")
        refused = client.post(f"{page_a}/findings", data=fields, headers={"accept": "text/html"},
                              follow_redirects=False)  # fmt: skip
        assert refused.status_code == 422
        current = re.search(r'<a class="button" href="([^"]+)" id="problem-current"', refused.text)
        assert current is not None, refused.text
        assert current.group(1) == page_c


def test_an_image_filed_back_leads_to_the_revision_that_read_it_again(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    study_b = generate_uid()
    with first_read(tmp_path, store, listener_port, accession="A", radiologist="rad.one") as site:
        client, study_a, pipeline = site.console, site.study_uid, site.pipeline
        moved = film_as(tmp_path / "b.dcm", study_uid=study_b, sop_uid=site.sop_uid, patient_id="P2", name="TWO^PAT",
                        accession="B")  # fmt: skip
        read_first(pipeline, store, listener_port, moved, study_b)
        read_first(pipeline, store, listener_port, site.film, study_a, revision=2)  # the PACS undoes its correction
        back = study_path(store, study_a, 2)
        assert _moved_links(client, study_path(store, study_a, 1)) == [back]
        assert _moved_links(client, study_path(store, study_b)) == [back]
        shown = client.get(study_path(store, study_a, 1)).text
        assert "The PACS filed the image back under this study" in shown
