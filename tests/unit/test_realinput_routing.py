"""Routing of the Body Part Examined values real archives send (dicom_listener/filtering.py).

A code string of several words (``CHEST PA``, ``CHEST_PA``, ``PA CHEST``) names the chest when one of its words is a
configured chest body part: before, only an exact match did, and such films were skipped as "not a chest
radiograph" (found by the real-input exploration, notes/report-realinput.md).
"""

from __future__ import annotations

import pytest

from radtrace.dicom_listener.filtering import InstanceFacts, decide

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
