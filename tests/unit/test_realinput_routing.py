"""Routing of the Body Part Examined values real archives send (dicom_listener/filtering.py).

A code string of several words (``CHEST PA``, ``CHEST_PA``, ``PA CHEST``) names the chest when one of its words is a
configured chest body part: before, only an exact match did, and such films were skipped as "not a chest
radiograph" (found by the real-input exploration, notes/report-realinput.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radtrace.config import ModelSettings, RoutingSettings
from radtrace.dicom_listener.filtering import FilterRule, InstanceFacts, decide
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import Skipped, StudyImage, study_image
from radtrace.model.views import NO_FRONTAL, names_chest

pytestmark = pytest.mark.unit

CR = "1.2.840.10008.5.1.4.1.1.1"


@pytest.mark.parametrize("body_part", ["CHEST PA", "CHEST_PA", "PA CHEST", "THORAX AP", "CHEST"])
def test_a_body_part_of_several_words_naming_the_chest_is_routed_to_the_model(body_part: str) -> None:
    decision = decide([InstanceFacts(CR, "CR", body_part)], None)
    assert decision.queue, decision


@pytest.mark.parametrize("body_part", ["ABDOMEN", "CHESTNUT", "KNEE_LEFT", "PELVIS"])
def test_other_body_parts_are_still_skipped_with_their_name(body_part: str) -> None:
    decision = decide([InstanceFacts(CR, "CR", body_part)], None)
    assert not decision.queue
    assert body_part in (decision.reason or "")


# One list of chest words for routing and for the worker's choice of image (found by the real-input exploration,
# notes/report-realinput.md, open 1): a word a site adds to listener.routing.chest_body_parts routed the study to the
# model, and model/views.py, with its own list, then skipped it "no frontal chest image".

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
FUJI = "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"  # CR chest PA, a real film


def _fuji_labelled(body_part: str) -> StudyImage:
    image = study_image((REAL / FUJI).read_bytes())
    image.dataset.BodyPartExamined = body_part
    return image


@pytest.mark.parametrize("site_word", ["BRUST", "BRUSTKORB", "CXR"])
def test_a_site_configured_chest_word_is_routed_and_read_not_skipped(site_word: str) -> None:
    routing = RoutingSettings(chest_body_parts=[*RoutingSettings().chest_body_parts, site_word])
    image = _fuji_labelled(site_word)
    ds = image.dataset
    decision = decide(
        [InstanceFacts(ds.SOPClassUID, ds.Modality, ds.BodyPartExamined)], None, FilterRule.from_settings(routing)
    )
    assert decision.queue, decision
    reader = StudyReader(ModelSettings(backend="demo", demo=True), chest_body_parts=routing.chest_body_parts)
    try:
        outcome = reader.read([image])
    finally:
        reader.close()
    assert not isinstance(outcome, Skipped), outcome
    assert isinstance(outcome, Reading)
    assert outcome.images[0].sop_instance_uid == ds.SOPInstanceUID


def test_a_word_the_site_did_not_configure_is_still_skipped_by_both() -> None:
    image = _fuji_labelled("BRUST")
    ds = image.dataset
    assert not decide([InstanceFacts(ds.SOPClassUID, ds.Modality, "BRUST")], None).queue
    reader = StudyReader(ModelSettings(backend="demo", demo=True))
    try:
        outcome = reader.read([image])
    finally:
        reader.close()
    assert isinstance(outcome, Skipped)
    assert outcome.reason == NO_FRONTAL


@pytest.mark.parametrize("body_part", ["TORAX", "PECHO", "TORAX PA"])
def test_iberian_chest_words_are_routed_by_default_as_views_read_them(body_part: str) -> None:
    assert decide([InstanceFacts(CR, "CR", body_part)], None).queue
    assert names_chest(body_part)


def test_the_service_reader_takes_the_listeners_chest_words_and_image_limit(tmp_path: Path) -> None:
    """The GPU worker and ``radtrace model read`` build their reader from the whole settings: before, neither passed
    the routing's chest words (a site word was routed, then skipped) and the CLI not the image size limit."""
    from radtrace.config import load_settings

    words = [*RoutingSettings().chest_body_parts, "BRUSTKORB"]
    settings = load_settings(
        data_dir=tmp_path,
        model={"backend": "demo", "demo": True},
        listener={"max_image_pixels": 1_000_000, "routing": {"chest_body_parts": words}},
    )
    reader = StudyReader.for_service(settings)
    try:
        assert reader.max_source_pixels == 1_000_000
        assert "BRUSTKORB" in reader.chest_body_parts
        assert isinstance(reader.read([_fuji_labelled("BRUSTKORB")]), Reading)
    finally:
        reader.close()
