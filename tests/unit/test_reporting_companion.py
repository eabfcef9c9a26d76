"""The companion Basic Text SR (what every viewer shows) and the reading order of the TID 1500 SR itself."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import BasicTextSRStorage

from radtrace.config import DicomDestination, DispatchSettings, ReportingSettings
from radtrace.model.reading import Finding, FindingStatus, ReasoningStep
from radtrace.reporting.companion import (
    COMPANION_SERIES_DESCRIPTION,
    COMPANION_SERIES_NUMBER,
    DRAFT_BANNER,
    build_companion,
    companion_uids,
)
from radtrace.reporting.dispatch.outbox import KIND_COMPANION, KIND_FILE, planned_deliveries
from radtrace.reporting.draft_store import keep_drafts, read_draft
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.reporting.text import REPLACEMENT
from reporting_support import NON_ASCII_IMPRESSION, reading, source_study, sr_cases

pytestmark = pytest.mark.unit

SETTINGS = ReportingSettings()
WHEN = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


def read_strict(data: bytes) -> Dataset:
    """Read a Part 10 file with pydicom raising on any invalid value (every value touched)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.RAISE)
        ds = pydicom.dcmread(io.BytesIO(data))
        for element in ds.iterall():
            _ = element.value
    return ds


def both(name: str, revision: int = 1) -> tuple[Dataset, Dataset]:
    """(TID 1500 SR, companion) of one reporting case, each read back strictly."""
    case, sources = sr_cases()[name]
    sr = build_sr(case, sources, settings=SETTINGS, revision=revision, content_datetime=WHEN)
    companion = build_companion(case, sr, settings=SETTINGS, revision=revision, content_datetime=WHEN)
    return read_strict(sr_bytes(sr)), read_strict(sr_bytes(companion))


def outline(ds: Dataset) -> list[tuple[str, str]]:
    """(concept meaning, text or '') of the root's CONTAINS items and of the items in its containers, in order."""
    rows: list[tuple[str, str]] = []
    for item in ds.ContentSequence:
        if item.RelationshipType != "CONTAINS":
            continue
        rows.append((item.ConceptNameCodeSequence[0].CodeMeaning, str(item.get("TextValue", ""))))
        if item.ValueType == "CONTAINER":
            rows += [
                (child.ConceptNameCodeSequence[0].CodeMeaning, str(child.get("TextValue", "")))
                for child in item.get("ContentSequence", [])
            ]
    return rows


