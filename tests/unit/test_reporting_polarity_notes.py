"""What the inversion step found against a picture's polarity, as the drafts and the console's flags say it.

The pieces the reading path test (integration/test_polarity_flag.py) does not reach: a negative beside an AP view
note, the FHIR conclusion and the companion document, a lateral image flagged, and recorded readings that were
edited in the database (a payload is data the console reads back, not something it wrote itself).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hl7
import pytest
from pydicom.dataset import Dataset

from radtrace.config import ReportingSettings
from radtrace.console.review import StudyReview
from radtrace.console.worklist import reading_flags
from radtrace.model.image import display_values
from radtrace.model.reading import Reading
from radtrace.reporting import codes
from radtrace.reporting.companion import build_companion
from radtrace.reporting.fhir import build_fhir_bundle
from radtrace.reporting.hl7 import build_oru, observation_texts
from radtrace.reporting.sr import (
    POLARITY_CONTRADICTION,
    SUSPECTED_NEGATIVE,
    build_sr,
    image_notes,
    polarity_notes,
)
from reporting_support import reading, shown, source_study
from tests_support import sr_dciodvfy

pytestmark = pytest.mark.unit

SETTINGS = ReportingSettings()
WHEN = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def _steps(ds: Dataset, **header: str) -> list[dict[str, Any]]:
    """The preparation steps the real chain records for ``ds`` with ``header`` set (a copy)."""
    changed = copy.deepcopy(ds)
    for keyword, value in header.items():
        setattr(changed, keyword, value)
    return display_values(changed)[1]


def _wrong(ds: Dataset) -> dict[str, str]:
    """A header that makes ``ds`` a negative: the other Photometric Interpretation, its Presentation LUT Shape
    restating it (as a vendor writing the wrong one writes both)."""
    if ds.PhotometricInterpretation == "MONOCHROME1":
        return {"PhotometricInterpretation": "MONOCHROME2", "PresentationLUTShape": "IDENTITY"}
    return {"PhotometricInterpretation": "MONOCHROME1", "PresentationLUTShape": "INVERSE"}


def _negative_reading(view_flags: tuple[str, ...] = ()) -> tuple[Reading, list[Dataset]]:
    """The factory's PA + lateral study, its PA film read under the wrong Photometric Interpretation."""
    datasets = source_study()
    [image] = shown(datasets, view="AP" if view_flags else "PA", view_flags=view_flags)
    steps = tuple(_steps(datasets[0], **_wrong(datasets[0])))
    return reading(datasets, images=(image.model_copy(update={"preparation": steps, "role": "frontal"}),)), datasets


def test_a_negative_is_said_first_on_its_image_line_in_every_output(tmp_path: Path) -> None:
    negative, datasets = _negative_reading(view_flags=("ap",))
    notes = image_notes(negative)
    assert notes.startswith("frontal image (AP): the picture the model read looks like a negative (polarity score -")
    assert "may be wrong; check the film before trusting the findings; AP projection: the heart" in notes
    assert "\n" not in notes  # one image, one line
    sr = build_sr(negative, datasets, settings=SETTINGS, revision=1, content_datetime=WHEN)
    errors, warnings = sr_dciodvfy(sr, tmp_path / "negative-sr.dcm")
    assert errors == []
    assert warnings == []
    bundle = json.loads(build_fhir_bundle(negative, datasets[0], settings=SETTINGS, revision=1, created_at=WHEN))
    [report] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert report["conclusion"].endswith(notes)
    companion = build_companion(negative, sr, settings=SETTINGS, revision=1, content_datetime=WHEN)
    assert notes in [item.TextValue for item in companion.ContentSequence if item.ValueType == "TEXT"]
    oru = build_oru(negative, datasets[0], settings=SETTINGS, sr_sop_instance_uid=str(sr.SOPInstanceUID),
                    created_at=WHEN)  # fmt: skip
    message = hl7.parse(oru.text)
    triples = ((str(s[3][0][0]), str(s[4]), message.unescape(str(s[5]))) for s in message.segments("OBX"))
    assert observation_texts(triples)[(codes.IMAGE_NOTES.value, "")] == notes


