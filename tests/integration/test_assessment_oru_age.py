"""The assessment ORU (the radiologist's decisions on a draft, sent to the RIS) carries the patient's age at the study
as the draft ORU does: the same NM OBX (LOINC 30525-0 "Age", or 29553-5 "Age calculated" where radtrace derived it from
the birth and study dates), by the same rule (radtrace.reporting.draft_age).

Before, the draft ORU had the age OBX (a1bb873) and the assessment ORU none: the RIS got the age with the AI draft and
not with the decision about it. The assessment ORU is built from the AI SR as stored, which wrote the age as its
Patient's Age: read back, a derived age looked reported, so the SR's header notes decide "calculated".
"""

from __future__ import annotations

import copy
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom import dcmread
from pydicom.dataset import Dataset

from drafts_readback_support import read_back
from radtrace.config import ReportingSettings
from radtrace.console.assessment import FindingAssessment, build_assessment_oru
from radtrace.dicom_age import DERIVED
from radtrace.model.study import study_image
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.hl7 import unescape
from reporting_support import REAL_FILMS, reading, shown, source_study

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
NIH = "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
NEMA = "nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm"
FILMS = sorted(path.name for path in REAL_FILMS.glob("*.dcm"))


def _ages(hl7: str) -> list[list[str]]:
    """The message's age OBX segments (OBX-3 coded in LOINC), split on '|', without OBX-1 (its number)."""
    segments = [segment.split("|") for segment in hl7.split("\r") if segment.startswith("OBX|")]
    return [s[2:] for s in segments if s[3].split("^")[2:3] == ["LN"]]


def _draft_and_assessment(sources: list[Dataset], tmp_path: Path) -> tuple[str, str]:
    """The draft ORU of a reading of ``sources`` and the assessment ORU of its SR as the console reads it (the file
    stored), both checked by hl7apy STRICT (the draft's SR by dciodvfy too)."""
    read = reading(sources, images=tuple(image for ds in sources for image in shown([ds])))  # each one shown
    files = build_drafts(read, sources, settings=ReportingSettings(), revision=1, created_at=WHEN)
    back = read_back(files, tmp_path)
    assert back.sr_errors == []
    ai_sr = dcmread(io.BytesIO(files.sr))
    oru = build_assessment_oru(
        ai_sr,
        observer="dr.one",
        verdict="modify",
        reason=("RT-R2", "Finding reported that is not there"),
        comment="Effusion is not there.",
        findings=[FindingAssessment(label="Pleural Effusion", model_status="present", verdict="reject")],
        sop_instance_uid="1.2.826.0.1.3680043.8.498.1",
        settings=ReportingSettings(),
        when=WHEN,
    ).text
    parse_message(oru, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    return back.hl7, oru


def _film(name: str) -> Dataset:
    return study_image((REAL_FILMS / name).read_bytes(), assumed_character_set="ISO_IR 100").dataset


@pytest.mark.parametrize("name", FILMS)
def test_the_assessment_oru_gives_the_age_the_draft_oru_gave(name: str, tmp_path: Path) -> None:
    draft, assessment = _draft_and_assessment([_film(name)], tmp_path)
    assert _ages(assessment) == _ages(draft)


def test_the_nih_films_reported_age_is_in_the_assessment_oru(tmp_path: Path) -> None:
    film = _film(NIH)
    assert (film.PatientAge, film.get("PatientBirthDate")) == ("58", None)
    _, assessment = _draft_and_assessment([film], tmp_path)
    [age] = _ages(assessment)
    assert age[:5] == ["NM", "30525-0^Age^LN", "", "58", "a^years^UCUM"]
    assert age[9] == "P"  # the assessment's result status, never F
    first = next(segment for segment in assessment.split("\r") if segment.startswith("OBX|"))
    assert first.startswith("OBX|1|NM|30525-0^Age^LN|")  # first, as in the draft ORU


def test_an_age_the_draft_derived_is_calculated_in_the_assessment_oru_too(tmp_path: Path) -> None:
    film = _film(NEMA)
    assert ("PatientAge" in film, film.PatientBirthDate, film.StudyDate) == (False, "19400305", "20040826")
    _, assessment = _draft_and_assessment([film], tmp_path)
    [age] = _ages(assessment)
    assert age[:5] == ["NM", "29553-5^Age calculated^LN", "", "64", "a^years^UCUM"]


def test_another_shown_images_derived_age_does_not_make_the_first_images_age_calculated(tmp_path: Path) -> None:
    # The drafts copy the first shown image's header (its age, 058Y as sent); the second's age is derived from its
    # dates, and the SR's header notes say so in a line naming that image: it is not the age the drafts carry.
    first, second = (copy.deepcopy(ds) for ds in source_study())  # PA and lateral of one study
    first.PatientAge, first.PatientBirthDate = "058Y", ""
    second.PatientBirthDate = "19670412"
    if "PatientAge" in second:
        del second.PatientAge
    draft, assessment = _draft_and_assessment([first, second], tmp_path)
    notes = "".join(unescape(s.split("|")[5]) for s in draft.split("\r") if s.startswith("OBX|") and "|RT-HDR^" in s)
    [note] = [line for line in notes.splitlines() if line.startswith("shown image 2 ")]  # the second image's note
    assert note.endswith("(0010,1010) PatientAge: absent from the header; " + DERIVED)
    assert [age[:5] for age in _ages(draft)] == [["NM", "30525-0^Age^LN", "", "58", "a^years^UCUM"]]
    assert _ages(assessment) == _ages(draft)
