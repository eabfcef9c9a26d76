"""Which studies go to the model: the filtering rule over plain facts."""

from __future__ import annotations

import pytest
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, SecondaryCaptureImageStorage

from radtrace.dicom_listener.filtering import InstanceFacts, decide

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
        ([InstanceFacts(DX, "DX", None)], "XR HAND", "not a chest radiograph (no body part, description"),
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
