"""The SR draft: what a PACS and a radiologist will see in it, read back through pydicom and highdicom."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage, ComprehensiveSRStorage

from radtrace.config import ReportingSettings
from radtrace.errors import ReportError
from radtrace.model.reading import BoundingBox, Finding, FindingStatus
from radtrace.reporting import codes
from radtrace.reporting.companion import build_companion
from radtrace.reporting.fhir import build_fhir_bundle
from radtrace.reporting.sr import SERIES_DESCRIPTION, build_sr, image_notes, reasoning_sha256, sr_bytes
from reporting_support import IDENTITY, NON_ASCII_IMPRESSION, reading, source_study, sr_cases

pytestmark = pytest.mark.unit

SETTINGS = ReportingSettings()
WHEN = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


def read_strict(data: bytes) -> Dataset:
    """Read a Part 10 file with pydicom raising on any invalid value."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.RAISE)
        ds = pydicom.dcmread(io.BytesIO(data))
        for element in ds.iterall():  # values are decoded lazily: touch every one under RAISE
            _ = element.value
    return ds


def texts(ds: Dataset) -> dict[str, str]:
    """TEXT items at the root (the notice, the impression) and in the Qualitative Evaluations container."""
    container = next(item for item in ds.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "C0034375")
    lead = [item for item in ds.ContentSequence if item.ValueType == "TEXT" and item.RelationshipType == "CONTAINS"]
    items = [*lead, *container.ContentSequence]
    return {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue for item in items}


def built(name: str, **kwargs: object) -> tuple[bytes, Dataset]:
    case, sources = sr_cases()[name]
    sr = build_sr(case, sources, settings=SETTINGS, revision=1, content_datetime=WHEN, **kwargs)  # type: ignore[arg-type]
    data = sr_bytes(sr)
    return data, read_strict(data)


def test_sr_is_an_unverified_preliminary_draft_in_the_source_study_in_utf8() -> None:
    sources = source_study()
    _, ds = built("typical")
    assert ds.SOPClassUID == Comprehensive3DSRStorage
    assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == ("COMPLETE", "UNVERIFIED", "PRELIMINARY")
    assert "VerifyingObserverSequence" not in ds
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert (ds.PatientName, ds.PatientID, ds.PatientBirthDate) == (
        sources[0].PatientName,
        sources[0].PatientID,
        sources[0].PatientBirthDate,
    )
    assert ds.AccessionNumber == sources[0].AccessionNumber
    assert ds.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources}
    assert ds.SeriesDescription == SERIES_DESCRIPTION
    assert "NOT VERIFIED" in ds.SeriesDescription
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert [item.ReferencedSOPInstanceUID for item in evidence] == [sources[0].SOPInstanceUID]


def test_comprehensive_sr_is_selectable_for_pacs_that_refuse_3d_sr() -> None:
    case, sources = sr_cases()["boxes"]
    sr = build_sr(case, sources, settings=ReportingSettings(sr_flavour="comprehensive"), revision=1)
    assert read_strict(sr_bytes(sr)).SOPClassUID == ComprehensiveSRStorage


def test_same_inputs_give_the_same_uids_and_revisions_and_models_differ() -> None:
    case, sources = sr_cases()["typical"]
    first = build_sr(case, sources, settings=SETTINGS, revision=1)
    again = build_sr(case, sources, settings=SETTINGS, revision=1)
    second = build_sr(case, sources, settings=SETTINGS, revision=2)
    other_model = case.model_copy(update={"identity": IDENTITY.model_copy(update={"revision": "def456"})})
    other = build_sr(other_model, sources, settings=SETTINGS, revision=1)
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    assert second.SOPInstanceUID != first.SOPInstanceUID
    assert second.SeriesInstanceUID == first.SeriesInstanceUID  # a model's drafts of a study share one series
    assert other.SOPInstanceUID != first.SOPInstanceUID
    assert other.SeriesInstanceUID != first.SeriesInstanceUID
    tracking = [g.ContentSequence[1].UID for g in _groups(read_strict(sr_bytes(first)))]  # Tracking Unique Identifier
    assert tracking == [g.ContentSequence[1].UID for g in _groups(read_strict(sr_bytes(again)))]


def test_revision_two_lists_revision_one_in_predecessor_documents() -> None:
    case, sources = sr_cases()["typical"]
    first = read_strict(sr_bytes(build_sr(case, sources, settings=SETTINGS, revision=1)))
    second = read_strict(sr_bytes(build_sr(case, sources, settings=SETTINGS, revision=2, predecessors=[first])))
    predecessor = second.PredecessorDocumentsSequence[0]
    assert predecessor.StudyInstanceUID == first.StudyInstanceUID
    series = predecessor.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert second.InstanceNumber == 2
    assert "PredecessorDocumentsSequence" not in first
    rerun = build_sr(case, sources, settings=SETTINGS, revision=1, predecessors=[first])
    assert "PredecessorDocumentsSequence" not in rerun  # never its own predecessor


