"""The optional GSPS: the model's boxes drawn on their own source images, labelled as an AI draft."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pydicom
import pytest
from pydicom.uid import GrayscaleSoftcopyPresentationStateStorage

from radtrace.config import ReportingSettings
from radtrace.model.reading import FindingStatus
from radtrace.reporting.gsps import GSPS_SERIES_DESCRIPTION, build_gsps
from radtrace.reporting.sr import build_sr, sr_bytes
from reporting_support import sr_cases

pytestmark = pytest.mark.unit

WHEN = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


def test_each_box_is_a_closed_polyline_on_its_image_with_an_ai_draft_label() -> None:
    reading, sources = sr_cases()["boxes"]
    gsps = build_gsps(reading, sources, settings=ReportingSettings(), revision=1, content_datetime=WHEN)
    assert gsps is not None
    ds = pydicom.dcmread(io.BytesIO(sr_bytes(gsps)))
    assert ds.SOPClassUID == GrayscaleSoftcopyPresentationStateStorage
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.SeriesDescription == GSPS_SERIES_DESCRIPTION
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    drawn: dict[str, list[list[float]]] = {}
    for annotation in ds.GraphicAnnotationSequence:
        [image] = annotation.ReferencedImageSequence
        assert annotation.GraphicLayer == "AI_DRAFT"
        for graphic in annotation.GraphicObjectSequence:
            assert (graphic.GraphicType, graphic.GraphicAnnotationUnits) == ("POLYLINE", "PIXEL")
            assert graphic.GraphicData[:2] == graphic.GraphicData[-2:]  # closed
            drawn.setdefault(image.ReferencedSOPInstanceUID, []).append([float(v) for v in graphic.GraphicData[:8]])
        assert {t.UnformattedTextValue for t in annotation.TextObjectSequence} == {"Lung Lesion (AI draft)"}
    expected: dict[str, list[list[float]]] = {}
    for box in reading.findings[0].boxes:
        corners = [box.x_min, box.y_min, box.x_max, box.y_min, box.x_max, box.y_max, box.x_min, box.y_max]
        expected.setdefault(box.sop_instance_uid, []).append(corners)
    assert drawn == expected


def test_no_boxes_or_only_absent_findings_give_no_gsps() -> None:
    reading, sources = sr_cases()["normal"]
    assert build_gsps(reading, sources, settings=ReportingSettings(), revision=1) is None
    boxed, _ = sr_cases()["boxes"]
    absent = boxed.model_copy(
        update={"findings": tuple(f.model_copy(update={"status": FindingStatus.ABSENT}) for f in boxed.findings)}
    )
    assert build_gsps(absent, sources, settings=ReportingSettings(), revision=1) is None


def test_gsps_uids_are_fixed_by_study_revision_and_model_and_differ_from_the_sr() -> None:
    reading, sources = sr_cases()["boxes"]
    first = build_gsps(reading, sources, settings=ReportingSettings(), revision=1, content_datetime=WHEN)
    again = build_gsps(reading, sources, settings=ReportingSettings(), revision=1, content_datetime=WHEN)
    assert first is not None
    assert again is not None
    assert sr_bytes(first) == sr_bytes(again)
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    assert first.SOPInstanceUID != sr.SOPInstanceUID
    assert first.SeriesInstanceUID != sr.SeriesInstanceUID
