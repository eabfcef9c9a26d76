"""Every draft's flags and image notes are one module's (radtrace.reporting.draft_notes), not the SR builder's: the SR,
the ORU and the FHIR Bundle use the same functions, and the names the console imports from radtrace.reporting.sr are
those same objects. Behaviour is unchanged by the move: the 23 reference SRs are byte-identical
(/work/notes/reporting-sr-hashes.py before and after), and the drafts' own tests say the same lines."""

from __future__ import annotations

import pytest

from radtrace.reporting import draft_notes, fhir, hl7, sr

pytestmark = pytest.mark.unit

MOVED = ("PolarityNote", "image_notes", "labels_sanitised", "output_flags", "polarity_notes")


@pytest.mark.parametrize("name", MOVED)
def test_the_flags_and_image_notes_are_draft_notes_own(name: str) -> None:
    assert getattr(draft_notes, name).__module__ == "radtrace.reporting.draft_notes"
    assert name in draft_notes.__all__


@pytest.mark.parametrize("name", [*MOVED, "POLARITY_CONTRADICTION", "SUSPECTED_NEGATIVE"])
def test_the_sr_module_still_names_them_as_the_same_objects(name: str) -> None:
    assert getattr(sr, name) is getattr(draft_notes, name)
    assert name in sr.__all__


@pytest.mark.parametrize("module", [sr, hl7, fhir], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_draft_says_its_flags_and_image_line_by_draft_notes(module: object) -> None:
    for name in ("image_notes", "labels_sanitised", "output_flags"):
        assert getattr(module, name) is getattr(draft_notes, name)