def _groups(ds: Dataset) -> list[Dataset]:
    container = next(
        i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements"
    )
    return list(container.ContentSequence)


def test_every_finding_is_a_coded_group_with_presence_confidence_and_algorithm() -> None:
    data, _ = built("typical")
    report = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(data))).content
    planar = report.get_planar_roi_measurement_groups()
    image = report.get_image_measurement_groups()
    assert (len(planar), len(image)) == (1, 4)
    by_finding = {g.finding_type.value: g for g in [*planar, *image]}
    assert set(by_finding) == {"46621007", "60046008", "36118008", "8186001", "RT-F-DEV"}
    effusion = by_finding["60046008"]
    presence = effusion.get_qualitative_evaluations(name=hd.sr.CodedConcept("121052", "DCM", "Presence of property"))
    assert presence[0].value.value == codes.PRESENT.value
    [confidence] = effusion.get_measurements(name=hd.sr.CodedConcept("RT-CONF", "99RADTRACE", "Model confidence"))
    assert confidence.value == pytest.approx(0.61)
    assert by_finding["36118008"].get_measurements() == []  # confidence unknown: no made-up number
    absent = by_finding["36118008"].get_qualitative_evaluations()
    assert absent[0].value.value == codes.ABSENT.value
    uncertain = by_finding["8186001"].get_qualitative_evaluations()
    assert uncertain[0].value.value == codes.INDETERMINATE.value
    algorithm = {
        i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue
        for i in effusion[0].ContentSequence
        if i.ValueType == "TEXT"
    }
    assert algorithm["Algorithm Name"] == IDENTITY.model_name
    assert algorithm["Algorithm Version"] == IDENTITY.revision
    devices = [e.value.value for e in by_finding["RT-F-DEV"].get_qualitative_evaluations()][1:]
    assert devices == ["26412008", "52124006"]  # endotracheal tube, central venous catheter (the PICC)


def test_model_is_the_device_observer_with_a_stable_uid() -> None:
    _, ds = built("typical")
    context = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in ds.ContentSequence}
    assert context["Observer Type"].ConceptCodeSequence[0].CodeValue == "121007"
    assert context["Device Observer Name"].TextValue == IDENTITY.model_name
    _, again = built("typical")
    uid = context["Device Observer UID"].UID
    assert (
        uid == {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in again.ContentSequence}["Device Observer UID"].UID
    )


def test_boxes_are_closed_polylines_in_source_pixels_on_their_own_image() -> None:
    case, sources = sr_cases()["boxes"]
    sr = build_sr(case, sources, settings=SETTINGS, revision=1)
    report = hd.sr.Comprehensive3DSR.from_dataset(read_strict(sr_bytes(sr))).content
    groups = report.get_planar_roi_measurement_groups()
    boxes = case.findings[0].boxes
    assert len(groups) == len(boxes)
    for group, box in zip(groups, boxes, strict=True):
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        points = region.value.tolist()
        assert points[0] == points[-1]
        assert points[:4] == [
            [box.x_min, box.y_min],
            [box.x_max, box.y_min],
            [box.x_max, box.y_max],
            [box.x_min, box.y_max],
        ]
        assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == box.sop_instance_uid
        assert group.tracking_identifier.startswith("Lung Lesion #")


def test_reasoning_impression_and_trace_hash_are_text_items() -> None:
    case, _ = sr_cases()["long-trace"]
    assert len(case.reasoning_text) >= 20_000
    _, ds = built("long-trace")
    items = texts(ds)
    sections = [items[f"Model reasoning: {step.section}"] for step in case.reasoning]
    assert sections == [step.text for step in case.reasoning]
    assert "\n\n".join(sections) == case.reasoning_text
    trace_hash = items["SHA-256 of the model's reasoning trace (UTF-8)"]
    assert trace_hash == hashlib.sha256("\n\n".join(sections).encode()).hexdigest() == reasoning_sha256(case)
    assert items["SHA-256 of the model's raw output (UTF-8)"] == hashlib.sha256(case.raw_text.encode()).hexdigest()
    assert items["Impression"] == case.impression
    assert "Not verified" in items["AI draft notice"]