def test_companion_is_an_unverified_basic_text_sr_in_the_same_study_referencing_the_draft() -> None:
    sr, companion = both("typical")
    assert companion.SOPClassUID == BasicTextSRStorage
    assert (companion.CompletionFlag, companion.VerificationFlag, companion.PreliminaryFlag) == (
        "COMPLETE",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    assert companion.Modality == "SR"
    assert companion.SpecificCharacterSet == "ISO_IR 192"
    assert companion.StudyInstanceUID == sr.StudyInstanceUID
    assert (companion.SeriesNumber, companion.SeriesDescription) == (
        COMPANION_SERIES_NUMBER,
        COMPANION_SERIES_DESCRIPTION,
    )
    assert companion.SeriesInstanceUID != sr.SeriesInstanceUID
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate"):
        assert companion.get(keyword) == sr.get(keyword), keyword
    # the content tree ends with a COMPOSITE item naming the TID 1500 SR, which the evidence lists as well
    [composite] = [item for item in companion.ContentSequence if item.ValueType == "COMPOSITE"]
    [referenced] = composite.ReferencedSOPSequence
    assert (referenced.ReferencedSOPClassUID, referenced.ReferencedSOPInstanceUID) == (
        sr.SOPClassUID,
        sr.SOPInstanceUID,
    )
    evidence = [
        (item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID)
        for study in companion.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]
    assert evidence == [(sr.SOPClassUID, sr.SOPInstanceUID)]


def test_companion_reads_like_a_report_notice_impression_findings_present_first_then_reasoning() -> None:
    case, _ = sr_cases()["typical"]
    _, companion = both("typical")
    assert companion.ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning == "Observer Type"  # the model
    rows = outline(companion)
    names = [name for name, _ in rows]
    assert rows[0][0] == "AI draft notice"
    assert rows[0][1].startswith(DRAFT_BANNER)
    assert "Not verified" in rows[0][1]
    assert names.index("Impressions") < names.index("Findings") < names.index("Model reasoning")
    assert ("Impression", case.impression) in rows
    findings = [text for name, text in rows if name == "Finding"]
    assert findings == [
        "Atelectasis: present (model confidence 0.82; 1 box in the structured report)",
        "Pleural Effusion: present (model confidence 0.61)",
        "Support Devices: present",
        "Cardiomegaly: uncertain (model confidence 0.30)",
        "Pneumothorax: absent",
    ]
    reasoning = [(name, text) for name, text in rows if name.startswith("Model reasoning: ")]
    assert reasoning == [(f"Model reasoning: {step.section}", step.text) for step in case.reasoning]
    assert names[-1] == "AI draft structured report (TID 1500)"
    assert companion.ContentSequence  # every container is SEPARATE: a renderer labels each item
    containers = [item for item in companion.ContentSequence if item.ValueType == "CONTAINER"]
    assert {item.ContinuityOfContent for item in containers} == {"SEPARATE"}
    assert companion.ContinuityOfContent == "SEPARATE"


def test_the_whole_long_trace_is_carried() -> None:
    case, _ = sr_cases()["long-trace"]
    _, companion = both("long-trace")
    sections = [text for name, text in outline(companion) if name.startswith("Model reasoning: ")]
    assert "\n\n".join(sections) == case.reasoning_text
    assert len("\n\n".join(sections)) >= 20_000


def test_refused_reading_shows_its_flags_and_the_models_own_words() -> None:
    _, companion = both("refused")
    rows = dict(outline(companion))
    assert rows["Model output flags"] == "refused"
    assert rows["Model raw output"] == "Please provide a frontal chest X-ray image."
    assert rows["Impression"].startswith("The model gave no impression")
    assert rows["Finding"].startswith("No finding was assessed")


def test_truncated_reading_is_flagged_and_non_ascii_text_survives() -> None:
    assert dict(outline(both("truncated")[1]))["Model output flags"] == "truncated"
    rows = dict(outline(both("non-ascii")[1]))
    assert rows["Impression"] == NON_ASCII_IMPRESSION
    assert rows["Model reasoning: pleura"] == "Erguss rechts, Zwerchfell glatt — 右側胸水."


def test_hostile_model_text_is_made_safe_by_the_dicom_text_function_and_flagged() -> None:
    sources = source_study()
    case = reading(
        sources,
        impression="Effusion\x00 \x1b[31m\x85 right\ud800.",
        reasoning=(ReasoningStep(section="lungs", text="Clear\x07 lungs\tbilaterally."),),
        findings=[Finding(label="Nodule\x0b\\x", status=FindingStatus.PRESENT)],
    )
    sr = build_sr(case, sources, settings=SETTINGS, revision=1, content_datetime=WHEN)
    companion = read_strict(sr_bytes(build_companion(case, sr, settings=SETTINGS, revision=1)))
    rows = outline(companion)
    text = dict(rows)
    assert text["Impression"] == f"Effusion{REPLACEMENT} {REPLACEMENT}[31m{REPLACEMENT} right{REPLACEMENT}."
    assert text["Model reasoning: lungs"] == f"Clear{REPLACEMENT} lungs bilaterally."
    assert "text-sanitised" in text["Model output flags"]
    [finding] = [value for name, value in rows if name == "Finding"]
    assert "\x0b" not in finding
    assert finding.endswith(": present")


def test_uids_are_derived_from_the_draft_so_a_rebuild_is_byte_identical() -> None:
    case, sources = sr_cases()["typical"]
    sr = build_sr(case, sources, settings=SETTINGS, revision=1, content_datetime=WHEN)
    first = sr_bytes(build_companion(case, sr, settings=SETTINGS, revision=1, content_datetime=WHEN))
    again = sr_bytes(build_companion(case, sr, settings=SETTINGS, revision=1, content_datetime=WHEN))
    assert first == again
    series, instance = companion_uids(sr)
    ds = read_strict(first)
    assert (ds.SeriesInstanceUID, ds.SOPInstanceUID) == (series, instance)
    assert instance not in {sr.SOPInstanceUID, sr.SeriesInstanceUID}
    sr2 = build_sr(case, sources, settings=SETTINGS, revision=2, content_datetime=WHEN)
    second_series, second_instance = companion_uids(sr2)
    assert second_series == series  # the same series family for the same study and model
    assert second_instance != instance


def test_drafts_carry_the_companion_by_default_and_plan_it_for_each_pacs_and_the_drop() -> None:
    case, sources = sr_cases()["typical"]
    drafts = build_drafts(case, sources, settings=SETTINGS, revision=1, created_at=WHEN)
    assert drafts == build_drafts(case, sources, settings=SETTINGS, revision=1, created_at=WHEN)  # idempotent
    assert drafts.companion is not None
    companion = read_strict(drafts.companion)
    [composite] = [item for item in companion.ContentSequence if item.ValueType == "COMPOSITE"]
    assert composite.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == drafts.sr_sop_instance_uid
    pacs = [DicomDestination(ae_title=f"PACS{n}", host="h", port=104 + n) for n in (1, 2)]
    planned = planned_deliveries(DispatchSettings(pacs=pacs, file_drop_dir=Path("/d")), drafts)
    companions = {(p.kind, p.destination) for p in planned if p.payload == drafts.companion}
    assert companions == {
        (KIND_COMPANION, "PACS1@h:105"),
        (KIND_COMPANION, "PACS2@h:106"),
        (KIND_FILE, f"/d/{drafts.sr_sop_instance_uid}.companion.dcm"),
    }
    off = build_drafts(case, sources, settings=ReportingSettings(companion_document=False), revision=1)
    assert off.companion is None
    assert all(p.kind != KIND_COMPANION for p in planned_deliveries(DispatchSettings(pacs=pacs), off))


def test_a_later_revision_lists_earlier_drafts_and_companions_each_in_its_own_document() -> None:
    case, sources = sr_cases()["typical"]
    first = build_drafts(case, sources, settings=SETTINGS, revision=1, created_at=WHEN)
    assert first.companion is not None
    earlier = [pydicom.dcmread(io.BytesIO(first.sr)), pydicom.dcmread(io.BytesIO(first.companion))]
    second = build_drafts(case, sources, settings=SETTINGS, revision=2, predecessors=earlier, created_at=WHEN)
    assert second.companion is not None

    def predecessors(data: bytes) -> list[str]:
        return [
            item.ReferencedSOPInstanceUID
            for study in pydicom.dcmread(io.BytesIO(data)).PredecessorDocumentsSequence
            for series in study.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        ]

    assert predecessors(second.sr) == [first.sr_sop_instance_uid]
    assert predecessors(second.companion) == [str(earlier[1].SOPInstanceUID)]


def test_kept_drafts_include_the_companion_and_read_back_with_the_impression(tmp_path: Path) -> None:
    case, sources = sr_cases()["typical"]
    drafts = build_drafts(case, sources, settings=SETTINGS, revision=1, created_at=WHEN)
    study_uid = str(sources[0].StudyInstanceUID)
    kept = {draft.kind: draft for draft in keep_drafts(tmp_path, study_uid, 1, drafts)}
    assert kept["companion"].path == f"{study_uid}/1/companion.dcm"
    view = read_draft(tmp_path, study_uid)
    assert view.impression == case.impression  # now at the SR's root, right after the notice
    assert any("Not verified" in notice for notice in view.notices)
    assert [f.presence for f in view.findings] == ["Present", "Present", "Present", "Indeterminate", "Absent"]
    assert set(view.files) >= {"sr", "companion"}


# --- the TID 1500 SR in a radiologist's order ----------------------------------------------------------


def test_draft_sr_opens_with_the_notice_and_impression_and_lists_present_findings_first() -> None:
    case, _ = sr_cases()["typical"]
    sr, _ = both("typical")
    contains = [item for item in sr.ContentSequence if item.RelationshipType == "CONTAINS"]
    meanings = [item.ConceptNameCodeSequence[0].CodeMeaning for item in contains]
    assert meanings == [
        "AI draft notice",
        "Impression",
        "Image Library",
        "Imaging Measurements",
        "Qualitative Evaluations",
    ]
    assert contains[1].TextValue == case.impression
    measurements = contains[3]
    presence = []
    for group in measurements.ContentSequence:
        [value] = [
            item.ConceptCodeSequence[0].CodeMeaning
            for item in group.ContentSequence
            if item.ConceptNameCodeSequence[0].CodeMeaning == "Presence of property"
        ]
        presence.append(value)
    assert presence == ["Present", "Present", "Present", "Indeterminate", "Absent"]
    evaluations = [item.ConceptNameCodeSequence[0].CodeMeaning for item in contains[4].ContentSequence]
    assert evaluations[: len(case.reasoning)] == [f"Model reasoning: {step.section}" for step in case.reasoning]
    assert sr.ContinuityOfContent == contains[4].ContinuityOfContent == "SEPARATE"
