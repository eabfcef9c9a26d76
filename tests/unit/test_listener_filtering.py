"""Which studies go to the model: the filtering rule over plain facts."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, SecondaryCaptureImageStorage

from radtrace.dicom_listener.filtering import InstanceFacts, decide
from radtrace.store.models import Priority

pytestmark = pytest.mark.unit

DX = str(DigitalXRayImageStorageForPresentation)


def test_a_chest_dx_is_queued_even_beside_a_secondary_capture() -> None:
    facts = [InstanceFacts(DX, "DX", "CHEST"), InstanceFacts(str(SecondaryCaptureImageStorage), "OT", None)]
    assert decide(facts, "XR CHEST").queue


@pytest.mark.parametrize(
    ("facts", "description", "reason"),
    [
        ([InstanceFacts(str(CTImageStorage), "CT", "CHEST")], "CT CHEST", "no CR/DX radiograph (modality CT)"),
        ([InstanceFacts(DX, "DX", "KNEE")], "XR CHEST", "not a chest radiograph (body part KNEE)"),
        ([InstanceFacts(DX, "DX", None)], "XR HAND", "not a chest radiograph (no body part, description names HAND)"),
        (
            [InstanceFacts(DX, "DX", None)],
            "Knee 2 views",
            "not a chest radiograph (no body part, description names KNEE",
        ),
        ([], None, "no instances"),
    ],
)
def test_everything_else_is_skipped_with_a_readable_reason(
    facts: list[InstanceFacts], description: str | None, reason: str
) -> None:
    decision = decide(facts, description)
    assert not decision.queue
    assert decision.reason is not None
    assert decision.reason.startswith(reason)


@pytest.mark.parametrize("description", ["XR CHEST PA AND LATERAL", "Thorax 2 Ebenen", "CXR portable", "RX TORAX"])
def test_without_a_body_part_the_description_decides(description: str) -> None:
    assert decide([InstanceFacts(DX, "DX", "")], description).queue


@pytest.mark.parametrize("description", ["Cardiomegaly", "", None, "Portable AP 1 view"])
def test_a_radiograph_whose_anatomy_is_stated_nowhere_is_read(description: str | None) -> None:
    """Real archives hold chest films with no body part and a description that names no anatomy (NIH ChestX-ray14:
    "Cardiomegaly"); they are read, and the model refuses a film that is not of the chest."""
    assert decide([InstanceFacts(DX, "DX", None)], description).queue


def test_the_routing_settings_change_what_goes_to_the_model() -> None:
    from radtrace.config import load_settings
    from radtrace.dicom_listener.filtering import FilterRule

    routing = load_settings(
        listener={"routing": {"modalities": ["dx"], "chest_body_parts": ["brust"], "chest_description": "rontgen"}}
    ).listener.routing
    rule = FilterRule.from_settings(routing)
    assert decide([InstanceFacts(DX, "DX", "Brust")], None, rule).queue
    assert decide([InstanceFacts(DX, "DX", "")], "RONTGEN THORAX", rule).queue
    assert not decide([InstanceFacts(DX, "DX", "CHEST")], None, rule).queue  # only what the site listed
    cr = str(pydicom.uid.ComputedRadiographyImageStorage)
    assert decide([InstanceFacts(cr, "CR", "BRUST")], None, rule).reason == "no CR/DX radiograph (modality CR)"


def test_a_bad_routing_pattern_is_refused_naming_the_setting() -> None:
    from radtrace.config import load_settings
    from radtrace.errors import ConfigError

    with pytest.raises(ConfigError, match=r"listener\.routing\.stat_description"):
        load_settings(listener={"routing": {"stat_description": "(unclosed"}})


@pytest.mark.parametrize(
    ("facts", "description", "routing", "expected"),
    [
        ([InstanceFacts(DX, "DX", "CHEST")], "XR CHEST", {}, Priority.ROUTINE),
        ([InstanceFacts(DX, "DX", "CHEST", requested_priority="STAT")], "XR CHEST", {}, Priority.STAT),
        ([InstanceFacts(DX, "DX", "CHEST", requested_priority="stat ")], "XR CHEST", {}, Priority.STAT),
        ([InstanceFacts(DX, "DX", "CHEST", requested_priority="HIGH")], "XR CHEST", {}, Priority.ROUTINE),
        (
            [InstanceFacts(DX, "DX", "CHEST", requested_priority="HIGH")],
            "XR CHEST",
            {"stat_requested_priorities": ["STAT", "HIGH"]},
            Priority.STAT,
        ),
        ([InstanceFacts(DX, "DX", "CHEST")], "XR CHEST PORTABLE STAT", {}, Priority.STAT),
        ([InstanceFacts(DX, "DX", "CHEST")], "XR CHEST STATUS POST", {}, Priority.ROUTINE),  # a word, not a prefix
        ([InstanceFacts(DX, "DX", "CHEST")], "XR CHEST STAT", {"stat_description": None}, Priority.ROUTINE),
        (
            [InstanceFacts(DX, "DX", "CHEST", calling_ae="ED_DR1")],
            "XR CHEST",
            {"stat_calling_ae_titles": ["ed_dr1"]},
            Priority.STAT,
        ),
    ],
)
def test_a_study_is_stat_when_its_request_its_sender_or_its_description_says_so(
    facts: list[InstanceFacts], description: str, routing: dict[str, object], expected: Priority
) -> None:
    from radtrace.config import load_settings
    from radtrace.dicom_listener.filtering import FilterRule

    rule = FilterRule.from_settings(load_settings(listener={"routing": routing}).listener.routing)
    decision = decide(facts, description, rule)
    assert decision.queue
    assert decision.priority is expected


def test_a_skipped_study_has_no_priority_to_speak_of() -> None:
    decision = decide([InstanceFacts(DX, "DX", "KNEE", requested_priority="STAT")], "XR KNEE STAT")
    assert (decision.queue, decision.priority) == (False, Priority.ROUTINE)