def test_non_ascii_text_survives_even_from_a_latin1_source() -> None:
    _, ds = built("non-ascii")
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    items = texts(ds)
    assert items["Impression"] == NON_ASCII_IMPRESSION
    assert items["Model reasoning: pleura"] == "Erguss rechts, Zwerchfell glatt — 右側胸水."


def test_refused_reading_says_nothing_was_assessed_and_keeps_the_models_words() -> None:
    data, ds = built("refused")
    items = texts(ds)
    assert items["Model output flags"] == "refused"
    assert items["Model raw output"] == "Please provide a frontal chest X-ray image."
    assert "Impression" not in items
    report = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(data))).content
    [group] = report.get_image_measurement_groups()
    assert group.finding_type.value == codes.NOT_ASSESSED.value


def test_an_ap_portable_film_is_said_so_next_to_the_flags_in_every_output() -> None:
    """A heart on an AP bedside film looks larger: the reader of any output must know how the film was taken."""
    expected = (
        "image (AP): AP projection: the heart and mediastinum look larger than on a PA film; portable (bedside) film"
    )
    reading, sources = sr_cases()["ap-portable"]
    assert image_notes(reading) == expected
    _, ds = built("ap-portable")
    assert texts(ds)["How the images read were taken"] == expected
    assert "How the images read were taken" not in texts(built("typical")[1])
    bundle = json.loads(build_fhir_bundle(reading, sources[0], settings=SETTINGS, revision=1, created_at=WHEN))
    [report] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert report["conclusion"].endswith(expected)
    companion = build_companion(reading, ds, settings=SETTINGS, revision=1, content_datetime=WHEN)
    shown = [item.TextValue for item in companion.ContentSequence if item.ValueType == "TEXT"]
    assert expected in shown


def test_truncated_reading_is_flagged() -> None:
    _, ds = built("truncated")
    assert texts(ds)["Model output flags"] == "truncated"


def test_unknown_labels_get_local_codes_and_every_chexpert_label_is_coded() -> None:
    data, _ = built("many-findings")
    report = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(data))).content
    found = {(g.finding_type.scheme_designator, g.finding_type.value) for g in report.get_image_measurement_groups()}
    expected = {(entry.code.scheme, entry.code.value) for entry in codes.FINDING_CODES.values()}
    assert expected < found
    assert ("99RADTRACE", "RT-X-PNEUMOPERIT") in found
    assert all(len(value) <= 16 for _, value in found)


def test_a_box_on_an_image_not_among_the_sources_is_refused() -> None:
    sources = source_study()
    stray = BoundingBox(sop_instance_uid="1.2.3.4", x_min=0, y_min=0, x_max=1, y_max=1)
    case = reading(sources, findings=[Finding(label="Fracture", status=FindingStatus.PRESENT, boxes=(stray,))])
    with pytest.raises(ReportError, match="not among the source datasets"):
        build_sr(case, sources, settings=SETTINGS, revision=1)


def test_drafts_name_the_same_sr_and_rebuild_identically() -> None:
    from radtrace.reporting.drafts import build_drafts
    from radtrace.reporting.hl7 import control_id_for

    case, sources = sr_cases()["typical"]
    drafts = build_drafts(case, sources, settings=SETTINGS, revision=1, created_at=WHEN)
    again = build_drafts(case, sources, settings=SETTINGS, revision=1, created_at=WHEN)
    assert drafts == again
    assert read_strict(drafts.sr).SOPInstanceUID == drafts.sr_sop_instance_uid
    assert drafts.hl7 is not None
    assert drafts.fhir is not None
    assert drafts.sr_sop_instance_uid.encode() in drafts.hl7
    assert control_id_for(drafts.sr_sop_instance_uid).encode() in drafts.hl7
    assert f"urn:oid:{drafts.sr_sop_instance_uid}".encode() in drafts.fhir


def test_gsps_is_drafted_and_planned_only_when_enabled() -> None:
    from radtrace.config import DicomDestination, DispatchSettings
    from radtrace.reporting.dispatch.outbox import KIND_GSPS, planned_deliveries
    from radtrace.reporting.drafts import build_drafts

    case, sources = sr_cases()["typical"]
    assert build_drafts(case, sources, settings=SETTINGS, revision=1).gsps is None
    drafts = build_drafts(case, sources, settings=ReportingSettings(gsps=True), revision=1)
    assert drafts.gsps is not None
    dispatch = DispatchSettings(pacs=[DicomDestination(ae_title="PACS", host="h", port=104)], file_drop_dir=Path("/d"))
    planned = {(p.kind, p.destination) for p in planned_deliveries(dispatch, drafts)}
    assert (KIND_GSPS, "PACS@h:104") in planned
    assert ("file", f"/d/{drafts.sr_sop_instance_uid}.gsps.dcm") in planned
