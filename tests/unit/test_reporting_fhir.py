"""The FHIR draft: a Bundle that fhir.resources validates, preliminary, one Observation per finding (and one of the
patient's age at the study, listed here as "Observation (age)")."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from radtrace.config import ReportingSettings
from radtrace.errors import ReportError
from radtrace.reporting import codes
from radtrace.reporting.fhir import build_fhir_bundle
from radtrace.reporting.sr import build_sr, reasoning_sha256
from reporting_support import IDENTITY, STUDY, sr_cases

pytestmark = pytest.mark.unit

WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)


def _bundle(name: str, settings: ReportingSettings | None = None) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
    reading, sources = sr_cases()[name]
    text = build_fhir_bundle(reading, sources[0], settings=settings or ReportingSettings(), revision=1, created_at=WHEN)
    Bundle.model_validate_json(text)  # validates again, from the JSON a receiver gets
    data = json.loads(text)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for entry in data["entry"]:
        resource = entry["resource"]
        kind = resource["resourceType"]
        if kind == "Observation" and resource["code"]["coding"][0]["system"] == "http://loinc.org":
            kind = "Observation (age)"  # radtrace.reporting.draft_age: no finding
        by_type.setdefault(kind, []).append(resource)
    return data, by_type


@pytest.mark.parametrize("name", sorted(sr_cases()))
def test_every_reading_gives_a_valid_bundle(name: str) -> None:
    reading, _ = sr_cases()[name]
    data, resources = _bundle(name)
    [report] = resources["DiagnosticReport"]
    assert report["status"] == "preliminary"
    assert len(resources.get("Observation", [])) == len(reading.findings)
    assert {r["status"] for r in resources.get("Observation", [])} <= {"preliminary"}
    [age] = resources["Observation (age)"]  # the factory's header: Patient's Age 057Y beside its birth date
    assert (age["status"], age["code"]["coding"][0]["code"]) == ("preliminary", "30525-0")
    assert age["valueQuantity"] == {"value": 57, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}
    age_url = next(e["fullUrl"] for e in data["entry"] if e["resource"] == age)
    assert age_url not in {result["reference"] for result in report.get("result", [])}  # no result of the model's
    assert len(resources["Device"]) == 1
    assert report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{STUDY.study_instance_uid}"


def test_report_identifies_the_sr_and_carries_impression_and_trace() -> None:
    reading, sources = sr_cases()["typical"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    _, resources = _bundle("typical")
    [report] = resources["DiagnosticReport"]
    assert report["identifier"][0]["value"] == f"urn:oid:{sr.SOPInstanceUID}"
    assert report["identifier"][1]["value"] == STUDY.accession
    assert reading.impression is not None
    assert reading.impression in report["conclusion"]
    assert "Not verified" in report["conclusion"]
    [form] = report["presentedForm"]
    assert base64.b64decode(form["data"]).decode("utf-8") == reading.reasoning_text
    assert reasoning_sha256(reading) in form["title"]


def test_observations_code_finding_presence_confidence_and_device() -> None:
    data, resources = _bundle("typical")
    by_code = {o["code"]["coding"][0]["code"]: o for o in resources["Observation"]}
    effusion = by_code["60046008"]
    assert effusion["code"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert effusion["valueCodeableConcept"]["coding"][0]["code"] == codes.PRESENT.value
    assert effusion["component"][0]["valueQuantity"]["value"] == pytest.approx(0.61)
    assert by_code["36118008"]["valueCodeableConcept"]["coding"][0]["code"] == codes.ABSENT.value
    assert "component" not in by_code["36118008"]
    atelectasis = by_code["46621007"]
    assert [c["code"] for c in atelectasis["code"]["coding"]] == ["46621007", "RID28493"]
    [device] = resources["Device"]
    assert device["deviceName"][0]["name"] == IDENTITY.model_name
    device_url = next(e["fullUrl"] for e in data["entry"] if e["resource"] == device)
    assert {o["device"]["reference"] for o in resources["Observation"]} == {device_url}


def test_status_comes_from_settings_and_final_is_refused() -> None:
    _, resources = _bundle("typical", ReportingSettings(fhir_status="registered"))
    assert resources["DiagnosticReport"][0]["status"] == "registered"
    with pytest.raises(ValueError, match="final"):
        ReportingSettings(fhir_status="final")  # type: ignore[arg-type]
    reading, sources = sr_cases()["typical"]
    forced = ReportingSettings.model_construct(fhir_status="final")
    with pytest.raises(ReportError, match="not allowed"):
        build_fhir_bundle(reading, sources[0], settings=forced, revision=1)


def test_same_inputs_give_the_same_bundle() -> None:
    first, _ = _bundle("typical")
    again, _ = _bundle("typical")
    assert first == again
