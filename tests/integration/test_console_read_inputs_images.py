"""The study page shows exactly the images a revision's reading was made from, for every revision.

Before, console/images.py made "as the model read it" again from every instance of the study up to the revision
(``revision_instances``) and chose the views again: for a later revision that left out an image the PACS moved to
another patient or rejected (radtrace.worker.read_instances), that choice took the left-out PA film, so the AP film
the model did read had no picture ("the worker's preparation does not read this image"), and the page said "The
model read 1 of this study's 2 images ... read it in the PACS", sending the radiologist to the withdrawn film. Now
the pictures are made from the SOP Instance UIDs (and SHA-256) of the revision's ``inference_completed`` inputs,
and the count leaves out what the worker leaves out. Real film (tests/data/real-cxr, NIH ChestX-ray14), in-process
listener, demo pipeline, console through the ASGI app; both stores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from console_support import add_user, console_client, sign_in, study_path
from listener_support import running
from radtrace.store.engine import Store
from reassigned_support import new_pipeline, read_again_after_withdrawal, read_inputs, reassigned_settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("withdrawn_by", ["moved", "rejected"])
def test_each_revision_shows_the_images_its_reading_read_not_a_withdrawn_one(
    tmp_path: Path, store: Store, listener_port: int, withdrawn_by: str
) -> None:
    settings = reassigned_settings(tmp_path, store, listener_port)
    study, other, pa_sop, ap_sop = generate_uid(), generate_uid(), generate_uid(), generate_uid()
    pipeline = new_pipeline(settings, store)
    add_user(store, "rad.one", "radiologist")
    with running(settings, store), console_client(store, settings) as client:
        read_again_after_withdrawal(tmp_path, pipeline, store, listener_port, withdrawn_by, study_uid=study,
                                    first_sop=pa_sop, later_sop=ap_sop, other_study_uid=other)  # fmt: skip
        assert read_inputs(store, study, 1) == [pa_sop]
        assert read_inputs(store, study, 2) == [ap_sop]

        sign_in(client, "rad.one")
        for revision in (1, 2):
            page = study_path(store, study, revision)
            shown = client.get(page)
            assert shown.status_code == 200, shown.text
            assert 'data-testid="images-not-read"' not in shown.text  # the withdrawn PA film is not "to read"
            for kind in ("prepared", "original"):
                picture = client.get(f"{page}/images/0/{kind}.png")
                assert picture.status_code == 200, (revision, kind, picture.text)
                assert picture.headers["content-type"] == "image/png"
                assert picture.content.startswith(b"\x89PNG")
