"""The console's pure rules: which reasoning sentences are a finding's evidence, which flags a reading raises,
how an age and a waiting time are shown, and which roles decide."""

from __future__ import annotations

import pytest

from radtrace.console.accounts import ConsoleRole
from radtrace.console.review import Decision
from radtrace.console.web import _waiting
from radtrace.console.worklist import reading_flags
from radtrace.console.worklist_header import patient_age as _age
from radtrace.model.evidence import evidence_sentences
from radtrace.store.base import utc_now

pytestmark = pytest.mark.unit

REASONING = [
    ("heart", "Heart: The cardiac silhouette is enlarged. No pericardial effusion."),
    ("pleura", "Pleura: Small left pleural effusion! Costophrenic angles otherwise sharp."),
    ("lungs", "Lungs: Clear."),
]


def test_evidence_is_the_parsers_sentence_then_every_sentence_naming_the_label_or_a_synonym() -> None:
    assert evidence_sentences("Cardiomegaly", REASONING, None) == ("Heart: The cardiac silhouette is enlarged.",)
    assert evidence_sentences("Pleural Effusion", REASONING, "Blunted left angle.") == (
        "Blunted left angle.",
        "No pericardial effusion.",
        "Pleura: Small left pleural effusion!",
    )
    assert evidence_sentences("Fracture", REASONING, None) == ()


def _reading(**changes: object) -> dict[str, object]:
    reading: dict[str, object] = {
        "flags": [],
        "images": [{"role": "frontal", "view": "PA", "view_flags": [], "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1.1"}],
        "reasoning": [{"section": "lungs", "text": "Clear."}],
        "impression": "Normal.",
        "findings": [{"label": "No Finding", "status": "present"}],
    }
    reading.update(changes)
    return reading


def test_flags_name_what_a_radiologist_must_know_before_trusting_the_draft() -> None:
    assert reading_flags(_reading(), None) == []
    assert reading_flags(_reading(flags=["truncated", "refused"]), None) == ["refused", "truncated"]
    frontal_ap = [{"role": "frontal", "view": "AP", "view_flags": ["ap", "portable"]}]
    assert reading_flags(_reading(images=frontal_ap), None) == ["ap-portable"]
    assert reading_flags(_reading(images=[{"role": "frontal", "view": None}]), None) == ["view-unknown"]
    assert reading_flags(_reading(), "1.2.840.10008.5.1.4.1.1.7") == ["secondary-capture"]
    assert reading_flags(_reading(impression="bad \x00 byte"), None) == ["text-sanitised"]


def test_age_comes_from_the_header_or_from_birth_and_study_dates() -> None:
    assert _age({"PatientAge": "045Y"}) == "045Y"
    assert _age({"PatientBirthDate": "19800615", "StudyDate": "20260614"}) == "045Y"
    assert _age({"PatientBirthDate": "19800615", "StudyDate": "20260615"}) == "046Y"
    assert _age({"PatientBirthDate": "garbage", "StudyDate": "20260615"}) is None


def test_waiting_time_reads_like_a_worklist() -> None:
    assert [_waiting(s) for s in (59, 600, 3 * 3600 + 5 * 60, 5 * 86400)] == ["0 min", "10 min", "3 h 05", "5 d"]


def test_only_radiologists_decide_and_decisions_read_as_sentences() -> None:
    assert [role.may_decide for role in ConsoleRole] == [True, False, False]
    now = utc_now()
    assert Decision(1, "dr", now, "accept").wording == "accepted"
    assert Decision(2, "dr", now, "modify", status="absent").wording == "changed to absent"
