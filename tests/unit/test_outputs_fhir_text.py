"""The FHIR draft on hostile header values and model text: always built, identifiers exact or left out.

A FHIR ``string`` (R4 2.1.28.0.1, and fhir.resources' pattern ``[ \\r\\n\\t\\S]+``) may not be empty or only
whitespace; a header value of one ideographic space (U+3000, how some Japanese systems pad), a line separator or a
C1 NEL, or a model's evidence text of nothing but such whitespace, made the Bundle fail validation, and with it the
whole draft (``build_drafts`` raises). An identifier that FHIR cannot carry as it is (a control character in a
Patient ID) was carried altered (U+FFFD in place of the character): the SR leaves such an identifier empty and says
so, and the FHIR Bundle now does the same (the identifier is left out, the conclusion's flags say
``header-normalised``).
"""

from __future__ import annotations

import copy
import json
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from radtrace.config import ReportingSettings
from radtrace.model.reading import Finding, FindingStatus
from radtrace.reporting.fhir import build_fhir_bundle
from radtrace.reporting.sr import HEADER_NORMALISED
from reporting_support import SPECIAL_CHARACTERS, reading, source_study

pytestmark = pytest.mark.unit

WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
SOURCES = source_study()
WHITESPACE = ["\u3000", "\u2028", "\u2029", "\x85", "\xa0", "\u2000", "\u202f", "\t", "\x0b", "\x1c", " "]
header_text = st.lists(
    st.one_of(st.sampled_from(SPECIAL_CHARACTERS + WHITESPACE + ["山", "ID", "\U0001f600"]), st.characters()),
    min_size=1,
    max_size=40,
).map(lambda chars: "".join(chars).encode("utf-8", "replace").decode("utf-8"))


def _sources(**values: str) -> list[Dataset]:
    sources = [copy.deepcopy(ds) for ds in SOURCES]  # Dataset.copy() shares its elements
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in values.items():
            setattr(sources[0], keyword, value)
    return sources


#: The sentences of reporting_support's reasoning that name Atelectasis (the console's evidence besides the parser's).
ATELECTASIS_SENTENCES = (
    "Patchy opacity at the right base, consistent with atelectasis.",
    "Right basal atelectasis and small effusion; lines and tubes as described.",
)


def _bundle(sources: list[Dataset], evidence: str | None = None) -> dict[str, Any]:
    findings = None
    if evidence is not None:
        findings = [Finding(label="Atelectasis", status=FindingStatus.PRESENT, evidence=evidence)]
    read = reading(sources, findings=findings)
    text = build_fhir_bundle(read, sources[0], settings=ReportingSettings(), revision=1, created_at=WHEN)
    return dict(json.loads(text))


def _resource(bundle: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(entry["resource"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == kind)


@pytest.mark.parametrize("blank", ["\u3000", "\u2028", "\x85", "\u3000\u3000 "])
@pytest.mark.parametrize("keyword", ["PatientID", "IssuerOfPatientID", "AccessionNumber"])
def test_a_header_value_of_only_unicode_whitespace_does_not_fail_the_bundle(keyword: str, blank: str) -> None:
    bundle = _bundle(_sources(**{keyword: blank}))
    assert blank not in json.dumps(bundle, ensure_ascii=False)


@pytest.mark.parametrize("blank", ["\u3000", "\u2028"])
def test_model_evidence_of_only_unicode_whitespace_does_not_fail_the_bundle(blank: str) -> None:
    # the notes are the sentences the console shows (radtrace.model.evidence): a blank one is none of them
    notes = [note["text"] for note in _resource(_bundle(_sources(), evidence=blank), "Observation")["note"]]
    assert notes == list(ATELECTASIS_SENTENCES)  # the reasoning's, no blank


def test_model_evidence_of_a_c1_whitespace_control_is_carried_replaced_as_in_every_draft() -> None:
    # NEL (U+0085) is a C1 control: every draft's text rule (text.draft_text) replaces it by U+FFFD, visibly; alone,
    # it is whitespace, no sentence the console shows (radtrace.model.evidence), so no note
    notes = [note["text"] for note in _resource(_bundle(_sources(), evidence="\x85"), "Observation")["note"]]
    assert notes == list(ATELECTASIS_SENTENCES)
    notes = [
        note["text"] for note in _resource(_bundle(_sources(), evidence="Basal\x85opacity"), "Observation")["note"]
    ]
    assert notes[0] == "Basal\ufffdopacity"


def test_a_patient_id_fhir_cannot_carry_unchanged_is_left_out_and_flagged_not_altered() -> None:
    bundle = _bundle(_sources(PatientID="12\x003", AccessionNumber="AC\x0c1"))
    assert "identifier" not in _resource(bundle, "Patient")
    report = _resource(bundle, "DiagnosticReport")
    assert [identifier.get("value") for identifier in report["identifier"][1:]] == []
    assert HEADER_NORMALISED in report["conclusion"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patient_id=header_text, issuer=header_text, accession=header_text, name=header_text, evidence=header_text)
def test_any_header_and_evidence_text_gives_a_bundle_whose_identifiers_are_exact(
    patient_id: str, issuer: str, accession: str, name: str, evidence: str
) -> None:
    sources = _sources(PatientID=patient_id, IssuerOfPatientID=issuer, AccessionNumber=accession, PatientName=name)
    bundle = _bundle(sources, evidence=evidence)
    for identifier in _resource(bundle, "Patient").get("identifier", []):
        assert identifier["value"] in _values(patient_id)
        if "assigner" in identifier:
            assert identifier["assigner"]["display"] == _values(issuer)[0]
    accessions = [i["value"] for i in _resource(bundle, "DiagnosticReport")["identifier"][1:]]
    assert accessions in ([], _values(accession)[:1])


def _values(text: str) -> list[str]:
    """The values a DICOM reader finds in ``text``: split on the value delimiter, padding stripped, empty ones
    left out (as reporting.header reads them)."""
    return [value for value in (part.strip(" \x00") for part in text.split("\\")) if value]
