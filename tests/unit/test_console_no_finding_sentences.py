"""Which sentences of a reasoning support "No Finding": those saying the whole film is normal, and no other."""

from __future__ import annotations

import pytest

from radtrace.model.evidence import evidence_sentences

SUPPORTING = [
    "Summary: Normal chest radiograph without acute cardiopulmonary abnormality.",
    "No acute cardiopulmonary abnormality.",
    "Impression: No acute cardiopulmonary process.",
    "No active disease.",
    "No acute findings.",
    "No findings.",
    "No Finding.",
    "Normal PA chest radiograph.",
    "The chest radiograph is within normal limits.",
    "No radiographic abnormality is seen.",
    "No evidence of acute intrathoracic abnormality.",
]
NOT_SUPPORTING = [
    "Heart: Heart size is normal.",
    "Mediastinum: The mediastinal contours are normal.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Bones: The visualized osseous structures are intact without acute fracture.",
    "No acute abnormality of the ribs.",
    "No significant abnormality in the left lung.",
    "No finding to suggest pneumonia.",
    "No findings of pneumothorax.",
    "Otherwise normal chest radiograph.",
    "Normal chest radiograph except for a small left effusion.",
    "Normal chest radiograph, but cardiomegaly cannot be excluded.",
    "This is not a normal chest radiograph.",
    "Abnormal chest radiograph.",
    "The prior radiograph was normal.",
    "No new acute cardiopulmonary process.",
    "Possibly normal chest radiograph?",
    "Devices: No support devices, lines or tubes are seen.",
    "Pleura: There is no pleural effusion and no pneumothorax.",
]


@pytest.mark.parametrize("sentence", SUPPORTING)
def test_a_sentence_saying_the_film_is_normal_is_no_findings_evidence(sentence: str) -> None:
    reasoning = [("findings", "Lungs: The lungs are clear."), ("summary", sentence)]
    assert evidence_sentences("No Finding", reasoning, None, "present") == (sentence,)


@pytest.mark.parametrize("sentence", NOT_SUPPORTING)
def test_a_part_found_normal_an_exception_a_hedge_or_a_prior_is_not(sentence: str) -> None:
    assert evidence_sentences("No Finding", [("summary", sentence)], None, "present") == ()


def test_an_absent_no_finding_is_not_given_a_normal_films_sentence() -> None:
    reasoning = [("summary", SUPPORTING[0])]
    assert evidence_sentences("No Finding", reasoning, None, "absent") == ()
    assert evidence_sentences("No Finding", reasoning, None) == (SUPPORTING[0],)  # status unknown: as present