def test_the_film_as_stored_gets_no_note_and_no_flag() -> None:
    datasets = source_study()
    [image] = shown(datasets)
    image = image.model_copy(update={"preparation": tuple(_steps(datasets[0]))})
    as_stored = reading(datasets, images=(image,))
    assert polarity_notes(image.preparation) == ()
    assert image_notes(as_stored) == ""
    assert reading_flags(json.loads(as_stored.model_dump_json()), None) == []


def test_any_image_read_as_a_negative_or_with_a_contradicting_header_flags_the_worklist() -> None:
    datasets = source_study()
    lateral = datasets[1]
    restated = "IDENTITY" if datasets[0].PhotometricInterpretation == "MONOCHROME1" else "INVERSE"
    recorded = {
        "flags": [],
        "images": [
            {"role": "frontal", "view": "PA", "view_flags": [],
             "preparation": _steps(datasets[0], PresentationLUTShape=restated)},
            {"role": "lateral", "view": "LL", "view_flags": [],
             "preparation": _steps(lateral, **_wrong(lateral))},
        ],
    }  # fmt: skip
    recorded = json.loads(json.dumps(recorded))  # as inference_completed keeps it
    assert reading_flags(recorded, None) == [POLARITY_CONTRADICTION, SUSPECTED_NEGATIVE]
    review = _review(recorded)
    assert [(which, note.kind) for which, note in review.polarity_warnings] == [
        ("Frontal image · PA", POLARITY_CONTRADICTION),
        ("Lateral image · LL", SUSPECTED_NEGATIVE),
    ]
    [(_, contradiction), (_, negative)] = review.polarity_warnings
    assert contradiction.text.startswith(
        f"the header contradicts itself on polarity (Presentation LUT Shape {restated}"
    )
    assert negative.figures.startswith("mediastinum over lungs ")
    assert negative.figures.endswith("a score below -0.05 reads as a negative, above +0.05 as a film")


def _review(recorded: dict[str, Any]) -> StudyReview:
    return StudyReview(
        study_uid="1.2.3", revision=1, accession=None, item=None, reading=recorded, identity={}, findings=(),
        reasoning=(), impression=None, flags=(), images=tuple(recorded["images"]), timings={}, revisions=(),
        draft_decision=None,
    )  # fmt: skip


def test_a_recorded_step_edited_into_something_else_is_said_safely_or_not_at_all() -> None:
    """A payload edited in the database (SQLite keeps anything): nothing it holds but a code string and a number
    reaches a draft or the page, and nothing in it makes the worklist fail."""
    forged = {
        "step": "inversion",
        "photometric": "MONOCHROME1\r\nOBX|1|TX|<script>",
        "presentation_lut_shape": "INVERSE",
        "polarity_check": {
            "verdict": "probably inverted",
            "score": "-0.9; DROP",
            "mediastinum_over_lungs": True,
            "centre_over_border": float("nan"),
        },
        "contradiction": "<b>anything</b>",
    }
    [note] = polarity_notes([forged, "not a step", None, {"step": "inversion", "polarity_check": "nope"}])
    assert note.kind == SUSPECTED_NEGATIVE
    assert note.text.startswith(
        "the picture the model read looks like a negative (the header says another Photometric Interpretation with "
        "Presentation LUT Shape INVERSE)"
    )
    assert note.figures == "a score below -0.05 reads as a negative, above +0.05 as a film"
    assert reading_flags({"images": [{"role": "frontal", "preparation": {"step": "inversion"}}]}, None) == [
        "view-unknown"
    ]
    assert reading_flags({"images": [{"role": "frontal", "view": "PA", "preparation": [forged]}]}, None) == [
        SUSPECTED_NEGATIVE
    ]
